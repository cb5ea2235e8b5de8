#!/bin/sh
# boot.sh STATE PORT: PID 1 of one test device (its own PID and mount
# namespaces, inside the lab's private network namespace: loopback only).
#
# Builds a root that looks like a phone's: the host's /usr, /etc, /dev, a
# fresh /proc (this device's processes only) with the device's boot id, and
# a private tmpfs /data with /data/local/tmp.  Then runs the real adbd as
# nobody, with vsock denied, with the shims first on PATH.  When adbd dies,
# this script exits and the kernel ends every process of the device.
set -e
state=$1
port=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$state/root
mkdir -p "$root"
mount -t tmpfs -o mode=0755 devroot "$root"
for d in usr etc dev sys proc tmp data fakedev state; do mkdir -p "$root/$d"; done
for l in bin sbin lib lib32 lib64; do
    if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$root/$l"; elif [ -d "/$l" ]; then mkdir "$root/$l"; mount --rbind "/$l" "$root/$l"; fi
done
mount --rbind /usr "$root/usr"
mount --rbind /etc "$root/etc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount -t proc proc "$root/proc"
mount --bind "$state/boot_id" "$root/proc/sys/kernel/random/boot_id"
mount -t tmpfs -o mode=1777 tmp "$root/tmp"
mount -t tmpfs -o mode=0771 data "$root/data"
mkdir -p "$root/data/local/tmp"
chmod 0771 "$root/data/local"
chmod 1777 "$root/data/local/tmp"
mount --bind "$here" "$root/fakedev"
mount --bind "$state" "$root/state"
adbd=/usr/lib/android-sdk/platform-tools/adbd
[ -x "$adbd" ] || adbd=$(command -v adbd)
cd /
chroot "$root" /bin/sh -c '
    cd /data/local/tmp
    export PATH=/fakedev/bin:/usr/bin:/bin FAKE_DEVICE_STATE=/state ADBD_PORT='"$port"' HOME=/data/local/tmp TMPDIR=/data/local/tmp
    exec setpriv --reuid=65534 --regid=65534 --clear-groups /state/novsock '"$adbd"'
' &
echo $! > "$state/adbd.pid"
wait $! || true
