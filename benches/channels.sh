#!/usr/bin/env bash
# Channel routing: what sending each channel event only to the instances with subscribers saves
# over broadcast-all routing (every instance gets every channel event and filters locally).
#
# Per case and repetition: a fresh redis-server on 127.0.0.1:9580 and 3 gateways on 9581-9583
# sharing it; `wsgate-loadgen --mode channels` opens CONNS subscribers round-robin over the 3,
# each joining about CHANS_PER_CONN of CHANNELS channels (Zipf-like popularity, subscribers of a
# channel clustered on a home instance: most channels live on 1 or 2 instances, the popular ones
# on all 3), then publishes RATE events/s for SECS seconds through the first gateway, each to a
# channel picked uniformly (PICK=zipf: by popularity). The load generator measures over the
# publish window (first publish -> last expected delivery): deliveries, latency, the CPU of each
# gateway and of redis-server (/proc/<pid>/stat), and the deltas of each gateway's
# wsgate_redis_messages_received_total. Cases, interleaved REPS times:
#   routed         the current build (channel events on websocket:ch:{name}, per channel)
#   broadcast-all  GW: the build of 93c6ff9 (channel events on websocket:broadcast:all)
#
# Usage: REPS=2 benches/channels.sh
#   GW=/work/main/target-bcast/release/wsgate   baseline binary (default: that path); build it with
#       git worktree add /tmp/wsgate-bcast 93c6ff9
#       (cd /tmp/wsgate-bcast && CARGO_TARGET_DIR=/work/main/target-bcast cargo build --release -p wsgate)
#   CONNS=6000 CHANNELS=1000 CHANS_PER_CONN=2 RATE=200 SECS=20 PICK=uniform ZIPF=0.8 LOCALITY=0.9
#   HB=1000 (HEARTBEAT_INTERVAL_MS of the gateways; presence is written every period), EVENTS (default RATE*SECS)
#   TABLE=<run id>: only print the table of a run stored in bench-results/channels.txt
#   NOBUILD=1 (use the binaries in $CARGO_TARGET_DIR as they are), ONLY=routed|broadcast-all
# Output: bench-results/channels.txt (one line per run, tagged with the run id) and a table.
set -u
cd "$(dirname "$0")/.."
REPS=${REPS:-2}
CONNS=${CONNS:-6000}
CHANNELS=${CHANNELS:-1000}
CHANS_PER_CONN=${CHANS_PER_CONN:-2}
RATE=${RATE:-200}
SECS=${SECS:-20}
PICK=${PICK:-uniform}
ZIPF=${ZIPF:-0.8}
LOCALITY=${LOCALITY:-0.9}
ONLY=${ONLY:-}
HB=${HB:-1000}
EVENTS=${EVENTS:-$((RATE * SECS))}
SECRET=bench-secret-channels-0123456789abcdef
RPORT=9580
PORTS=(9581 9582 9583)
OUT=bench-results/channels.txt
RUN=$(date -u +%Y%m%dT%H%M%S)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-bench}
mkdir -p bench-results
ulimit -n 20000 2>/dev/null || true

table() { # RUN_ID: the table of that run's lines in $OUT
python3 - "$OUT" "$1" <<'PY'
import re, statistics, sys, collections
path, run = sys.argv[1], sys.argv[2]
runs = collections.OrderedDict()
for line in open(path):
    f = line.split()
    if len(f) < 2 or f[0] != run:
        continue
    kv = dict(re.findall(r"(\w+)=([^\s]+)", line))
    runs.setdefault(re.sub(r"\.r\d+$", "", f[1]), []).append(kv)
def med(rs, k, scale=1.0):
    xs = [float(r[k]) * scale for r in rs if k in r and r[k] not in ("nan", "NaN")]
    return statistics.median(xs) if xs else None
def fmt(v, spec):
    return "–" if v is None else format(v, spec)
cols = [
    ("redis msgs/event", lambda rs: fmt(med(rs, "redis_msgs_per_event"), ".2f")),
    ("predicted", lambda rs: fmt(med(rs, "inst_per_event"), ".2f")),
    ("gateway CPU % (9581 / 9582 / 9583)", lambda rs: " / ".join(
        fmt(statistics.median(float(r["gw_cpu_pct"].split(",")[i]) for r in rs if "gw_cpu_pct" in r), ".1f")
        for i in range(3)) if any("gw_cpu_pct" in r for r in rs) else "–"),
    ("gateways sum %", lambda rs: fmt(med(rs, "gw_cpu_sum_pct"), ".1f")),
    ("redis CPU %", lambda rs: fmt(med(rs, "redis_cpu_pct"), ".1f")),
    ("EVALSHA µs/call", lambda rs: fmt(med(rs, "redis_evalsha_usec_per_call"), ".1f")),
    ("HSET/s", lambda rs: fmt(statistics.median(float(r.get("redis_hset_calls", 0)) / float(r["redis_stats_s"])
                                                for r in rs if "redis_stats_s" in r) if rs else None, ".0f")),
    ("delivered / expected", lambda rs: ", ".join(f"{r.get('delivered','?')}/{r.get('expected','?')}" for r in rs)),
    ("dupes, misrouted", lambda rs: ", ".join(f"{r.get('dupes','?')},{r.get('misrouted','?')}" for r in rs)),
    ("lat p50 ms", lambda rs: fmt(med(rs, "lat_p50_us", 1e-3), ".2f")),
    ("lat p99 ms", lambda rs: fmt(med(rs, "lat_p99_us", 1e-3), ".2f")),
    ("publish RTT p50 ms", lambda rs: fmt(med(rs, "pub_p50_us", 1e-3), ".2f")),
    ("events/s", lambda rs: fmt(med(rs, "pub_rate"), ".1f")),
    ("client CPU %", lambda rs: fmt(med(rs, "client_cpu_pct"), ".0f")),
    ("other CPU %", lambda rs: fmt(med(rs, "other_cpu_pct"), ".1f")),
]
print(f"\nrun {run}: medians over the runs of each case (delivered, dupes: every run)\n")
print("| case | runs (rc 0) | " + " | ".join(c[0] for c in cols) + " |")
print("|---|---|" + "---|" * len(cols))
for case, rs in runs.items():
    ok = sum(1 for r in rs if r.get("rc") == "0")
    print(f"| {case} | {len(rs)} ({ok}) | " + " | ".join(c[1](rs) for c in cols) + " |")
noisy = [f"{case}: {r.get('other_cpu_pct')}" for case, rs in runs.items() for r in rs
         if float(r.get("other_cpu_pct", 0)) > 15]
if noisy:
    print("\nWARNING: other processes used more than 15 % of a core during these runs (" + ", ".join(noisy)
          + "): CPU and latency figures are not a measurement of a quiet machine.")
PY
}

if [ -n "${TABLE:-}" ]; then table "$TABLE"; exit; fi

if [ -z "${NOBUILD:-}" ]; then
  cargo build --release -q -p wsgate -p wsgate-loadgen || {
    echo "build failed (set NOBUILD=1 to use the binaries already in $CARGO_TARGET_DIR)" >&2; exit 1; }
fi
ROUTED=${ROUTED:-$CARGO_TARGET_DIR/release/wsgate}
GW=${GW:-$PWD/target-bcast/release/wsgate}
LG=$CARGO_TARGET_DIR/release/wsgate-loadgen
for b in "$ROUTED" "$GW" "$LG"; do
  [ -x "$b" ] || { echo "missing binary $b (see the usage at the top of $0)" >&2; exit 1; }
done
# Nobody may be on our ports (in particular no other redis-server: we would measure it).
for p in $RPORT "${PORTS[@]}"; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is in use; stopping" >&2; exit 1; fi
done

PIDS=()
# Stops every process this script started (by PID: SIGTERM, then SIGKILL after 5 s).
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  PIDS=()
}
forget() { # PID: it has been waited for
  local p keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_fleet() { # GATEWAY_BINARY
  redis-server --port $RPORT --bind 127.0.0.1 --save "" --appendonly no > bench-results/channels-redis.log 2>&1 &
  RPID=$!; PIDS+=($RPID)
  for _ in $(seq 1 50); do redis-cli -p $RPORT ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  redis-cli -p $RPORT ping 2>/dev/null | grep -q PONG || { echo "redis-server did not start" >&2; return 1; }
  GWPIDS=()
  local p
  for p in "${PORTS[@]}"; do
    env LISTEN_ADDR=127.0.0.1:$p JWT_SECRET=$SECRET REDIS_URL=redis://127.0.0.1:$RPORT PUBLISH_RATE_PER_SEC=0 \
        RUST_LOG=warn HEARTBEAT_INTERVAL_MS=$HB INSTANCE_ID=bench-$p MAX_CHANNELS_PER_CONNECTION=64 \
        "$1" > bench-results/channels-gw-$p.log 2>&1 &
    PIDS+=($!); GWPIDS+=($!)
  done
  for p in "${PORTS[@]}"; do
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p/live" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$p/live" >/dev/null || { echo "gateway on $p did not start" >&2; return 1; }
  done
  for _ in $(seq 1 50); do
    curl -s "http://127.0.0.1:${PORTS[0]}/ws/stats" | grep -q '"total_instances":3' && return 0; sleep 0.2
  done
  echo "the 3 gateways never saw each other" >&2; return 1
}

# Redis's own accounting from READY to the end of the load generator (so without the joins):
# calls and µs per call of the publish script (EVALSHA; its PUBLISH and XREVRANGE are counted
# on their own too) and of the presence writes (HSET, PEXPIRE; routed build only).
redis_stats() {
  redis-cli -p $RPORT INFO commandstats | tr -d '\r' | awk -F'[:,=]' '
    /^cmdstat_(evalsha|publish|hset|pexpire|subscribe|xrevrange):/ { sub(/^cmdstat_/, "", $1); printf "redis_%s_calls=%d redis_%s_usec_per_call=%s ", $1, $3, $1, $7 }'
}

run_case() { # LABEL GATEWAY_BINARY
  local label=$1 line rc
  start_fleet "$2" || { cleanup; return 1; }
  local subs; subs=$(printf '127.0.0.1:%s,' "${PORTS[@]}"); subs=${subs%,}
  local pids; pids=$(IFS=,; echo "${GWPIDS[*]}")
  timeout -k 5 300 "$LG" --mode channels --addr 127.0.0.1:${PORTS[0]} --sub-addrs "$subs" --conns "$CONNS" \
      --channels "$CHANNELS" --chans-per-conn "$CHANS_PER_CONN" --zipf "$ZIPF" --locality "$LOCALITY" \
      --pick "$PICK" --broadcasts "$EVENTS" --warmup 0 --rate "$RATE" --secret $SECRET \
      --server-pids "$pids" --redis-pid "$RPID" --timeout 30 \
      > bench-results/channels-lg.out 2> bench-results/channels-lg-$label.err &
  local lg=$! t0 t1
  PIDS+=($lg)
  # Redis's counters from the moment every subscriber is ready (the publish window and ~1 s).
  while kill -0 $lg 2>/dev/null && ! grep -q '^READY' bench-results/channels-lg.out; do sleep 0.1; done
  redis-cli -p $RPORT CONFIG RESETSTAT >/dev/null; t0=$(date +%s.%N)
  wait $lg; rc=$?
  t1=$(date +%s.%N)
  forget $lg
  grep '^DIST' bench-results/channels-lg.out | head -1 > bench-results/channels-dist.txt
  line=$(grep '^RESULT' bench-results/channels-lg.out)
  [ -n "$line" ] || line="RESULT failed=1"
  echo "$RUN $label rc=$rc hb_ms=$HB ${line#RESULT } redis_stats_s=$(echo "$t1 - $t0" | bc) $(redis_stats)" | tee -a $OUT
  [ $rc -eq 0 ] || { echo "  (rc=$rc; stderr in bench-results/channels-lg-$label.err:)" >&2; tail -5 bench-results/channels-lg-$label.err >&2; }
  cleanup
}

echo "run $RUN: $CONNS conns, $CHANNELS channels, ~$CHANS_PER_CONN per conn, $EVENTS events at $RATE/s, pick=$PICK, REPS=$REPS"
echo "routed: $ROUTED ($(date -r "$ROUTED" -u +%FT%TZ))   broadcast-all: $GW"
for rep in $(seq 1 "$REPS"); do
  # Alternate the order, so that drift over the run does not favour one case.
  if [ $((rep % 2)) -eq 1 ]; then order=(routed broadcast-all); else order=(broadcast-all routed); fi
  for c in "${order[@]}"; do
    [ -n "$ONLY" ] && [ "$c" != "$ONLY" ] && continue
    if [ "$c" = routed ]; then run_case "routed.r$rep" "$ROUTED"; else run_case "broadcast-all.r$rep" "$GW"; fi
  done
done
echo
cat bench-results/channels-dist.txt

table "$RUN"
