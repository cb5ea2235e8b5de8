"""Android devices over adb: device probe, push, remote worker, samplers.

`soak.targets.adb.target.make_targets(["adb:SERIAL", ...])` gives the Targets for
`soak run --target adb...`; `soak devices` lists what is connected.
Every call to a device has its own timeout (soak.targets.adb._conn).
Other packages reach the connection layer through the names below, never _conn itself.
"""

from soak.targets.adb._conn import AdbLink, DeviceGone, server_address

__all__ = ["AdbLink", "DeviceGone", "server_address"]
