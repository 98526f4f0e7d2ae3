#!/usr/bin/env bash
# Reproduces the capture figures of BENCHMARKS.md:
#   bash bench/capture.sh [WORK_DIR]
# Needs a release build (cargo build --release --bin plinth), wrk (installed
# with apt-get when missing) and python3. The load generator runs on the same
# two cores as the server, as a sender on the same machine would.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-/tmp/plinth-capture-bench}"
PLINTH="${PLINTH_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/plinth-target}/release/plinth}"
DURATION="${DURATION:-30s}"
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
rm -rf "$WORK" && mkdir -p "$WORK"
DATA="$WORK/data"
KEY=$("$PLINTH" keys create --data "$DATA" --capture)

echo "== the disk's own fsync rate (4 KiB append + fsync, in the data directory)"
python3 - "$DATA" <<'EOF'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
block, n = b"x" * 4096, 2000
start = time.perf_counter()
for _ in range(n):
    os.write(fd, block)
    os.fsync(fd)
elapsed = time.perf_counter() - start
os.close(fd); os.remove(path)
print(f"disk: {n / elapsed:,.0f} fsyncs/s")
EOF

# Bodies as the SDKs send them: no uuid (the server assigns one), so every
# request stores new events instead of being deduplicated.
python3 - "$KEY" "$WORK" <<'EOF'
import json, sys
key, work = sys.argv[1], sys.argv[2]
def event(i):
    return {"event": "checkout completed", "distinct_id": f"user-{i % 997}",
            "timestamp": "2026-11-01T12:00:00Z",
            "properties": {"$lib": "posthog-python", "$session_id": f"s-{i % 97}",
                           "plan": ["free", "pro", "team"][i % 3], "amount": 10 + i % 90,
                           "$current_url": "https://app.example.com/checkout"}}
with open(f"{work}/batch.json", "w") as f:
    json.dump({"api_key": key, "batch": [event(i) for i in range(100)]}, f)
with open(f"{work}/single.json", "w") as f:
    json.dump({"api_key": key, **event(1)}, f)
EOF
for kind in batch single; do
  cat > "$WORK/$kind.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$WORK/$kind.json"); wrk.body = f:read("*a"); f:close()
EOF
done

# SERVE_ARGS passes settings to the server, e.g. SERVE_ARGS="--flush-interval 1s".
# shellcheck disable=SC2086
"$PLINTH" serve --data "$DATA" --listen 127.0.0.1:8765 ${SERVE_ARGS:-} >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:8765/healthz >/dev/null && break; sleep 0.1; done

counter() { curl -s http://127.0.0.1:8765/metrics | awk -v n="plinth_capture_$1_total" '$1 == n {print $2}'; }
# The server's CPU time (user + system, clock ticks): CPU per event does not
# depend on what else the machine runs, events/s does.
cpu_ticks() { awk '{print $14 + $15}' /proc/$SERVER/stat; }
run() { # kind path connections
  local before_fsyncs before_events before_cpu
  before_fsyncs=$(counter fsyncs); before_events=$(counter events); before_cpu=$(cpu_ticks)
  echo "== $1 requests to $2, $3 connections, $DURATION"
  wrk -t1 -c"$3" -d"$DURATION" --latency -s "$WORK/$1.lua" "http://127.0.0.1:8765$2" \
    | tee "$WORK/$1.wrk" | grep -E "Requests/sec|Non-2xx|Socket errors| 50%| 99%"
  local seconds=${DURATION%s}
  python3 - "$before_fsyncs" "$(counter fsyncs)" "$before_events" "$(counter events)" "$seconds" \
    "$before_cpu" "$(cpu_ticks)" "$(getconf CLK_TCK)" <<'EOF'
import sys
f0, f1, e0, e1, s, c0, c1, hz = map(float, sys.argv[1:])
cpu = (c1 - c0) / hz
print(f"server: {(e1 - e0) / s:,.0f} events/s stored, {(f1 - f0) / s:,.0f} fsyncs/s, "
      f"{cpu / s:.2f} cores busy, {cpu * 1e6 / (e1 - e0):.1f} CPU-µs per event")
EOF
}
# Concurrency is what lets group commit share one fsync among requests;
# single-event senders are measured at two levels of it.
run batch /batch/ 32
run single /capture/ 64
run single /capture/ 256
echo "== server peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER/status)"
kill -TERM $SERVER; wait $SERVER || true
echo "== stored: $("$PLINTH" sql --data "$DATA" --format csv 'SELECT count(*) FROM events' | tail -1) events"
