#!/bin/sh
# Installs the real Android device daemon (adbd) and adb server from Debian
# bookworm-backports, for the adb end-to-end tests (tests/adb/).
# Called by .ci/run.  Idempotent.  Needs root (apt).
#
# adbd is not in bookworm main; backports has adbd 34.0.5-12~bpo12+1.
# Installing it also moves adb to the same version (android-libcutils pins).
# Backports has pin priority 100, so nothing else upgrades from it.
set -eu

if command -v adbd >/dev/null 2>&1 || [ -x /usr/lib/android-sdk/platform-tools/adbd ]; then
    if command -v adb >/dev/null 2>&1; then
        echo "apt-backports: adbd and adb already installed"
        exit 0
    fi
fi

# Use the same mirror as the machine's Debian source (deb822 or one-line format).
uri=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $3 ~ /^bookworm/ {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$uri" ] || uri=http://deb.debian.org/debian

list=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -f "$list" ]; then
    cat > "$list" <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

apt-get -o DPkg::Lock::Timeout=600 update
DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends \
    -t bookworm-backports adbd adb
# iproute2 (ip link set lo up) and util-linux (unshare, setpriv) come from main.
DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends iproute2 util-linux
