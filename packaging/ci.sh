#!/usr/bin/env bash
# CI for the ARM builds and the Debian packages (Debian 12 / Ubuntu runners, as root or with sudo):
#   1. installs the cross toolchains, qemu-user and socat (apt) and the Rust targets (rustup);
#   2. builds hj212-gateway and hj212-ingest in release for aarch64 and armv7;
#   3. runs packaging/qemu-smoke.sh (the aarch64 gateway under qemu against a simulated
#      analyzer and platform; ARMV7_SMOKE=1 runs it for armv7 as well);
#   4. builds the .deb packages for the host, arm64 and armhf, and checks them with
#      dpkg-deb --info / --contents and, if present, systemd-analyze verify.
# Usage: packaging/ci.sh [--no-install]
set -euo pipefail

INSTALL=1
[ "${1:-}" = --no-install ] && INSTALL=0

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
step() { echo; echo "=== $* ($(date +%T))"; }
t0=$(date +%s)

if [ "$INSTALL" = 1 ]; then
    step "installing the cross toolchains"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    need=()
    for p in gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross \
             qemu-user socat; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        $SUDO apt-get update
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
    fi
    rustup target add "${TARGETS[@]}"
fi

for t in "${TARGETS[@]}"; do
    step "release build for $t"
    cargo build --release --locked --target "$t" -p hj212-gateway -p hj212-ingest --bins
done

step "qemu smoke test (aarch64)"
packaging/qemu-smoke.sh --target aarch64-unknown-linux-gnu
if [ "${ARMV7_SMOKE:-0}" = 1 ]; then
    step "qemu smoke test (armv7)"
    packaging/qemu-smoke.sh --target armv7-unknown-linux-gnueabihf
fi

OUT=$(mktemp -d "${TMPDIR:-/tmp}/hj212-ci-deb.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
step "Debian packages"
packaging/build-deb.sh --out "$OUT"
for t in "${TARGETS[@]}"; do
    packaging/build-deb.sh --target "$t" --no-build --out "$OUT"
done
for deb in "$OUT"/*.deb; do
    dpkg-deb --info "$deb" >/dev/null
    contents=$(dpkg-deb --contents "$deb")
    grep -q '/lib/systemd/system/.*\.service$' <<<"$contents"
    grep -q '/etc/hj212/.*\.toml$' <<<"$contents"
    echo "ok: $(basename "$deb") ($(du -h "$deb" | cut -f1))"
done

if command -v systemd-analyze >/dev/null; then
    step "systemd-analyze verify"
    host_arch=$(dpkg --print-architecture)
    x=$OUT/extract
    for deb in "$OUT"/*_"$host_arch".deb; do dpkg-deb -x "$deb" "$x"; done
    # Verify the units against the extracted binaries (ExecStart paths rewritten into $x).
    for unit in "$x"/lib/systemd/system/*.service; do
        sed "s|/usr/bin/|$x/usr/bin/|g" "$unit" >"$OUT/$(basename "$unit")"
    done
    out=$(systemd-analyze verify "$OUT"/*.service 2>&1 || true)
    # Without a running systemd (containers) verify also complains about the environment;
    # only messages about the units themselves fail the build.
    bad=$(grep -E '\.service:' <<<"$out" | grep -v 'Documentation' || true)
    if [ -n "$bad" ]; then echo "$bad" >&2; exit 1; fi
    echo "units accepted"
fi

step "done in $(( $(date +%s) - t0 ))s"
