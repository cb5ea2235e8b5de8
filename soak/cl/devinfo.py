"""OpenCL platforms and devices through ctypes: what an engine would see.

    describe_opencl(lib_path=None) -> {"library": ..., "platforms": [{..., "devices": [...]}]}

lib_path None tries libOpenCL.so.1, then libOpenCL.so, then what
ctypes.util.find_library("OpenCL") names.  Raises OpenCLSetupError (exit 11)
when no library loads or it has no platform.

`python -m soak.cl.devinfo [--lib PATH]` prints the same as JSON; soak cl-info
runs it in a child process so the child sees the worker's LD_LIBRARY_PATH and
interposer settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys

from soak.errors import OpenCLSetupError, SoakError

CL_PLATFORM_PROFILE, CL_PLATFORM_VERSION, CL_PLATFORM_NAME, CL_PLATFORM_VENDOR, CL_PLATFORM_EXTENSIONS = (
    0x0900, 0x0901, 0x0902, 0x0903, 0x0904)
CL_DEVICE_TYPE_ALL = 0xFFFFFFFF
CL_DEVICE_TYPE_GPU = 1 << 2
DEVICE_TYPES = {1 << 0: "DEFAULT", 1 << 1: "CPU", 1 << 2: "GPU", 1 << 3: "ACCELERATOR", 1 << 4: "CUSTOM"}

# name -> (param, kind)   kind: str | u32 | u64 | size | bool | sizes
_DEVICE_PARAMS = {
    "name": (0x102B, "str"), "vendor": (0x102C, "str"), "version": (0x102F, "str"),
    "driver_version": (0x102D, "str"), "opencl_c_version": (0x103D, "str"), "profile": (0x102E, "str"),
    "type_bits": (0x1000, "u64"), "max_compute_units": (0x1002, "u32"), "max_clock_mhz": (0x100C, "u32"),
    "max_work_group_size": (0x1004, "size"), "global_mem_size": (0x101F, "u64"),
    "max_mem_alloc_size": (0x1010, "u64"), "local_mem_size": (0x1023, "u64"),
    "image_support": (0x1016, "bool"), "image2d_max_width": (0x1011, "size"),
    "image2d_max_height": (0x1012, "size"), "image3d_max_width": (0x1013, "size"),
    "image3d_max_height": (0x1014, "size"), "image3d_max_depth": (0x1015, "size"),
    "image_max_buffer_size": (0x1040, "size"), "available": (0x1027, "bool"),
    "half_fp_config": (0x1033, "u64"), "extensions": (0x1030, "str"),
}
CL_SUCCESS, CL_PLATFORM_NOT_FOUND_KHR, CL_DEVICE_NOT_FOUND = 0, -1001, -1

_FIX_LIB = ("install an OpenCL loader and a driver (Debian/Ubuntu: apt-get install ocl-icd-libopencl1 "
            "pocl-opencl-icd), or pass the library path (--cl-real-lib PATH)")
_FIX_PLATFORM = ("the loader found no driver: install one (PoCL for CPUs: apt-get install pocl-opencl-icd; "
                 "GPU vendors ship theirs) and check /etc/OpenCL/vendors/*.icd")


def _candidates(lib_path: str | None) -> list[str]:
    if lib_path:
        return [str(lib_path)]
    names = ["libOpenCL.so.1", "libOpenCL.so"]
    found = ctypes.util.find_library("OpenCL")
    if found and found not in names:
        names.append(found)
    return names


def load_library(lib_path: str | None = None) -> tuple[ctypes.CDLL, str]:
    errors = []
    for name in _candidates(lib_path):
        try:
            return ctypes.CDLL(name, mode=ctypes.RTLD_LOCAL), name
        except OSError as exc:
            errors.append(str(exc))
    where = lib_path or "libOpenCL.so.1 / libOpenCL.so"
    raise OpenCLSetupError(f"cannot load the OpenCL library {where}: {errors[-1] if errors else 'not found'}",
                           _FIX_LIB)


def _fn(lib: ctypes.CDLL, name: str, argtypes: list) -> ctypes._CFuncPtr:
    try:
        f = getattr(lib, name)
    except AttributeError:
        raise OpenCLSetupError(f"{lib._name} is not an OpenCL library: it has no {name}", _FIX_LIB) from None
    f.restype = ctypes.c_int32
    f.argtypes = argtypes
    return f


class _Api:
    def __init__(self, lib: ctypes.CDLL):
        vp, u32, sz = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t
        self.platform_ids = _fn(lib, "clGetPlatformIDs", [u32, ctypes.POINTER(vp), ctypes.POINTER(u32)])
        self.platform_info = _fn(lib, "clGetPlatformInfo", [vp, u32, sz, vp, ctypes.POINTER(sz)])
        self.device_ids = _fn(lib, "clGetDeviceIDs", [vp, ctypes.c_uint64, u32, ctypes.POINTER(vp),
                                                      ctypes.POINTER(u32)])
        self.device_info = _fn(lib, "clGetDeviceInfo", [vp, u32, sz, vp, ctypes.POINTER(sz)])

    def _info(self, fn, obj, param: int) -> bytes | None:
        size = ctypes.c_size_t(0)
        if fn(obj, param, 0, None, ctypes.byref(size)) != CL_SUCCESS or size.value == 0:
            return None
        buf = ctypes.create_string_buffer(size.value)
        if fn(obj, param, size.value, buf, None) != CL_SUCCESS:
            return None
        return buf.raw[: size.value]

    def platform_str(self, p, param: int) -> str | None:
        raw = self._info(self.platform_info, p, param)
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace") if raw is not None else None

    def device_value(self, d, param: int, kind: str):
        raw = self._info(self.device_info, d, param)
        if raw is None:
            return None
        if kind == "str":
            return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        n = int.from_bytes(raw[: {"u32": 4, "bool": 4}.get(kind, 8)], sys.byteorder)
        return bool(n) if kind == "bool" else n

    def devices(self, p, dtype: int) -> tuple[int, list]:
        n = ctypes.c_uint32(0)
        rc = self.device_ids(p, dtype, 0, None, ctypes.byref(n))
        if rc != CL_SUCCESS or n.value == 0:
            return rc, []
        arr = (ctypes.c_void_p * n.value)()
        rc = self.device_ids(p, dtype, n.value, arr, None)
        return rc, list(arr) if rc == CL_SUCCESS else []


def _type_names(bits: int | None) -> list[str]:
    if bits is None:
        return []
    return [name for bit, name in DEVICE_TYPES.items() if bits & bit]


def describe_device(api: _Api, d) -> dict:
    out = {key: api.device_value(d, param, kind) for key, (param, kind) in _DEVICE_PARAMS.items()}
    out["type"] = _type_names(out["type_bits"])
    exts = (out.pop("extensions") or "").split()
    out["extensions"] = exts
    # the rule MNN uses (OpenCLRuntime.cpp): half config present and cl_khr_fp16 advertised
    out["fp16"] = bool(out.get("half_fp_config")) and "cl_khr_fp16" in exts
    return out


def describe_opencl(lib_path: str | None = None) -> dict:
    """Platforms and devices of an OpenCL library (the loader, a driver, or soak's interposer)."""
    lib, name = load_library(lib_path)
    api = _Api(lib)
    n = ctypes.c_uint32(0)
    rc = api.platform_ids(0, None, ctypes.byref(n))
    if rc == CL_PLATFORM_NOT_FOUND_KHR or (rc == CL_SUCCESS and n.value == 0):
        raise OpenCLSetupError(f"{name}: no OpenCL platform (clGetPlatformIDs returned {rc})", _FIX_PLATFORM)
    if rc != CL_SUCCESS:
        raise OpenCLSetupError(f"{name}: clGetPlatformIDs failed with {rc}", _FIX_PLATFORM)
    ids = (ctypes.c_void_p * n.value)()
    rc = api.platform_ids(n.value, ids, None)
    if rc != CL_SUCCESS:
        raise OpenCLSetupError(f"{name}: clGetPlatformIDs failed with {rc}", _FIX_PLATFORM)
    platforms = []
    for p in ids:
        _, devs = api.devices(p, CL_DEVICE_TYPE_ALL)
        gpu_rc, gpus = api.devices(p, CL_DEVICE_TYPE_GPU)
        platforms.append({
            "name": api.platform_str(p, CL_PLATFORM_NAME),
            "vendor": api.platform_str(p, CL_PLATFORM_VENDOR),
            "version": api.platform_str(p, CL_PLATFORM_VERSION),
            "profile": api.platform_str(p, CL_PLATFORM_PROFILE),
            "extensions": (api.platform_str(p, CL_PLATFORM_EXTENSIONS) or "").split(),
            # what MNN asks for: clGetDeviceIDs(CL_DEVICE_TYPE_GPU)
            "gpu_query": {"rc": gpu_rc, "devices": len(gpus)},
            "devices": [describe_device(api, d) for d in devs],
        })
    interposed = False
    try:
        interposed = bool(getattr(lib, "soak_interposer_abi"))
    except AttributeError:
        pass
    return {"library": name, "interposer": interposed, "platforms": platforms}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m soak.cl.devinfo", description=__doc__.splitlines()[0])
    ap.add_argument("--lib", help="OpenCL library to load (default: as the system finds it)")
    a = ap.parse_args(argv)
    try:
        info = describe_opencl(a.lib)
    except SoakError as exc:
        print(json.dumps({"error": exc.message, "hint": exc.hint, "exit_code": int(exc.exit_code)}))
        return int(exc.exit_code)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
