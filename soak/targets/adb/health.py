"""Is the device still there, and is it the same boot?

Classifies what happened to a device between two looks:
  device_offline  the adb server lists it as absent/offline, or it stops
                  answering (a frozen phone: the server still says "device")
  device_reboot   it answers again with another boot id (or a smaller uptime)
and waits for it to come back (network serials are re-`connect`ed).
A runner crash is classified by the supervisor (signal); `tombstone()`
adds the device's crash report when it is readable.
"""

from __future__ import annotations

import time

from soak.targets.adb import probe
from soak.targets.adb._conn import AdbLink, DeviceGone

PROBE_TIMEOUT_S = 5.0


class DeviceHealth:
    def __init__(self, link: AdbLink, boot_id: str | None = None, uptime_s: float | None = None):
        self.link = link
        self.boot_id = boot_id
        self.uptime_s = uptime_s
        self.offline_since: float | None = None
        self.offline_state: str | None = None

    def look(self) -> str:
        """"device", or why not: "absent", "offline", "unauthorized", "unresponsive"."""
        state = self.link.state(PROBE_TIMEOUT_S)
        if state is None:
            return "absent"
        if state != "device":
            return state
        try:
            res = self.link.shell("echo soak-alive", PROBE_TIMEOUT_S)
        except DeviceGone:
            return "unresponsive"
        return "device" if b"soak-alive" in res.stdout else "unresponsive"

    def check(self) -> list[dict]:
        """Faults seen since the last check (device_offline / device_reboot)."""
        found: list[dict] = []
        state = self.look()
        if state != "device":
            if self.offline_since is None:
                self.offline_since = time.monotonic()
                self.offline_state = state
                found.append({"kind": "device_offline", "phase": "init", "serial": self.link.serial,
                              "state": state})
            return found
        found += self._check_boot()
        self.offline_since = None
        self.offline_state = None
        return found

    def _check_boot(self) -> list[dict]:
        try:
            boot_id, uptime = probe.boot_state(self.link, PROBE_TIMEOUT_S)
        except DeviceGone:
            return []
        rebooted = (self.boot_id is not None and boot_id is not None and boot_id != self.boot_id) or (
            self.uptime_s is not None and uptime is not None and uptime + 1.0 < self.uptime_s)
        fault = []
        if rebooted:
            fault.append({"kind": "device_reboot", "phase": "init", "serial": self.link.serial,
                          "boot_id_before": self.boot_id, "boot_id_after": boot_id, "uptime_s": uptime})
        self.boot_id = boot_id or self.boot_id
        self.uptime_s = uptime if uptime is not None else self.uptime_s
        return fault

    def wait_ready(self, timeout_s: float, poll_s: float = 1.0) -> tuple[bool, list[dict]]:
        """Wait until the device answers.  Returns (ready, faults seen on the way)."""
        deadline = time.monotonic() + timeout_s
        found: list[dict] = []
        while True:
            found += self.check()
            if self.offline_since is None:
                return True, found
            if time.monotonic() >= deadline:
                return False, found
            if self.offline_state in ("absent", "offline"):
                self.link.reconnect(PROBE_TIMEOUT_S)  # network devices: adb connect again
            time.sleep(poll_s)


def tombstone(link: AdbLink, pid: int, timeout: float = 10.0) -> list[str]:
    """The crash report lines for pid: the newest tombstone if it is pid's and readable (root
    or debuggable builds), else the `crash` log buffer: libc's `Fatal signal` line (logged by
    pid itself) and the report crash_dump logged under its own pid with tag DEBUG.  Of a
    report, its header (pid, signal, cause, abort message) and the crashing thread's
    `backtrace:` section.  [] when nothing is readable."""
    try:
        res = link.shell(
            "t=$(ls -t /data/tombstones/tombstone_* 2>/dev/null | head -1); "
            f"if [ -n \"$t\" ] && grep -q 'pid: {pid},' \"$t\" 2>/dev/null; then echo \"$t\"; head -400 \"$t\"; "
            "else logcat -b crash -d -v threadtime 2>/dev/null | tail -1000; fi",
            timeout)
    except DeviceGone:
        return []
    return crash_report(res.text.splitlines(), pid)


_REPORT_HEAD = ("pid: ", "signal ", "Cause: ", "Abort message: ", "backtrace:")


def crash_report(lines: list[str], pid: int) -> list[str]:
    """What tombstone() keeps of a tombstone file or a crash buffer dump (see there)."""
    from soak.backtrace import parse_line

    cols = [line.split(None, 5) for line in lines]
    logcat = sum(1 for c in cols if len(c) > 5 and c[2].isdigit()) > len(lines) // 2
    # a crash buffer: which crash_dump pids reported on our pid
    reporters = {c[2] for line, c in zip(lines, cols) if logcat and len(c) > 5 and f"pid: {pid}," in line}
    out: list[str] = []
    in_backtrace = done = False
    for line, c in zip(lines, cols):
        if not line.strip():
            continue
        if logcat and len(c) > 5 and c[2].isdigit():
            if c[2] == str(pid):
                out.append(line)  # libc's "Fatal signal" line, logged by the process itself
                continue
            if c[2] not in reporters:
                continue
            text = line.split(": ", 1)[1] if ": " in line else line
        elif logcat:
            continue
        else:
            text = line
        if done:
            continue
        stripped = text.strip()
        if in_backtrace:
            if parse_line(stripped) is not None:
                out.append(line)
                continue
            in_backtrace, done = False, True  # the crashing thread's section ends
            continue
        if stripped.startswith(_REPORT_HEAD) or line.startswith("/data/tombstones/"):
            out.append(line)
            in_backtrace = stripped == "backtrace:"
    return out[:200]
