#!/usr/bin/env bash
# Mosquitto's own ceiling: what the bench's Mosquitto configuration accepts from plain QoS 1
# publishers, rate rising until acks/s falls under 90 % of offered or p99 passes 1 s. Run it
# right after ramp.sh (which stops at ingest's knee and so never finds the broker's).
# Run from the workspace root after `cargo build --release -p hj212-ingest`.
# Usage: ingest/bench/mosq-ceiling.sh [CLIENTS] [STEP_SECS] [RATES...]   (rates per client per second)
here=$(dirname "$0")
source "$here/common.sh"
CLIENTS=${1:-200}
STEP=${2:-10}
shift 2 || true
RATES=("$@")
[[ ${#RATES[@]} -gt 0 ]] || RATES=(75 100 150 200 250)
start_mosquitto
sleep 0.5
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
for r in "${RATES[@]}"; do
    offered=$(awk -v c="$CLIENTS" -v r="$r" 'BEGIN { print c * r }')
    b=$("$BIN/hj212-loadgen" mqtt-baseline --broker "127.0.0.1:$MQTT_PORT" --publishers "$CLIENTS" --rate "$r" --duration "$STEP" 2>/dev/null)
    echo "offered $offered/s"
    echo "  baseline $b"
    acks=$(echo "$b" | field throughput); p99=$(echo "$b" | field p99)
    ok=$(awk -v a="$acks" -v o="$offered" -v p="$p99" 'BEGIN { print (a >= 0.9 * o && p <= 1000) ? 1 : 0 }')
    [[ $ok == 1 ]] || { echo "  -> baseline saturated"; break; }
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
