#!/usr/bin/env bash
# Builds the Debian packages `hj212-gateway` (hj212-gateway and the hj212 CLI) and
# `hj212-ingest` with cargo and dpkg-deb only.
#
# Usage: packaging/build-deb.sh [--target TRIPLE] [--out DIR] [--no-build] [--only gateway|ingest]
#   --target    a Rust target: the host (default), aarch64-unknown-linux-gnu (arm64) or
#               armv7-unknown-linux-gnueabihf (armhf); cross linkers in .cargo/config.toml
#   --out       where the .deb files go (default target/debian)
#   --no-build  package the release binaries already in target/
#   --only      build one of the two packages
# Prints the paths of the packages it wrote. See docs/operations.md, "Debian packages".
set -euo pipefail

TARGET=""
OUT=""
BUILD=1
ONLY=""
CARGO=${CARGO:-cargo}
while [ $# -gt 0 ]; do
    case "$1" in
        --target) TARGET=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/debian}

HOST=$(rustc -vV | sed -n 's/^host: //p')
case "${TARGET:-$HOST}" in
    x86_64-unknown-linux-gnu) ARCH=amd64; STRIP=strip ;;
    aarch64-unknown-linux-gnu) ARCH=arm64; STRIP=aarch64-linux-gnu-strip ;;
    armv7-unknown-linux-gnueabihf) ARCH=armhf; STRIP=arm-linux-gnueabihf-strip ;;
    *) echo "unsupported target: ${TARGET:-$HOST}" >&2; exit 2 ;;
esac
if [ -n "$TARGET" ] && [ "$TARGET" != "$HOST" ]; then
    BIN_DIR=$TARGET_DIR/$TARGET/release
    target_flag=(--target "$TARGET")
else
    BIN_DIR=$TARGET_DIR/release
    target_flag=()
fi
command -v "$STRIP" >/dev/null || STRIP=""

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || { echo "cannot read the workspace version from Cargo.toml" >&2; exit 1; }
MAINTAINER=${DEB_MAINTAINER:-"hj212 maintainers <hj212@example.invalid>"}

packages=(gateway ingest)
[ -n "$ONLY" ] && packages=("$ONLY")

if [ "$BUILD" = 1 ]; then
    args=()
    for p in "${packages[@]}"; do args+=(-p "hj212-$p"); done
    "$CARGO" build --release "${target_flag[@]}" "${args[@]}" --bins
fi

mkdir -p "$OUT"
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/hj212-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

# Shell fragments shared by the maintainer scripts.
postinst_common='
if ! getent group hj212 >/dev/null; then
    if command -v addgroup >/dev/null; then addgroup --system --quiet hj212
    else groupadd --system hj212; fi
fi
if ! getent passwd hj212 >/dev/null; then
    if command -v adduser >/dev/null; then
        adduser --system --quiet --ingroup hj212 --home /var/lib/hj212 --no-create-home \
            --shell /usr/sbin/nologin --gecos "HJ 212 daemons" hj212
    else
        useradd --system --gid hj212 --home-dir /var/lib/hj212 --no-create-home \
            --shell /usr/sbin/nologin --comment "HJ 212 daemons" hj212
    fi
fi
install -d -o hj212 -g hj212 -m 0750 /var/lib/hj212 /var/log/hj212
'

# write_package NAME DESCRIPTION BINARIES... -- (uses CONFIG, UNIT, EXTRA_POSTINST)
write_package() {
    local name=$1 description=$2; shift 2
    local root=$STAGE/$name
    mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/hj212" \
        "$root/usr/share/doc/$name"
    for bin in "$@"; do
        [ -x "$BIN_DIR/$bin" ] || { echo "missing binary: $BIN_DIR/$bin" >&2; exit 1; }
        install -m 0755 "$BIN_DIR/$bin" "$root/usr/bin/$bin"
        [ -n "$STRIP" ] && "$STRIP" --strip-unneeded "$root/usr/bin/$bin"
    done
    install -m 0644 "packaging/systemd/$name.service" "$root/lib/systemd/system/$name.service"
    install -m 0640 "$CONFIG" "$root/etc/hj212/$CONFIG_NAME"
    install -m 0644 docs/operations.md "$root/usr/share/doc/$name/operations.md"
    gzip -9n "$root/usr/share/doc/$name/operations.md"
    cat >"$root/usr/share/doc/$name/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: hj212
License: MIT OR Apache-2.0
EOF
    echo "/etc/hj212/$CONFIG_NAME" >"$root/DEBIAN/conffiles"

    local size glibc
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    # The newest glibc symbol version the binaries use (2.34 with Debian 12's toolchains).
    glibc=""
    if command -v objdump >/dev/null; then
        glibc=$(for bin in "$@"; do objdump -T "$root/usr/bin/$bin"; done 2>/dev/null \
            | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    fi
    glibc=${glibc:-2.34}
    cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $size
Depends: libc6 (>= $glibc), libgcc-s1, adduser | passwd
Section: net
Priority: optional
Homepage: https://example.invalid/hj212
Description: $description
EOF
    sed -n '/^ /p' <<<"$LONG_DESCRIPTION" >>"$root/DEBIAN/control"

    cat >"$root/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
$postinst_common
$EXTRA_POSTINST
    # The configuration holds passwords: readable by the service group only.
    chown root:hj212 /etc/hj212/$CONFIG_NAME
    chmod 0640 /etc/hj212/$CONFIG_NAME
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null || true
        if [ -z "\$2" ]; then
            # First install: enabled, but started by the operator once the configuration is edited.
            systemctl enable $name.service >/dev/null || true
            echo "$name: edit /etc/hj212/$CONFIG_NAME, then: systemctl start $name"
        else
            systemctl try-restart $name.service >/dev/null || true
        fi
    fi
fi
exit 0
EOF
    cat >"$root/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    case "\$1" in
        remove|deconfigure) systemctl stop $name.service >/dev/null || true
                            systemctl disable $name.service >/dev/null || true ;;
    esac
fi
exit 0
EOF
    cat >"$root/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
fi
# On purge the configuration goes (dpkg removes conffiles); the hj212 user and the data in
# /var/lib/hj212 and /var/log/hj212 are kept: they may belong to the other hj212 package.
exit 0
EOF
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

    local deb=$OUT/${name}_${VERSION}_${ARCH}.deb
    dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
    echo "$deb"
}

for p in "${packages[@]}"; do
    case "$p" in
        gateway)
            # The packaged configuration: the defaults, with the Debian state and log paths.
            CONFIG=$STAGE/gateway.toml
            CONFIG_NAME=gateway.toml
            sed -e 's|/var/lib/hj212-gateway/store|/var/lib/hj212/gateway-store|' \
                -e 's|/var/log/hj212-gateway/packets.log|/var/log/hj212/gateway-packets.log|' \
                gateway/default.toml >"$CONFIG"
            EXTRA_POSTINST='
    # Serial ports (RS-485 adapters) are group dialout.
    if getent group dialout >/dev/null; then
        if command -v adduser >/dev/null; then adduser --quiet hj212 dialout
        else usermod -a -G dialout hj212; fi
    fi'
            LONG_DESCRIPTION=" Reads analyzers over Modbus RTU (RS-485) and uploads HJ 212 frames to one or
 more platforms over TCP, with a durable store. Includes the hj212 field CLI
 (Modbus probing, frame decoding, analyzer and platform simulators)."
            write_package hj212-gateway "HJ 212 data acquisition unit and field CLI" hj212-gateway hj212
            ;;
        ingest)
            CONFIG=ingest/default.toml
            CONFIG_NAME=ingest.toml
            EXTRA_POSTINST=""
            LONG_DESCRIPTION=" Accepts HJ 212 connections from data acquisition units, answers them
 (9014/9013) and forwards the frames to MQTT, with a durable spool, data-quality
 checks and Prometheus metrics."
            write_package hj212-ingest "HJ 212 platform daemon (TCP to MQTT)" hj212-ingest
            ;;
        *) echo "unknown package: $p (gateway or ingest)" >&2; exit 2 ;;
    esac
done
