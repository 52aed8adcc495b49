#!/usr/bin/env bash
# 10 000 concurrent DAU connections against hj212-ingest (separate process) and Mosquitto, all on
# 127.0.0.1: connect, then each DAU sends one 2011 (A=1) every 1/RATE s for DURATION s, while
# ingest's VmRSS and CPU are sampled. Run from the workspace root after
#   cargo build --release -p hj212-ingest
# Usage: ingest/bench/conn10k.sh [DAUS] [RATE] [DURATION]
here=$(dirname "$0")
source "$here/common.sh"
DAUS=${1:-10000}
RATE=${2:-0.1}
DURATION=${3:-30}
start_mosquitto
start_ingest
echo "fd limit $(ulimit -n); ingest pid $INGEST_PID; rss at idle $(rss_kib "$INGEST_PID") KiB"
"$BIN/hj212-loadgen" dau --target "127.0.0.1:$INGEST_PORT" --daus "$DAUS" --rate "$RATE" --duration "$DURATION" \
    >"$WORK/loadgen.out" 2>"$WORK/loadgen.err" &
LG=$!
PIDS+=("$LG")
hz=$(getconf CLK_TCK)
# Wait for the connect phase to finish (the loadgen prints it), then sample during the hold.
for _ in $(seq 1200); do grep -q '^connected' "$WORK/loadgen.err" && break; sleep 0.1; done
cat "$WORK/loadgen.err"
c0=$(cpu_ticks "$INGEST_PID"); a0=$(metric hj212_ingest_mqtt_acked_total || echo 0); t0=$(date +%s.%N)
max_rss=0; max_conns=0
while kill -0 "$LG" 2>/dev/null; do
    r=$(rss_kib "$INGEST_PID"); n=$(metric hj212_ingest_connections_open || echo 0)
    (( r > max_rss )) && max_rss=$r
    (( ${n%.*} > max_conns )) && max_conns=${n%.*}
    if [[ -n "${lastprint:-}" && $(( SECONDS - lastprint )) -lt 5 ]]; then :; else
        echo "t=${SECONDS}s connections_open=$n VmRSS=${r}KiB"; lastprint=$SECONDS
    fi
    # CPU over the sending window only.
    if grep -q . "$WORK/loadgen.out" 2>/dev/null; then break; fi
    if awk -v t0="$t0" -v d="$DURATION" -v now="$(date +%s.%N)" 'BEGIN { exit !(now - t0 <= d) }'; then
        c1=$(cpu_ticks "$INGEST_PID"); a1=$(metric hj212_ingest_mqtt_acked_total || echo "$a0"); t1=$(date +%s.%N)
    fi
    sleep 1
done
wait "$LG" || true
cat "$WORK/loadgen.out"
awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$hz" -v a0="$a0" -v a1="$a1" \
    'BEGIN { printf "ingest CPU over the hold: %.1f %% of one core; mqtt acked %.0f/s\n", 100*(c1-c0)/hz/(t1-t0), (a1-a0)/(t1-t0) }'
echo "ingest peak connections_open=$max_conns peak sampled VmRSS=${max_rss}KiB VmHWM=$(hwm_kib "$INGEST_PID")KiB"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
