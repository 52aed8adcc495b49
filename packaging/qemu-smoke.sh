#!/usr/bin/env bash
# Smoke test of the cross-built gateway under qemu-user.
#
# Builds `hj212-gateway` and `hj212` for an ARM target, then on this host:
#   - joins two ptys with socat (a virtual RS-485 line);
#   - runs `hj212 sim analyzer` (host build) on one end;
#   - runs `hj212 sim platform` (host build) on a loopback port;
#   - runs the ARM `hj212-gateway run` under qemu-user on the other end of the line,
#     uploading to the platform;
# and checks, within a time bound, that the platform printed a CN=2011 frame and that the
# gateway's packet log shows CN=9014 answers coming back. Exit 0 on success, 1 otherwise.
#
# Usage: packaging/qemu-smoke.sh [--target TRIPLE] [--timeout SECS] [--no-build] [--keep]
#   --target   aarch64-unknown-linux-gnu (default) or armv7-unknown-linux-gnueabihf
#   --timeout  seconds allowed for the frames to flow (default 60)
#   --no-build use the binaries already in target/
#   --keep     keep the working directory (logs, store) for inspection
# Environment: PROFILE=debug|release for the ARM build (default release, shared with
#   packaging/build-deb.sh), CARGO (default cargo). The host `hj212` is a debug build.
# Needs: the rust target, the cross gcc, qemu-user, socat (see docs/operations.md).
# packaging/termios2-shim.c is preloaded into the emulated gateway (qemu-user lacks termios2).
set -euo pipefail

TARGET=aarch64-unknown-linux-gnu
TIMEOUT=60
BUILD=1
KEEP=0
PROFILE=${PROFILE:-release}
CARGO=${CARGO:-cargo}
while [ $# -gt 0 ]; do
    case "$1" in
        --target) TARGET=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

case "$TARGET" in
    aarch64-unknown-linux-gnu) QEMU="qemu-aarch64 -L /usr/aarch64-linux-gnu"; CROSS_CC=aarch64-linux-gnu-gcc ;;
    armv7-unknown-linux-gnueabihf) QEMU="qemu-arm -L /usr/arm-linux-gnueabihf"; CROSS_CC=arm-linux-gnueabihf-gcc ;;
    *) echo "unsupported target: $TARGET" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

for tool in socat "${QEMU%% *}" "$CROSS_CC"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (apt-get install socat qemu-user)" >&2; exit 2; }
done

profile_flag=()
profile_dir=debug
if [ "$PROFILE" = release ]; then profile_flag=(--release); profile_dir=release; fi

if [ "$BUILD" = 1 ]; then
    echo "== building hj212-gateway, hj212 for $TARGET ($PROFILE)"
    "$CARGO" build "${profile_flag[@]}" --target "$TARGET" -p hj212-gateway --bin hj212-gateway --bin hj212
    echo "== building hj212 for the host (debug; it only plays the analyzer and the platform)"
    "$CARGO" build -p hj212-gateway --bin hj212
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ARM_GATEWAY=$TARGET_DIR/$TARGET/$profile_dir/hj212-gateway
ARM_CLI=$TARGET_DIR/$TARGET/$profile_dir/hj212
HOST_CLI=$TARGET_DIR/debug/hj212
for f in "$ARM_GATEWAY" "$ARM_CLI" "$HOST_CLI"; do
    [ -x "$f" ] || { echo "missing binary: $f" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hj212-qemu-smoke.XXXXXX")
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
        echo "== working directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT INT TERM

# qemu-user (7.2 at least) lacks the termios2 ioctls the serialport crate uses to open a port;
# a preloaded shim, for the emulated gateway only, maps them onto TCGETS/TCSETS.
"$CROSS_CC" -shared -fPIC -O2 -o "$WORK/termios2-shim.so" "$ROOT/packaging/termios2-shim.c"
QEMU="$QEMU -E LD_PRELOAD=$WORK/termios2-shim.so"

# The ARM CLI runs under qemu too: a quick check that the second binary works.
echo "== $($QEMU "$ARM_CLI" --version 2>&1 | head -1) under ${QEMU%% *}"

# A virtual serial line: two ptys joined by socat.
socat -d -d "pty,raw,echo=0,link=$WORK/tty-analyzer" "pty,raw,echo=0,link=$WORK/tty-gateway" \
    2>"$WORK/socat.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -e "$WORK/tty-analyzer" ] && [ -e "$WORK/tty-gateway" ] && break; sleep 0.1; done
[ -e "$WORK/tty-gateway" ] || { echo "socat did not create the pty pair" >&2; cat "$WORK/socat.log" >&2; exit 1; }

"$HOST_CLI" --color never sim analyzer --profile surface-water-cod --set w01018=42.5 --port "$WORK/tty-analyzer" \
    >"$WORK/analyzer.out" 2>"$WORK/analyzer.err" &
PIDS+=($!)

# A free loopback port for the platform.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000)))
"$HOST_CLI" --color never sim platform --listen "127.0.0.1:$PORT" >"$WORK/platform.out" 2>"$WORK/platform.err" &
PIDS+=($!)

cat >"$WORK/gateway.toml" <<EOF
shutdown_timeout_secs = 5

[site]
mn = "010000A8900016F000169DC0"
pw = "123456"
st = "32"

[acquisition]
rtd_interval_secs = 1
min_interval_mins = 1
poll_interval_ms = 200
samples_per_minute = 1
minutes_per_hour = 1
hours_per_day = 1
snapshot_interval_secs = 0

[[serial]]
device = "$WORK/tty-gateway"
baud = 9600
response_timeout_ms = 500
retries = 1
inter_request_delay_ms = 5

[[serial.analyzer]]
name = "cod"
profile = "surface-water-cod"

[[platform]]
name = "platform"
address = "127.0.0.1:$PORT"
ack = true
reconnect_min_ms = 200
reconnect_max_ms = 1000

[store]
path = "$WORK/store"

[packet_log]
path = "$WORK/packets.log"
EOF

$QEMU "$ARM_GATEWAY" check-config --config "$WORK/gateway.toml" >"$WORK/check-config.out" 2>&1 \
    || { echo "check-config refused the test configuration:" >&2; cat "$WORK/check-config.out" >&2; exit 1; }

echo "== starting $TARGET hj212-gateway under ${QEMU%% *}; platform on 127.0.0.1:$PORT"
start=$(date +%s)
$QEMU "$ARM_GATEWAY" run --config "$WORK/gateway.toml" -v >"$WORK/gateway.out" 2>"$WORK/gateway.err" &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")

count() { grep -Ec -- "$1" "$2" 2>/dev/null || true; }
# `hj212 sim platform` prints "<time> <- <peer> 2011 real-time data MN=... w01018-Rtd=42.5 ...";
# the value set on the simulated analyzer proves the serial side works too.
RTD='<- [^ ]+ 2011 .*w01018-Rtd=42\.5'
ACK=' in .*CN=9014;' 
ok=0
while [ $(( $(date +%s) - start )) -lt "$TIMEOUT" ]; do
    if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
        echo "the gateway exited early" >&2
        break
    fi
    rtd=$(count "$RTD" "$WORK/platform.out")
    acks=$(count "$ACK" "$WORK/packets.log")
    if [ "${rtd:-0}" -ge 2 ] && [ "${acks:-0}" -ge 2 ]; then ok=1; break; fi
    sleep 1
done
elapsed=$(( $(date +%s) - start ))

rtd=$(count "$RTD" "$WORK/platform.out")
acks=$(count "$ACK" "$WORK/packets.log")
echo "== after ${elapsed}s: platform printed $rtd 2011 frames with w01018-Rtd=42.5; gateway received $acks CN=9014"

# A graceful stop under qemu as well (SIGTERM, exit 0).
kill -TERM "$GATEWAY_PID" 2>/dev/null || true
stop_rc=0
for _ in $(seq 100); do kill -0 "$GATEWAY_PID" 2>/dev/null || break; sleep 0.1; done
wait "$GATEWAY_PID" 2>/dev/null || stop_rc=$?

if [ "$ok" = 1 ]; then
    echo "== gateway stopped with exit code $stop_rc"
    grep -E -m1 -- "$RTD" "$WORK/platform.out" | cut -c1-200
    grep -E -m1 -- "$ACK" "$WORK/packets.log" | cut -c1-200
    if [ "$stop_rc" != 0 ]; then
        echo "FAIL: the gateway did not stop cleanly on SIGTERM (exit $stop_rc)" >&2
        exit 1
    fi
    echo "PASS: $TARGET gateway under qemu delivered frames and got 9014s"
    exit 0
fi

echo "FAIL: no frames flowed within ${TIMEOUT}s" >&2
for f in gateway.err platform.out platform.err analyzer.err socat.log packets.log; do
    echo "---- $f (last 20 lines)" >&2
    tail -n 20 "$WORK/$f" >&2 2>/dev/null || true
done
exit 1
