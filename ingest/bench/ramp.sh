#!/usr/bin/env bash
# Sustained throughput of hj212-ingest (frame in -> PUBACK -> 9014 out) against what Mosquitto
# accepts from plain QoS 1 publishers, alternated step by step in the same run, all on 127.0.0.1.
# The offered rate rises until acks/s stops growing (under 90 % of offered) or p99 > 1 s; then
# both run again at half of the highest sustained ingest load for the latency figures.
# Run from the workspace root after `cargo build --release -p hj212-ingest`.
# Usage: ingest/bench/ramp.sh [CLIENTS] [STEP_SECS] [RATES...]   (rates per client per second)
here=$(dirname "$0")
source "$here/common.sh"
CLIENTS=${1:-200}
STEP=${2:-10}
shift 2 || true
RATES=("$@")
[[ ${#RATES[@]} -gt 0 ]] || RATES=(25 50 75 100 150 200)
start_mosquitto
start_ingest
L="$BIN/hj212-loadgen"
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
best_rate=0; best_acks=0
for r in "${RATES[@]}"; do
    offered=$(awk -v c="$CLIENTS" -v r="$r" 'BEGIN { print c * r }')
    d=$("$L" dau --target "127.0.0.1:$INGEST_PORT" --daus "$CLIENTS" --rate "$r" --duration "$STEP" 2>/dev/null)
    b=$("$L" mqtt-baseline --broker "127.0.0.1:$MQTT_PORT" --publishers "$CLIENTS" --rate "$r" --duration "$STEP" 2>/dev/null)
    echo "offered $offered/s"
    echo "  ingest   $d"
    echo "  baseline $b"
    acks=$(echo "$d" | field throughput); p99=$(echo "$d" | field p99)
    ok=$(awk -v a="$acks" -v o="$offered" -v p="$p99" -v b="$best_acks" 'BEGIN { print (a >= 0.9 * o && p <= 1000 && a > b) ? 1 : 0 }')
    if [[ $ok == 1 ]]; then best_rate=$r; best_acks=$acks; else echo "  -> ingest saturated"; break; fi
done
if [[ $best_rate == 0 ]]; then
    echo "highest sustained: none (the first step already saturated; start lower)"
    echo "ingest VmHWM=$(hwm_kib "$INGEST_PID")KiB; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
fi
half=$(awk -v r="$best_rate" 'BEGIN { print r / 2 }')
echo "highest sustained: $best_acks acks/s at $best_rate/s/client; half load: $half/s/client"
"$L" dau --target "127.0.0.1:$INGEST_PORT" --daus "$CLIENTS" --rate "$half" --duration $((STEP * 2)) 2>/dev/null
"$L" mqtt-baseline --broker "127.0.0.1:$MQTT_PORT" --publishers "$CLIENTS" --rate "$half" --duration $((STEP * 2)) 2>/dev/null
echo "ingest VmHWM=$(hwm_kib "$INGEST_PID")KiB; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
