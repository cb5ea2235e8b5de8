"""The worker process that hosts an engine, and the supervisor that drives it."""
