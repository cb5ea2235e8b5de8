"""A lab of test "phones": the real adbd (Debian bookworm-backports) on Linux.

Everything runs inside one private network namespace (only `lo`) and PID
namespace made with `unshare`: the adb server, and one adbd per device, each
in its own PID + mount namespace with a phone-like root (/data/local/tmp, a
boot id of its own, shims for getprop/logcat/dumpsys/reboot).  adbd runs as
nobody with vsock denied (novsock.c).  Commands that talk to the devices run
inside the network namespace through `nsenter` (`Lab.cmd`).  Killing the
lab's first process ends every process of it.

See shared research note adb-test-device.md for the behaviours this relies on.
Needs root (namespaces, mounts), adbd + adb (.ci/apt-backports.sh), a C compiler.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADBD_PATHS = ("/usr/lib/android-sdk/platform-tools/adbd", "/usr/sbin/adbd")

DEFAULT_PROPS = {
    "ro.product.manufacturer": "Soak",
    "ro.product.model": "Fake Phone",
    "ro.product.device": "fakephone",
    "ro.soc.manufacturer": "Qualcomm",
    "ro.soc.model": "SM8550",
    "ro.board.platform": "kalama",
    "ro.hardware": "qcom",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.build.fingerprint": "soak/fakephone/fakephone:14/TEST/1:userdebug/test-keys",
    "test.gles.vendor": "Qualcomm",
    "test.gles.renderer": "Adreno (TM) 740",
    "test.gles.version": "OpenGL ES 3.2 V@0676.32 (GIT@a8b1e8f, Ifd5d7a3d5c)",
}


def _pdeathsig() -> None:
    """In the child: die with SIGKILL when pytest dies (no stray namespaces)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def missing_requirements() -> list[str]:
    """What this machine lacks to run the lab (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network/mount namespaces)")
    if not any(os.access(p, os.X_OK) for p in ADBD_PATHS):
        missing.append("adbd (run .ci/apt-backports.sh)")
    for tool in ("adb", "unshare", "nsenter", "setpriv", "ip", "cc"):
        if not shutil.which(tool):
            missing.append(tool)
    return missing


def machine_abi() -> str:
    return {"x86_64": "x86_64", "aarch64": "arm64-v8a"}.get(os.uname().machine, os.uname().machine)


@dataclass
class FakeDevice:
    lab: "Lab"
    name: str
    port: int
    state: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def boot_id(self) -> str:
        return (self.state / "boot_id").read_text().strip()

    def boots(self) -> int:
        log = self.state / "power.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def adbd_pids(self) -> list[int]:
        """Host pids of this device's adbd (found through its environment)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != "adbd":
                    continue
                env = (entry / "environ").read_bytes().split(b"\0")
                if f"ADBD_PORT={self.port}".encode() in env:
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def freeze(self) -> None:
        """A frozen phone: adbd stops answering (the transport hangs)."""
        for pid in self.adbd_pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.adbd_pids():
            os.kill(pid, signal.SIGCONT)

    def reboot(self, delay_s: float = 2.0) -> None:
        """Like `adb reboot`: every process of the device ends, a new boot id."""
        (self.state / "reboot_delay").write_text(f"{delay_s}\n")
        (self.state / "reboot_requested").write_text("test\n")
        for pid in self.adbd_pids():
            os.kill(pid, signal.SIGTERM)

    def log(self, pid: int, tag: str, level: str, text: str) -> None:
        """Appends a logcat line (threadtime format) as if pid had logged it."""
        stamp = time.strftime("%m-%d %H:%M:%S", time.gmtime()) + ".000"
        with open(self.state / "logcat.txt", "a") as f:
            f.write(f"{stamp} {pid:5d} {pid:5d} {level} {tag:<8}: {text}\n")

    def set_prop(self, key: str, value: str) -> None:
        props = dict(line.split("=", 1) for line in (self.state / "props.txt").read_text().splitlines() if "=" in line)
        props[key] = value
        (self.state / "props.txt").write_text("".join(f"{k}={v}\n" for k, v in props.items()))


class Lab:
    """Owns the namespaces, the adb server and the devices."""

    def __init__(self, root: Path, listen_all: bool = False):
        """listen_all: the adb server listens on every interface (`adb -a`), as a device farm
        host's server does for other hosts (see `link`)."""
        self.root = Path(root)
        self.listen_all = listen_all
        self.devices: list[FakeDevice] = []
        self.holder: subprocess.Popen | None = None
        self.init_pid: int | None = None  # PID 1 of the lab's PID namespace (host pid)
        self._next_port = 15555

    # ---- environment ----
    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        home = self.root / "home"
        # the adb server writes $TMPDIR/adb.<uid>.log; soak's native build cache stays the user's
        env.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        env.update(HOME=str(home), TMPDIR=str(home), ADB_MDNS="0", ADB_MDNS_AUTO_CONNECT="0")
        env.pop("ADB_SERVER_SOCKET", None)
        env.pop("ANDROID_SERIAL", None)
        env.update(extra or {})
        return env

    def cmd(self, argv: list[str]) -> list[str]:
        """argv run inside the lab's network namespace."""
        assert self.init_pid is not None, "lab not started"
        return ["nsenter", f"--net=/proc/{self.init_pid}/ns/net", "--", *argv]

    def run(self, argv: list[str], timeout: float = 60, check: bool = False, **kw) -> subprocess.CompletedProcess:
        env = self.env(kw.pop("env", None))
        return subprocess.run(self.cmd(argv), env=env, timeout=timeout, check=check, capture_output=True,
                              text=kw.pop("text", True), **kw)

    def adb(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return self.run(["adb", *args], timeout=timeout)

    # ---- lifecycle ----
    def start(self) -> "Lab":
        missing = missing_requirements()
        if missing:
            raise RuntimeError("the adb test lab needs: " + ", ".join(missing))
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        novsock = self.root / "novsock"
        subprocess.run(["cc", "-O2", "-o", str(novsock), str(HERE / "novsock.c")], check=True)
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--",
             "sh", "-c", "ip link set lo up && echo ready && exec sleep 1000000"],
            stdout=subprocess.PIPE, text=True, preexec_fn=_pdeathsig)
        assert self.holder.stdout.readline().strip() == "ready"
        # unshare itself stays in the host PID namespace; its child is PID 1 of the lab's
        children = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text().split()
        self.init_pid = int(children[0])
        # the server daemon joins the lab's PID namespace too, so it ends with the lab
        started = subprocess.run(["nsenter", f"--target={self.init_pid}", "--net", "--pid", "--", "adb",
                                  *(["-a"] if self.listen_all else []), "start-server"],
                                 env=self.env(), capture_output=True, text=True, timeout=60)
        if started.returncode != 0:
            raise RuntimeError(f"adb start-server failed: {started.stderr}")
        return self

    def add_device(self, name: str | None = None, props: dict[str, str] | None = None,
                   wait: bool = True) -> FakeDevice:
        port = self._next_port
        self._next_port += 2
        name = name or f"dev{port}"
        state = self.root / name
        state.mkdir(parents=True)
        state.chmod(0o777)
        all_props = {**DEFAULT_PROPS, "ro.product.cpu.abi": machine_abi(), "ro.serialno": name, **(props or {})}
        (state / "props.txt").write_text("".join(f"{k}={v}\n" for k, v in all_props.items()))
        for f in ("logcat.txt", "gl_mtrack_kb", "thermal_status"):
            (state / f).write_text("0\n" if f != "logcat.txt" else "")
            (state / f).chmod(0o666)
        shutil.copy(self.root / "novsock", state / "novsock")
        dev = FakeDevice(self, name, port, state)
        dev.proc = subprocess.Popen(
            ["nsenter", f"--target={self.init_pid}", "--net", "--pid", "--",
             "unshare", "--mount", "--propagation", "private", "--",
             "sh", str(HERE / "device.sh"), str(state), str(port)],
            stdout=subprocess.DEVNULL, stderr=open(state / "supervisor.log", "ab"), preexec_fn=_pdeathsig)
        self.devices.append(dev)
        if wait:
            self.connect(dev)
        return dev

    def connect(self, dev: FakeDevice, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.adb("connect", dev.serial, timeout=10)
            state = self.adb("-s", dev.serial, "get-state", timeout=10)
            if state.stdout.strip() == "device":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"test device {dev.serial} did not come up: {state.stderr}\n"
                                   + (dev.state / "boot.log").read_text(errors="replace"))
            time.sleep(0.3)

    def link(self, other: "Lab", subnet: str = "10.231.0") -> tuple[str, str]:
        """A cable between two labs: a veth pair, this lab SUBNET.1, the other SUBNET.2.
        Returns the two addresses.  Each lab is still a host of its own (its own loopback)."""
        tag = f"{os.getpid() % 100000}"
        mine, theirs = f"sk{tag}a", f"sk{tag}b"
        subprocess.run(["ip", "link", "add", mine, "type", "veth", "peer", "name", theirs], check=True)
        subprocess.run(["ip", "link", "set", mine, "netns", str(self.init_pid)], check=True)
        subprocess.run(["ip", "link", "set", theirs, "netns", str(other.init_pid)], check=True)
        for lab, dev, addr in ((self, mine, f"{subnet}.1"), (other, theirs, f"{subnet}.2")):
            for argv in (["ip", "addr", "add", f"{addr}/24", "dev", dev], ["ip", "link", "set", dev, "up"]):
                subprocess.run(lab.cmd(argv), check=True)
        return f"{subnet}.1", f"{subnet}.2"

    def close(self) -> None:
        for dev in self.devices:
            (dev.state / "poweroff").write_text("1\n")
            dev.thaw()
        if self.holder is not None:
            try:
                self.adb("kill-server", timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                pass
            self.holder.kill()  # --kill-child: the lab's PID 1 dies, and with it every process of the lab
            self.holder.wait(timeout=10)
        for dev in self.devices:
            if dev.proc is not None:
                dev.proc.kill()
                dev.proc.wait(timeout=10)
        self.holder = None
        self.init_pid = None

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
