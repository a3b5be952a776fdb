#!/usr/bin/env bash
# Soak (issue 7, item 4): one gateway in memory mode (no Redis) holding CONNS connections
# spread over PROCS client processes, CHURN clients per second closing and reconnecting with
# since=<last id>, a broadcast stream of RATE events per second, for DURATION_S seconds.
# Prints SAMPLE lines (gateway RSS, fds, threads, wsgate_connections), one RESULT line per
# client process and a SUMMARY line; appends them to bench-results/soak.txt. See benches/README.md.
#
# Usage: benches/soak.sh                                  (15,000 conns, 10 minutes)
#        CONNS=1000 DURATION_S=30 WARMUP_S=10 benches/soak.sh   (a short check)
# Env:   CONNS=15000 PROCS=2 CHURN=200 RATE=2 DURATION_S=600 WARMUP_S=60 SAMPLE_S=30
#        OFFLINE_MS=2000 (a churned client stays away a random 0..OFFLINE_MS before resuming)
#        PORT=9520 (the gateway; the next free port is taken if busy), SECRET, NOBUILD=1,
#        CARGO_TARGET_DIR (default target/), GW_ENV="K=V ..." extra gateway environment.
# Exit:  the soak binary's code: 0 ok, 4 a loss/duplicate/unrecovered resume or a client not
#        connected at the end, 5 a worker did not finish, 2 the clients could not connect.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
CONNS=${CONNS:-15000}
PROCS=${PROCS:-2}
CHURN=${CHURN:-200}
RATE=${RATE:-2}
DURATION_S=${DURATION_S:-600}
WARMUP_S=${WARMUP_S:-60}
SAMPLE_S=${SAMPLE_S:-30}
OFFLINE_MS=${OFFLINE_MS:-2000}
PORT=${PORT:-9520}
SECRET=${SECRET:-wsgate-soak-secret-0123456789abcdef}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$ROOT/bench-results
RUN=$(date +%Y%m%dT%H%M%S)
mkdir -p "$OUT/logs"

ulimit -n 20000 2>/dev/null || { echo "soak.sh: cannot raise the open-files limit to 20000" >&2; exit 1; }
if [ $((CONNS / PROCS)) -gt 19000 ]; then echo "soak.sh: at most 19,000 connections per process: raise PROCS" >&2; exit 1; fi
avail=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
if [ "$avail" -lt $((3 * 1024 * 1024)) ]; then echo "soak.sh: MemAvailable ${avail} KiB is below 3 GiB" >&2; exit 1; fi

if [ -z "${NOBUILD:-}" ]; then
  CARGO_TARGET_DIR=$TARGET cargo build --release -q -p wsgate -p wsgate-loadgen --bin wsgate --bin soak || exit 1
fi
GW_BIN=${WSGATE:-$TARGET/release/wsgate}
SOAK_BIN=$TARGET/release/soak

port_busy() { ss -Htan "( sport = :$1 or dport = :$1 )" 2>/dev/null | grep -q .; }
for _ in $(seq 1 20); do port_busy "$PORT" || break; PORT=$((PORT + 1)); done
port_busy "$PORT" && { echo "soak.sh: no free port near $PORT" >&2; exit 1; }

# Only the PIDs started here are ever signalled.
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done; PIDS=(); }
trap cleanup EXIT
trap 'echo "soak.sh: interrupted" >&2; exit 130' INT TERM

# shellcheck disable=SC2086
env LISTEN_ADDR=127.0.0.1:$PORT JWT_SECRET=$SECRET PUBLISH_RATE_PER_SEC=0 RUST_LOG=warn LOG_FORMAT=text \
  INSTANCE_ID=soak HEARTBEAT_INTERVAL_MS=1000 ${GW_ENV:-} "$GW_BIN" > "$OUT/logs/soak-gw-$RUN.log" 2>&1 &
GW=$!; PIDS+=("$GW")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/live" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/live" >/dev/null || { echo "soak.sh: the gateway did not start" >&2; exit 1; }

echo "== soak $RUN: $CONNS conns / $PROCS procs, churn $CHURN/s (away 0-${OFFLINE_MS} ms), $RATE events/s, ${DURATION_S}s (warm-up ${WARMUP_S}s), gateway pid $GW (memory mode) on :$PORT" | tee -a "$OUT/soak.txt"
timeout $((DURATION_S + 1200)) "$SOAK_BIN" --mode soak --addr "127.0.0.1:$PORT" --gateway-pids "$GW" \
  --conns "$CONNS" --procs "$PROCS" --churn "$CHURN" --rate "$RATE" --duration-s "$DURATION_S" \
  --warmup-s "$WARMUP_S" --sample-s "$SAMPLE_S" --offline-ms "$OFFLINE_MS" --secret "$SECRET" 2> "$OUT/logs/soak-client-$RUN.err" \
  | sed -u "s/^/$RUN /" | tee -a "$OUT/soak.txt"
rc=${PIPESTATUS[0]}
if [ -s "$OUT/logs/soak-client-$RUN.err" ]; then
  echo "-- client stderr (first lines of $OUT/logs/soak-client-$RUN.err):"; head -20 "$OUT/logs/soak-client-$RUN.err"
fi
if grep -qiE 'panic|ERROR' "$OUT/logs/soak-gw-$RUN.log"; then
  echo "-- gateway log has errors:"; grep -iE 'panic|ERROR' "$OUT/logs/soak-gw-$RUN.log" | head -10
fi
echo "== soak $RUN exit $rc" | tee -a "$OUT/soak.txt"
exit "$rc"
