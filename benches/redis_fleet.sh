#!/usr/bin/env bash
# What Redis adds: 10,000 subscribers on 1 instance in memory mode, versus the same 10,000
# spread over 2 instances sharing a redis-server, one broadcast every 10 ms (rate 100/s),
# published to the first instance. Prints the load generator's RESULT line for each, the
# CPU used by each gateway and by redis-server during the run, and a short comparison.
#
# Usage: REPS=3 benches/redis_fleet.sh      (ports 9480-9489; run on a quiet machine)
#        GW=path/to/other/wsgate TAG=old REPS=3 benches/redis_fleet.sh   (another build, e.g.
#        the last one before history, to measure what history costs; TAG prefixes the labels)
# For the Redis cases it also reads Redis's own accounting (INFO commandstats): microseconds
# of Redis CPU per event for the command that carries it (EVALSHA of the publish script, or
# PUBLISH for builds before history).
set -u
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
SECRET=bench-secret-redis-fleet-0123456789abcdef
OUT=bench-results/redis_fleet.txt
mkdir -p bench-results
ulimit -n 20000 2>/dev/null || true

cargo build --release -q -p wsgate -p wsgate-loadgen || exit 1
GW=${GW:-target/release/wsgate}
TAG=${TAG:+$TAG-}
LG=target/release/wsgate-loadgen
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done; PIDS=(); }
trap cleanup EXIT
cpu_ticks() { awk '{s=$0; sub(/^.*\) /,"",s); split(s,f," "); print f[12]+f[13]}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

start_gw() { # PORT [REDIS_URL]
  local env=(LISTEN_ADDR=127.0.0.1:$1 JWT_SECRET=$SECRET PUBLISH_RATE_PER_SEC=0 RUST_LOG=warn HEARTBEAT_INTERVAL_MS=500 INSTANCE_ID=bench-$1)
  [ -n "${2:-}" ] && env+=(REDIS_URL=$2)
  env "${env[@]}" $GW > bench-results/gw-$1.log 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$1/live" >/dev/null && return 0; sleep 0.1; done
  echo "gateway on $1 did not start" >&2; return 1
}

run_case() { # LABEL PUB_PORT SUB_PORTS REDIS_PID GW_PIDS...
  local label=$1 pub=$2 subs=$3 rpid=$4; shift 4
  local gws=("$@") c0=() c1=() r0 r1 t0 t1
  for p in "${gws[@]}"; do c0+=($(cpu_ticks $p)); done
  r0=$( [ "$rpid" != 0 ] && cpu_ticks $rpid || echo 0 ); t0=$(date +%s.%N)
  local line
  line=$(timeout 300 $LG --mode bench --addr 127.0.0.1:$pub --sub-addrs "$subs" --conns 10000 \
      --broadcasts 1100 --warmup 100 --window 1024 --rate 100 --pipeline 64 --secret $SECRET \
      --server-pid "${gws[0]}" 2>bench-results/lg-$label.err | grep '^RESULT')
  t1=$(date +%s.%N)
  for p in "${gws[@]}"; do c1+=($(cpu_ticks $p)); done
  r1=$( [ "$rpid" != 0 ] && cpu_ticks $rpid || echo 0 )
  local wall gwcpu="" i
  wall=$(echo "$t1 - $t0" | bc)
  for i in "${!gws[@]}"; do gwcpu+="$(echo "scale=0; (${c1[$i]} - ${c0[$i]}) * 100 / $HZ / $wall" | bc),"; done
  local rcpu; rcpu=$(echo "scale=1; ($r1 - $r0) * 100 / $HZ / $wall" | bc)
  local rstats=""
  if [ "$rpid" != 0 ]; then
    # cmdstat_evalsha:calls=1100,usec=52000,usec_per_call=47.27,... (Redis 7).
    rstats=$(redis-cli -p 9480 INFO commandstats | tr -d '\r' | awk -F'[:,=]' '
      /^cmdstat_(evalsha|publish|xrange):/ { calls[$1]=$3; usec[$1]=$5 }
      END {
        c = ("cmdstat_evalsha" in calls) ? "cmdstat_evalsha" : "cmdstat_publish";
        if (calls[c] > 0) printf "redis_usec_per_event=%.2f redis_event_calls=%d", usec[c] / calls[c], calls[c];
        if ("cmdstat_xrange" in calls) printf " redis_xrange_calls=%d", calls["cmdstat_xrange"];
      }')
  fi
  echo "$TAG$label ${line#RESULT } gateway_cpu_pct=${gwcpu%,} redis_cpu_pct=$rcpu $rstats" | tee -a $OUT
}

for rep in $(seq 1 "$REPS"); do
  # 1 instance, memory mode.
  start_gw 9481 || exit 1
  run_case "memory-1x.r$rep" 9481 127.0.0.1:9481 0 "${PIDS[0]}"
  cleanup

  # 2 instances + Redis.
  redis-server --port 9480 --bind 127.0.0.1 --save "" --appendonly no > bench-results/redis.log 2>&1 &
  RPID=$!; PIDS+=($RPID)
  for _ in $(seq 1 50); do redis-cli -p 9480 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  start_gw 9482 redis://127.0.0.1:9480 || exit 1
  start_gw 9483 redis://127.0.0.1:9480 || exit 1
  for _ in $(seq 1 50); do curl -s http://127.0.0.1:9482/ws/stats | grep -q '"total_instances":2' && break; sleep 0.2; done
  run_case "redis-2x.r$rep" 9482 127.0.0.1:9482,127.0.0.1:9483 "$RPID" "${PIDS[1]}" "${PIDS[2]}"
  cleanup
done

python3 - "$OUT" <<'PY'
import re, statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label = line.split()[0]
    kv = dict(re.findall(r"(\w+)=([^\s]+)", line))
    runs[re.sub(r"\.r\d+$", "", label)].append(kv)
keys = [("deliveries_per_s", "deliveries/s", "{:,.0f}"), ("ttl_p50_ms", "ttl p50 ms", "{:.1f}"),
        ("ttl_p99_ms", "ttl p99 ms", "{:.1f}"), ("lat_p50_us", "lat p50 ms", "{:.2f}"),
        ("lat_p99_us", "lat p99 ms", "{:.2f}"), ("redis_cpu_pct", "redis CPU %", "{:.1f}"),
        ("redis_usec_per_event", "Redis µs/event", "{:.1f}")]
print("| case | runs | " + " | ".join(k[1] for k in keys) + " | gateway CPU % |")
print("|---|---|" + "---|" * (len(keys) + 1))
for case, rs in runs.items():
    vals = []
    for k, _, fmt in keys:
        xs = [float(r[k]) for r in rs if k in r]
        if not xs:
            vals.append("–")
            continue
        v = statistics.median(xs)
        vals.append(fmt.format(v / 1000 if k.startswith("lat_") else v))
    cpu = rs[-1].get("gateway_cpu_pct", "")
    print(f"| {case} | {len(rs)} | " + " | ".join(vals) + f" | {cpu} |")
PY
