#!/bin/sh
# device.sh STATE PORT: the power supply of one test device.
# Boots the device (boot.sh in a fresh PID + mount namespace), and when it
# goes down (`reboot` shim, crash) boots it again after STATE/reboot_delay
# seconds with a new boot id.  STATE/poweroff stops it for good.
state=$1
port=$2
here=$(cd "$(dirname "$0")" && pwd)
while :; do
    rm -f "$state/reboot_requested"
    # Write in place: boot.sh bind-mounts this file over the device's boot_id.
    cat /proc/sys/kernel/random/uuid > "$state/boot_id"
    echo "boot $(cat "$state/boot_id")" >> "$state/power.log"
    unshare --pid --fork --mount --mount-proc --propagation private --kill-child \
        sh "$here/boot.sh" "$state" "$port" >> "$state/boot.log" 2>&1
    [ -f "$state/poweroff" ] && exit 0
    sleep "$(cat "$state/reboot_delay" 2>/dev/null || echo 2)"
done
