"""`--target adb[:SERIAL]`: the worker is soak-runner on an Android device.

Target strings (repeatable; `adb` alone means every connected device):

    adb                       all devices of the adb server
    adb:SERIAL                one device (USB serial, or host:port after `adb connect`)
    adb@HOST:PORT             a remote adb server (device farms); also $ADB_SERVER_SOCKET=tcp:HOST:PORT
    adb:SERIAL@HOST:PORT      one device of a remote server
    ...,runner=PATH           soak-runner built for the device (NDK, see docs/phone.md)
    ...,root=DIR              work folder on the device (default /data/local/tmp/soak)
    ...,wait=SECONDS          how long to wait for a device that went away (default 600)
    ...,libs=DIR[:DIR]        more shared libraries to push (libc++_shared.so, ...)

Besides the engine library and plugins, the lib*.so files in their folders
are pushed too (MNN: libMNN.so, libllm.so, libMNN_Express.so beside
libMNN_CL.so), except libOpenCL.so: the device's own driver must be used.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from soak import errors
from soak.targets.adb import health as healthlib
from soak.targets.adb import meminfo as memory, probe, push, thermal
from soak.targets.adb._conn import AdbLink, DeviceGone, quote, server_address
from soak.targets.adb._specs import STATE_HINTS, TargetSpec, list_devices, parse_spec  # noqa: F401 (re-exported)
from soak.targets.adb._remote import RemoteProcess
from soak.targets.adb.logcat import LogcatCapture
from soak.targets.base import Target

__all__ = ["AdbTarget", "make_targets", "parse_spec", "list_devices", "TargetSpec", "STATE_HINTS"]

DEFAULT_ROOT = "/data/local/tmp/soak"
DEFAULT_WAIT_S = 600.0
DUMPSYS_EVERY_S = 5.0
THERMAL_EVERY_S = 10.0
def make_targets(spec_strings: list[str]) -> list["AdbTarget"]:
    """AdbTargets for --target strings; DeviceUnavailable for an absent device."""
    targets: list[AdbTarget] = []
    seen: set[tuple] = set()
    for text in spec_strings:
        spec = parse_spec(text)
        devices = list_devices(spec.server)
        server = spec.server or server_address()
        if spec.serial is None:
            ready = [d["serial"] for d in devices if d["state"] == "device"]
            if not ready:
                listed = ", ".join(f"{d['serial']} ({d['state']})" for d in devices) or "none"
                raise errors.DeviceUnavailable(
                    f"no Android device is connected to the adb server at {server[0]}:{server[1]} (listed: {listed})",
                    "plug a phone in with USB debugging on (check `adb devices`), or `adb connect HOST:PORT`")
            serials = ready
        else:
            match = [d for d in devices if d["serial"] == spec.serial]
            if not match:
                listed = ", ".join(d["serial"] for d in devices) or "none"
                raise errors.DeviceUnavailable(
                    f"device {spec.serial} is not connected (adb server {server[0]}:{server[1]} lists: {listed})",
                    "plug it in and check `adb devices`; for a network device run `adb connect HOST:PORT`")
            if match[0]["state"] != "device":
                state = match[0]["state"]
                raise errors.DeviceUnavailable(f"device {spec.serial} is {state}",
                                               STATE_HINTS.get(state, "check `adb devices`"))
            serials = [spec.serial]
        for serial in serials:
            key = (server, serial)
            if key in seen:
                continue
            seen.add(key)
            targets.append(AdbTarget(serial, server, runner=spec.runner, root=spec.root, wait_s=spec.wait_s,
                                     libs=spec.libs))
    return targets


class AdbTarget(Target):
    """One device.  Pushes files by content hash, runs soak-runner over shell v2,
    samples memory/thermal state, and waits out disconnects and reboots."""

    remote_pids = True  # the supervisor takes the worker pid from its hello (a device pid)

    def __init__(self, serial: str, server: tuple[str, int] | None = None, runner: str | None = None,
                 root: str | None = None, wait_s: float | None = None, libs: list[str] | None = None):
        self.serial = serial
        self.lib_dirs = [Path(d) for d in libs or []]
        self.link = AdbLink(serial, server)
        self.name = f"adb:{serial}"
        self.runner = runner or os.environ.get("SOAK_ADB_RUNNER")
        self.root = (root or os.environ.get("SOAK_ADB_ROOT") or DEFAULT_ROOT).rstrip("/")
        self.wait_s = wait_s if wait_s is not None else float(os.environ.get("SOAK_ADB_WAIT_S", DEFAULT_WAIT_S))
        self.info: dict | None = None
        self.health = healthlib.DeviceHealth(self.link)
        self.remote: str | None = None
        self.push_stats: dict | None = None
        self._entries: list[push.Entry] = []
        self._extra: dict[str, tuple[str, list[push.Entry]]] = {}
        self._remote_spec: dict | None = None
        self._pending: list[dict] = []
        self._lock = threading.Lock()
        self._logcats: list[LogcatCapture] = []
        self._last_dumpsys = 0.0
        self._last_thermal = 0.0
        self._run_dir: Path | None = None
        self._lost = False  # the last worker's stream broke without an exit status

    # ---- facts ----
    def _device_info(self) -> dict:
        if self.info is None:
            try:
                self.info = probe.describe(self.link)
            except DeviceGone as exc:
                raise errors.DeviceUnavailable(f"device {self.serial} does not answer: {exc}",
                                               "check `adb devices`; replug or reboot the phone") from None
            self.health.boot_id = self.info.get("boot_id")
            self.health.uptime_s = self.info.get("uptime_s")
        return self.info

    def describe(self) -> dict:
        info = dict(self._device_info())
        info.update(work_root=self.root, runner=str(self._runner_path()), bundle=self.push_stats)
        return info

    # ---- files ----
    def _runner_path(self) -> Path:
        if self.runner:
            path = Path(self.runner).expanduser()
            if not path.is_file():
                raise errors.LibraryNotFound(f"soak-runner not found: {path}",
                                             "build it with the NDK (docs/phone.md) and pass runner=PATH")
            return path
        from soak.native_build import ensure_built

        return ensure_built("soak-runner")

    def _check_abi(self, path: Path, what: str) -> None:
        from soak.engine.loader import elf_machine

        want = self._device_info().get("machine")
        try:
            have = elf_machine(path)
        except OSError:
            raise errors.LibraryNotFound(f"{what} not found: {path}") from None
        if have is None:
            raise errors.WrongArchitecture(f"{what} is not an ELF file: {path}")
        if want and have != want:
            raise errors.WrongArchitecture(
                f"{what} {path} is built for {have}, but {self.serial} is {self._device_info().get('abi')}",
                "build it with the Android NDK for the device's ABI (docs/phone.md), e.g. "
                "-DANDROID_ABI=arm64-v8a, and pass it (runner: --target adb:SERIAL,runner=PATH)")

    def prepare(self, spec: dict, run_dir: Path) -> dict:
        """Push runner, engine, plugins and model; return the spec with device paths."""
        if self._remote_spec is not None and spec == self._remote_spec:
            return spec  # already prepared
        if spec.get("kind", "native") != "native":
            raise errors.BadInput("the adb target runs native engines only (--engine test or --engine lib)",
                                  "pip MNN does not run on a phone: build MNN and the shim with the NDK (docs/phone.md)")
        self._run_dir = Path(run_dir)
        runner = self._runner_path()
        self._check_abi(runner, "soak-runner")
        entries = [push.entry(runner, "bin", "soak-runner")]
        lib = Path(spec["engine_lib"])
        self._check_abi(lib, "engine library")
        entries.append(push.entry(lib, "lib"))
        plugins = []
        for p in spec.get("plugins") or []:
            self._check_abi(Path(p), "backend plugin")
            entries.append(push.entry(p, "lib"))
            plugins.append(Path(p).name)
        names = {e.name for e in entries}
        for folder in [lib.parent, *(Path(p).parent for p in spec.get("plugins") or []), *self.lib_dirs]:
            for dep in self._companion_libs(folder):
                if dep.name not in names:
                    names.add(dep.name)
                    entries.append(push.entry(dep, "lib"))
        config = Path(spec["config_path"])
        if not config.is_file():
            raise errors.BadInput(f"model config not found: {config}")
        entries += [push.entry(f, "model") for f in push.model_files(config)]
        self._entries = entries
        self._sync()
        self._emit_push()
        remote = {**spec, "engine_lib": f"{self.remote}/lib/{lib.name}",
                  "plugins": [f"{self.remote}/lib/{name}" for name in plugins],
                  "config_path": f"{self.remote}/model/{config.name}"}
        self._remote_spec = remote
        return remote

    def _companion_libs(self, folder: Path) -> list[Path]:
        """lib*.so* in folder built for the device (never libOpenCL: the device's driver is used)."""
        from soak.engine.loader import elf_machine

        if not folder.is_dir():
            raise errors.LibraryNotFound(f"library folder not found: {folder}", "check libs= in --target")
        want = self._device_info().get("machine")
        found = []
        for p in sorted(folder.glob("lib*.so*")):
            if not p.is_file() or p.name.startswith("libOpenCL"):
                continue
            try:
                if elf_machine(p) == want:
                    found.append(p)
            except OSError:
                continue
        return found

    def _sync(self) -> None:
        try:
            self.remote, self.push_stats = push.sync_bundle(self.link, self._entries, self.root)
        except DeviceGone as exc:
            raise errors.DeviceUnavailable(f"pushing to {self.serial} failed: {exc}",
                                           "check the cable and free space on the device (df /data)") from None

    def _extra_libs(self, host_dirs: list[str]) -> list[str]:
        """The interposer's libOpenCL.so (and any lib for the device's ABI) from host
        LD_LIBRARY_PATH folders -> device folders.  Host-only libraries are skipped."""
        from soak.engine.loader import elf_machine

        want = self._device_info().get("machine")
        remote_dirs = []
        for d in host_dirs:
            folder = Path(d)
            libs = []
            for p in sorted(folder.glob("lib*.so*")) if folder.is_dir() else []:
                try:
                    if p.is_file() and elf_machine(p) == want:
                        libs.append(p)
                except OSError:
                    continue
            if not libs:
                continue
            entries = [push.entry(p, "lib") for p in libs]
            remote, _ = push.sync_bundle(self.link, entries, self.root, quiet=True)
            self._extra[d] = (remote, entries)
            remote_dirs.append(f"{remote}/lib")
        return remote_dirs

    def _real_opencl(self) -> str:
        """The device's own libOpenCL.so, for the interposer to forward to."""
        candidates = ("/vendor/lib64/libOpenCL.so", "/system/vendor/lib64/libOpenCL.so", "/system/lib64/libOpenCL.so",
                      "/vendor/lib/libOpenCL.so")
        res = self.link.shell("for f in " + " ".join(candidates) + "; do [ -e $f ] && echo $f && break; done; true")
        return res.text.strip() or "libOpenCL.so"

    # ---- the worker ----
    def _report(self, faults: list[dict]) -> None:
        """Device faults go to the attached run; with none, check_health hands them over later."""
        sink = self.sink
        if sink is None:
            with self._lock:
                self._pending += faults
            return
        for f in faults:
            sink.emit_fault(f)

    def _emit_push(self) -> None:
        if self.sink is not None:
            self.sink.emit_event("device_push", serial=self.serial, remote=self.remote, **(self.push_stats or {}))

    def _ensure_ready(self) -> None:
        ready, faults = self.health.wait_ready(self.wait_s)
        if self._lost and not faults and ready:
            # the connection broke but the device was back before we looked: still a disconnect
            faults = [{"kind": "device_offline", "phase": "init", "serial": self.serial, "state": "disconnected"}]
        self._lost = False
        self._report(faults)
        if not ready:
            raise errors.DeviceUnavailable(
                f"device {self.serial} did not come back within {self.wait_s:g}s ({self.health.offline_state})",
                "check the phone; raise the wait with --target adb:SERIAL,wait=SECONDS")
        if self.remote is not None:
            self._sync()  # after a reboot /data/local/tmp may be gone; fast when unchanged
            if self.push_stats and self.push_stats.get("pushed_files"):
                self._emit_push()

    def worker_hint(self) -> str:
        return (f"soak-runner must run on {self.serial}: build it with the NDK for the device's ABI "
                "(docs/phone.md), pass it with runner=PATH, and its shared libraries (libc++_shared.so) "
                "with libs=DIR")

    def spawn_worker(self, env: dict[str, str], cwd: Path) -> RemoteProcess:
        try:
            return self._spawn(env, cwd)
        except DeviceGone as exc:
            raise errors.DeviceUnavailable(f"device {self.serial} stopped answering: {exc}",
                                           "check `adb devices`; replug or reboot the phone") from None

    def _spawn(self, env: dict[str, str], cwd: Path) -> RemoteProcess:
        self._device_info()
        self._ensure_ready()
        if self.remote is None:
            raise errors.BadInput("adb target used before prepare()", "call Target.prepare(spec, run_dir) first")
        lib_dirs = [f"{self.remote}/lib"]
        exports = []
        for key, value in env.items():
            if key == "LD_LIBRARY_PATH":
                lib_dirs = self._extra_libs([d for d in value.split(os.pathsep) if d]) + lib_dirs
                continue
            if key == "SOAK_CL_REAL_LIB":
                value = self._real_opencl()
            exports.append(f"export {key}={quote(self._device_path(value, cwd))}")
        run = f"{self.remote}/run"
        command = " && ".join([
            f"cd {quote(run)}",
            'echo "soak-remote-pid $$" >&2',
            f"export LD_LIBRARY_PATH={quote(':'.join(lib_dirs))}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}",
            *exports,
            f"exec {quote(self.remote + '/bin/soak-runner')}",
        ])
        proc = RemoteProcess(self.link, command, on_exit=self._on_worker_exit)
        pid = proc.pid
        if pid:
            capture = LogcatCapture(self.link, pid, proc.inject)
            capture.start()
            self._logcats.append(capture)
        return proc

    def local_file(self, path: str) -> str | None:
        """A module of a crash's backtrace: the host file soak pushed under that name (soak-runner,
        the engine library, its plugins and companions), else None (the device's own libraries)."""
        name = path.rstrip("/").rsplit("/", 1)[-1]
        for e in self._entries or ():
            if e.name == name and e.role in ("bin", "lib"):
                return str(e.local)
        return None

    def _device_path(self, value: str, cwd: Path) -> str:
        """Host paths inside the run folder become paths in the device's run folder."""
        try:
            rel = Path(value).resolve().relative_to(Path(cwd).resolve())
        except (ValueError, OSError):
            return value
        return f"{self.remote}/run/{rel}"

    def _on_worker_exit(self, proc: RemoteProcess) -> None:
        """Runs as the worker's stream ends: notes the cause in the engine log."""
        for capture in self._logcats:
            if capture.pid == proc._pid:
                capture.stop()
        if proc.lost:
            self._lost = True
            proc.inject(f"[soak-adb] lost the connection to {self.serial} (no exit status from the device)".encode())
        elif proc.returncode is not None and proc.returncode < 0 and proc._pid:
            lines = healthlib.tombstone(self.link, proc._pid)
            for line in lines:
                proc.inject(f"[soak-adb tombstone] {line}".encode())

    # ---- sampling and health ----
    def sample_memory(self, pid: int) -> dict | None:
        now = time.monotonic()
        with self._lock:
            dumpsys = now - self._last_dumpsys >= DUMPSYS_EVERY_S
            therm = now - self._last_thermal >= THERMAL_EVERY_S
            if dumpsys:
                self._last_dumpsys = now
            if therm:
                self._last_thermal = now
        sample = memory.sample(self.link, pid, with_dumpsys=dumpsys)
        if sample is None:
            return None
        if therm:
            state = thermal.sample(self.link)
            if state:
                sample["thermal"] = state
        return sample

    def check_health(self) -> list[dict]:
        with self._lock:
            found, self._pending = self._pending, []
        return found + self.health.check()

    def close(self) -> None:
        for capture in self._logcats:
            capture.stop()
        self._logcats.clear()
        if self.remote and self._run_dir is not None:
            self._pull_run_files()

    def _pull_run_files(self) -> None:
        """Files the runner wrote on the device (CL traces) come back to the run folder."""
        try:
            listing = self.link.shell(f"cd {quote(self.remote + '/run')} && ls -1", 10.0)
            for name in listing.text.split():
                data = self.link.read_file(f"{self.remote}/run/{name}", 120.0)
                if data is not None and not (self._run_dir / name).exists():
                    (self._run_dir / name).write_bytes(data)
            self.link.shell(f"rm -rf {quote(self.remote + '/run')}/*", 10.0)
        except DeviceGone:
            pass

