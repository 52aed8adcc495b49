# Shared by the ingest bench scripts: a private Mosquitto and an hj212-ingest process on free
# loopback ports, with generated configurations, torn down on exit. Source it; needs BIN.
set -euo pipefail
# Raise the fd limit for this shell and its children (the hard limit caps it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
BIN=${BIN:-target/release}
WORK=$(mktemp -d /tmp/hj212-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT_PORT=$(free_port)
INGEST_PORT=$(free_port)
METRICS_PORT=$(free_port)

start_mosquitto() {
    cat > "$WORK/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
max_queued_messages 100000
CONF
    mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
    MOSQ_PID=$!
    PIDS+=("$MOSQ_PID")
}

start_ingest() {
    cat > "$WORK/ingest.toml" <<CONF
shutdown_timeout_secs = 10
[[listeners]]
addr = "127.0.0.1:$INGEST_PORT"
[limits]
max_connections = 12000
max_frames_per_minute_per_mn = 0
[auth]
unknown_mn = "accept"
[mqtt]
host = "127.0.0.1"
port = $MQTT_PORT
embedded = false
[packet_log]
path = ""
[spool]
path = ""
[metrics]
listen = "127.0.0.1:$METRICS_PORT"
[quality]
state_path = ""
[keys]
state_path = "$WORK/keys.json"
[registration]
state_path = "$WORK/registration.json"
CONF
    "$BIN/hj212-ingest" run --config "$WORK/ingest.toml" -q >"$WORK/ingest.log" 2>&1 &
    INGEST_PID=$!
    PIDS+=("$INGEST_PID")
    for _ in $(seq 100); do
        if curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -q '^hj212_ingest_mqtt_connected 1'; then
            return 0
        fi
        sleep 0.1
    done
    echo "ingest did not come up:" >&2
    cat "$WORK/ingest.log" >&2
    return 1
}

# utime+stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
metric() { curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
