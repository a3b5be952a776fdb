#!/usr/bin/env bash
# Reconnect storm (issue 7, item 4): three gateways sharing a redis-server, CONNS clients on
# instance A (over PROCS client processes), a broadcast stream of RATE events per second
# published through instance B; A is SIGKILLed and its clients reconnect to B and C with the
# JS client's backoff (full jitter, initial 500 ms, max 30 s, 15 s connect timeout; see
# clients/js/wsgate.js backoffDelay), resuming with since=<last id>. Prints one RESULT line per
# client process, a SUMMARY (time until all are back, p50/p99 per client, peak CPU of B and C,
# errors, lost/duplicate events) and a CPUTRACE line; appends them to bench-results/storm.txt.
#
# Usage: benches/storm.sh                       (10,000 clients)
#        CONNS=1000 benches/storm.sh            (a short check)
# Env:   CONNS=10000 PROCS=2 RATE=2 BACKOFF_INITIAL_MS=500 BACKOFF_MAX_MS=30000
#        BASE_PORT=9530 (redis on BASE_PORT, A/B/C on the next three), SECRET, NOBUILD=1,
#        CARGO_TARGET_DIR (default target/). Never uses port 6379.
# Exit:  the soak binary's code: 0 ok, 4 loss/duplicates/unrecovered resumes, 5 not all back.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
CONNS=${CONNS:-10000}
PROCS=${PROCS:-2}
RATE=${RATE:-2}
BACKOFF_INITIAL_MS=${BACKOFF_INITIAL_MS:-500}
BACKOFF_MAX_MS=${BACKOFF_MAX_MS:-30000}
BASE_PORT=${BASE_PORT:-9530}
SECRET=${SECRET:-wsgate-storm-secret-0123456789abcdef}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$ROOT/bench-results
RUN=$(date +%Y%m%dT%H%M%S)
mkdir -p "$OUT/logs"

ulimit -n 20000 2>/dev/null || { echo "storm.sh: cannot raise the open-files limit to 20000" >&2; exit 1; }
if [ $((CONNS / PROCS)) -gt 19000 ]; then echo "storm.sh: at most 19,000 connections per process: raise PROCS" >&2; exit 1; fi
avail=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
if [ "$avail" -lt $((3 * 1024 * 1024)) ]; then echo "storm.sh: MemAvailable ${avail} KiB is below 3 GiB" >&2; exit 1; fi

if [ -z "${NOBUILD:-}" ]; then
  CARGO_TARGET_DIR=$TARGET cargo build --release -q -p wsgate -p wsgate-loadgen --bin wsgate --bin soak || exit 1
fi
GW_BIN=${WSGATE:-$TARGET/release/wsgate}
SOAK_BIN=$TARGET/release/soak

port_busy() { ss -Htan "( sport = :$1 or dport = :$1 )" 2>/dev/null | grep -q .; }
for _ in $(seq 1 10); do
  busy=0; for p in 0 1 2 3; do port_busy $((BASE_PORT + p)) && busy=1; done
  [ $busy = 0 ] && break; BASE_PORT=$((BASE_PORT + 4))
done
[ $busy = 0 ] || { echo "storm.sh: no 4 free ports near $BASE_PORT" >&2; exit 1; }
RPORT=$BASE_PORT; PA=$((BASE_PORT + 1)); PB=$((BASE_PORT + 2)); PC=$((BASE_PORT + 3))
[ "$RPORT" = 6379 ] && { echo "storm.sh: refusing port 6379" >&2; exit 1; }

# Only the PIDs started here are ever signalled.
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done; PIDS=(); }
trap cleanup EXIT
trap 'echo "storm.sh: interrupted" >&2; exit 130' INT TERM

redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no > "$OUT/logs/storm-redis-$RUN.log" 2>&1 &
RPID=$!; PIDS+=("$RPID")
for _ in $(seq 1 50); do redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG || { echo "storm.sh: redis-server did not start" >&2; exit 1; }

start_gw() { # NAME PORT -> sets GWPID
  env LISTEN_ADDR=127.0.0.1:$2 JWT_SECRET=$SECRET REDIS_URL=redis://127.0.0.1:$RPORT PUBLISH_RATE_PER_SEC=0 \
    RUST_LOG=warn LOG_FORMAT=text INSTANCE_ID=storm-$1 HEARTBEAT_INTERVAL_MS=1000 \
    "$GW_BIN" > "$OUT/logs/storm-gw-$1-$RUN.log" 2>&1 &
  GWPID=$!; PIDS+=("$GWPID")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$2/live" >/dev/null && return 0; sleep 0.1; done
  echo "storm.sh: gateway $1 did not start" >&2; exit 1
}
start_gw a "$PA"; GA=$GWPID; disown "$GA"  # SIGKILLed on purpose: no job report for it
start_gw b "$PB"; GB=$GWPID
start_gw c "$PC"; GC=$GWPID
for _ in $(seq 1 50); do curl -s "http://127.0.0.1:$PB/ws/stats" | grep -q '"total_instances":3' && break; sleep 0.2; done

echo "== storm $RUN: $CONNS clients / $PROCS procs on A (pid $GA :$PA), $RATE events/s through B (pid $GB :$PB), C (pid $GC :$PC), redis :$RPORT; backoff ${BACKOFF_INITIAL_MS}..${BACKOFF_MAX_MS} ms" | tee -a "$OUT/storm.txt"
timeout 1200 "$SOAK_BIN" --mode storm --addr "127.0.0.1:$PA" --pub-addr "127.0.0.1:$PB" \
  --reconnect-addrs "127.0.0.1:$PB,127.0.0.1:$PC" --gateway-pids "$GA,$GB,$GC" --kill-pid "$GA" \
  --conns "$CONNS" --procs "$PROCS" --rate "$RATE" --backoff-initial-ms "$BACKOFF_INITIAL_MS" \
  --backoff-max-ms "$BACKOFF_MAX_MS" --secret "$SECRET" 2> "$OUT/logs/storm-client-$RUN.err" \
  | sed -u "s/^/$RUN /" | tee -a "$OUT/storm.txt"
rc=${PIPESTATUS[0]}
# A was SIGKILLed by the soak binary: reap it and leave it out of the cleanup.
# (Checked by its command line, so a reused PID is never signalled.)
if ! tr '\0' ' ' 2>/dev/null < "/proc/$GA/cmdline" | grep -q "$GW_BIN"; then
  wait "$GA" 2>/dev/null
  keep=(); for p in "${PIDS[@]}"; do [ "$p" != "$GA" ] && keep+=("$p"); done; PIDS=("${keep[@]}")
fi
if [ -s "$OUT/logs/storm-client-$RUN.err" ]; then
  echo "-- client stderr (first lines of $OUT/logs/storm-client-$RUN.err):"; grep -v '^worker .*PROG' "$OUT/logs/storm-client-$RUN.err" | head -20
fi
for n in b c; do
  if grep -qiE 'panic|ERROR' "$OUT/logs/storm-gw-$n-$RUN.log"; then
    echo "-- gateway $n log has errors:"; grep -iE 'panic|ERROR' "$OUT/logs/storm-gw-$n-$RUN.log" | head -10
  fi
done
echo "== storm $RUN exit $rc" | tee -a "$OUT/storm.txt"
exit "$rc"
