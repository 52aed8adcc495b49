#!/usr/bin/env bash
# CPU spent per acknowledged frame by each process of the load test (hj212-ingest, Mosquitto,
# the load generator), at a fixed offered load below the ceiling, alternating two ingest
# set-ups in the same run. A CPU-bound machine's ceiling moves with the sum of the three, so
# the ratio of the sums is what a set-up costs in throughput, read with far less noise than
# two ceilings measured minutes apart.
# Each set-up is "NAME=DIR[:ENV=VALUE...]": the binaries in DIR, run with those environment
# variables (for example HJ212_INGEST_QUALITY=false). The set-up "NAME=DIR:baseline" measures
# Mosquitto alone instead: the generator's plain QoS 1 publishers (`mqtt-baseline`, 1 000-byte
# payloads) at the same rate, so that the ratio of the sums estimates ingest's throughput as a
# fraction of what Mosquitto accepts on a CPU-bound machine.
# Usage: ingest/bench/cpu-per-frame.sh CLIENTS RATE SECS ROUNDS SETUP_A SETUP_B
set -euo pipefail
CLIENTS=$1 RATE=$2 SECS=$3 ROUNDS=$4
shift 4
SETUPS=("$@")
here=$(cd "$(dirname "$0")" && pwd)
tick=$(getconf CLK_TCK)
run_one() { # name dir env...
    local name=$1 dir=$2
    shift 2
    (
        export BIN=$dir
        for kv in "$@"; do [[ $kv == baseline ]] || export "${kv?}"; done
        # shellcheck source=common.sh
        source "$here/common.sh"
        start_mosquitto
        baseline=false
        [[ " $* " == *" baseline "* ]] && baseline=true
        if $baseline; then
            sleep 0.5
            INGEST_PID=$$ # no ingest: its figure below is the (idle) shell's, about 0
        else
            start_ingest
            sleep 1
        fi
        i0=$(cpu_ticks "$INGEST_PID") m0=$(cpu_ticks "$MOSQ_PID")
        if $baseline; then
            out=$(/usr/bin/time -f 'loadgen_cpu=%U+%S' "$BIN/hj212-loadgen" mqtt-baseline --broker "127.0.0.1:$MQTT_PORT" \
                --publishers "$CLIENTS" --rate "$RATE" --duration "$SECS" 2>&1)
        else
            out=$(/usr/bin/time -f 'loadgen_cpu=%U+%S' "$BIN/hj212-loadgen" dau --target "127.0.0.1:$INGEST_PORT" \
                --daus "$CLIENTS" --rate "$RATE" --duration "$SECS" 2>&1)
        fi
        i1=$(cpu_ticks "$INGEST_PID") m1=$(cpu_ticks "$MOSQ_PID")
        acks=$(echo "$out" | sed -n 's/.* \(answered\|acked\)=\([0-9]*\).*/\2/p')
        lg=$(echo "$out" | sed -n 's/^loadgen_cpu=\(.*\)$/\1/p' | awk -F+ '{print $1 + $2}')
        p99=$(echo "$out" | sed -n 's/.* p99=\([0-9.]*\)ms.*/\1/p')
        awk -v n="$name" -v a="$acks" -v i=$((i1 - i0)) -v m=$((m1 - m0)) -v l="$lg" -v t="$tick" -v p="$p99" 'BEGIN {
            ig = i / t * 1e6 / a; mq = m / t * 1e6 / a; lgu = l * 1e6 / a
            printf "%-10s acks=%d ingest=%.1fus mosquitto=%.1fus loadgen=%.1fus sum=%.1fus p99=%sms\n", n, a, ig, mq, lgu, ig + mq + lgu, p
        }'
    )
}
for round in $(seq "$ROUNDS"); do
    for setup in "${SETUPS[@]}"; do
        name=${setup%%=*}
        rest=${setup#*=}
        IFS=: read -r -a parts <<<"$rest"
        echo -n "round $round "
        run_one "$name" "${parts[@]}"
    done
done
