"""Where the worker runs: this host, or a phone over adb (soak.targets.adb)."""
