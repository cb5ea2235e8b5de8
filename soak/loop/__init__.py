"""The soak loop: config, engine session, recovery ladder, workload, output
checks, outcome -> fault records, console.  Reads the engine, writes events."""
