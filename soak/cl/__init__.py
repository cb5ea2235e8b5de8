"""OpenCL side of soak: the interposer's setup, its trace reader, device info.

- `options`    --intercept and the --cl-* options of `soak run`
- `fault_rules`     the fault-rule grammar (checked here, applied by the interposer)
- `interposer` `prepare(options, run_dir)` -> environment for the worker
- `trace`      reader of the interposer's record and stats files
- `devinfo`    platforms and devices through ctypes (`describe_opencl`)
"""
