#!/usr/bin/env bash
# wsgate vs floor, measured the same way in the same run. See benches/README.md.
#
# Usage: benches/compare.sh
# Env:   REPS=3            repetitions (interleaved: every scenario of rep 1, then rep 2, ...)
#        ONLY=regex        run only scenarios whose name matches (idle, A1, B5, B5p, B4, B4p), e.g. ONLY='^(A1|B5)$'
#        LOADGEN_EXTRA=... extra wsgate-loadgen arguments for every wsgate bench run
#        TMO=180           bound in seconds on each client run
#        NOBUILD=1         skip the builds (use the existing binaries)
#        SECRET=...        JWT secret for wsgate (default: a fixed bench secret)
#        WSGATE=, LOADGEN= other binaries than target/release/{wsgate,wsgate-loadgen}
# Output: raw lines appended to bench-results/raw.txt, logs in bench-results/logs/, and a
#         markdown table from benches/summarize.py for this run.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

REPS=${REPS:-3}
ONLY=${ONLY:-.}
TMO=${TMO:-180}
SECRET=${SECRET:-wsgate-bench-secret-0123456789abcdef}
OUT=$ROOT/bench-results
LOGS=$OUT/logs
RAW=$OUT/raw.txt
RUN=$(date +%Y%m%dT%H%M%S)
IDLE_CONNS=10000
mkdir -p "$LOGS"

ME=compare.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"   # PIDS, stop_pid, check_mem, busy/pcpu/rss, next_port, builds
raise_nofile

# ---- builds
if [ -z "${NOBUILD:-}" ]; then
  build_floor
  build_wsgate
fi
WSGATE=${WSGATE:-$ROOT/target/release/wsgate}
LOADGEN=${LOADGEN:-$ROOT/target/release/wsgate-loadgen}
for b in "$FLOOR_SERVER" "$FLOOR_CLIENT" "$WSGATE" "$LOADGEN"; do
  [ -x "$b" ] || { echo "compare.sh: missing binary $b" >&2; exit 1; }
done

# ---- servers
SPID=
start_server() { # KIND LOG
  local kind=$1 log=$2
  next_port
  if [ "$kind" = floor ]; then
    "$FLOOR_SERVER" --addr "127.0.0.1:$PORT" --buffers small > "$log" 2>&1 &
  else
    env LISTEN_ADDR="127.0.0.1:$PORT" JWT_SECRET="$SECRET" PUBLISH_RATE_PER_SEC=0 LOG_FORMAT=text RUST_LOG=warn \
      "$WSGATE" > "$log" 2>&1 &
  fi
  SPID=$!
  PIDS+=("$SPID")
  wait_listen "$SPID" "$PORT" "$kind server" "$log"
}

# ---- one broadcast run (the method of floor/scripts/bench.sh)
bench_one() { # SCENARIO KIND REP "CLIENT ARGS"
  local sc=$1 kind=$2 rep=$3 cargs=$4
  local tag=$RUN.$sc.$kind.r$rep
  local slog=$LOGS/$tag.srv.log clog=$LOGS/$tag.cli.log tlog=$LOGS/$tag.time
  check_mem
  if ! start_server "$kind" "$slog"; then
    echo "run=$RUN scenario=$sc server=$kind rep=$rep rc=start_failed" >> "$RAW"
    [ -n "$SPID" ] && stop_pid "$SPID" 2
    return
  fi
  local b0 s0 t0 b1 s1 t1
  b0=$(busy); s0=$(pcpu "$SPID"); t0=$(date +%s.%N)
  local TIMEFORMAT="%U %S"
  if [ "$kind" = floor ]; then
    { time timeout "$TMO" "$FLOOR_CLIENT" --addr "127.0.0.1:$PORT" --server-pid "$SPID" $cargs > "$clog" 2>&1 ; } 2> "$tlog"
  else
    { time timeout "$TMO" "$LOADGEN" --mode bench --addr "127.0.0.1:$PORT" --server-pid "$SPID" --secret "$SECRET" \
        $cargs $LOADGEN_EXTRA > "$clog" 2>&1 ; } 2> "$tlog"
  fi
  local crc=$?
  b1=$(busy); s1=$(pcpu "$SPID"); t1=$(date +%s.%N)
  stop_pid "$SPID" 15
  local cl other r
  cl=$(awk '{print $1+$2}' "$tlog" 2>/dev/null)
  other=$(other_cpu "$b0" "$b1" "$t0" "$t1" "$(awk -v s0="$s0" -v s1="$s1" -v cl="${cl:-0}" -v hz="$HZ" 'BEGIN{print (s1-s0)+cl*hz}')")
  r=$(grep '^RESULT' "$clog" | tail -1 | sed 's/^RESULT //')
  local rc=$crc; [ -z "$r" ] && rc=no_result
  echo "run=$RUN scenario=$sc server=$kind rep=$rep rc=$rc $r other_cpu_pct=$other" | tee -a "$RAW" >&2
  sleep 1
}

# ---- one idle-memory run (the method of floor/scripts/idle.sh)
idle_one() { # KIND REP
  local kind=$1 rep=$2 sc=idle
  local tag=$RUN.$sc.$kind.r$rep
  local slog=$LOGS/$tag.srv.log clog=$LOGS/$tag.cli.log
  check_mem
  if ! start_server "$kind" "$slog"; then
    echo "run=$RUN scenario=$sc server=$kind rep=$rep rc=start_failed" >> "$RAW"
    [ -n "$SPID" ] && stop_pid "$SPID" 2
    return
  fi
  sleep 2
  local rss0 rss1 cpid i ok=0 failed=0 secs=0 rc=0 line srvconns=
  rss0=$(rss "$SPID")
  if [ "$kind" = floor ]; then
    "$FLOOR_CLIENT" --mode idle --hold 0 --addr "127.0.0.1:$PORT" --conns "$IDLE_CONNS" --src-base 2 --src-ips 8 --hello > "$clog" 2>&1 &
  else
    "$LOADGEN" --mode idle --hold 300 --addr "127.0.0.1:$PORT" --conns "$IDLE_CONNS" --src-base 2 --src-ips 8 --hello \
      --secret "$SECRET" --timeout 60 > "$clog" 2>&1 &
  fi
  cpid=$!
  PIDS+=("$cpid")
  rc=timeout
  for i in $(seq 1 1800); do
    if grep -q '^READY' "$clog" 2>/dev/null; then rc=0; break; fi
    if ! kill -0 "$cpid" 2>/dev/null; then rc=client_exited; break; fi
    check_mem
    sleep 0.1
  done
  if [ "$rc" = 0 ]; then
    sleep 4
    rss1=$(rss "$SPID")
    line=$(grep '^READY' "$clog" | tail -1)
    ok=$(echo "$line" | grep -o 'conns=[0-9]*' | cut -d= -f2)
    failed=$(echo "$line" | grep -o 'failed=[0-9]*' | cut -d= -f2)
    secs=$(echo "$line" | grep -o 'connect_secs=[0-9.]*' | cut -d= -f2)
    if [ "$kind" = floor ]; then
      srvconns=$(grep -o 'conns=[0-9]*' "$slog" | tail -1 | cut -d= -f2)
    else
      srvconns=$(curl -s --max-time 5 "http://127.0.0.1:$PORT/ws/stats" | grep -o '"local_connections":[0-9]*' | cut -d: -f2)
    fi
  else
    rss1=$(rss "$SPID")
  fi
  stop_pid "$cpid" 10
  stop_pid "$SPID" 15
  local bpc=0
  [ "${ok:-0}" -gt 0 ] && bpc=$(( (rss1 - rss0) * 1024 / ok ))
  echo "run=$RUN scenario=$sc server=$kind rep=$rep rc=$rc conns=$IDLE_CONNS ok=${ok:-0} failed=${failed:-0} server_conns=${srvconns:-?} connect_secs=${secs:-0} server_rss0_kib=$rss0 server_rss_kib=$rss1 bytes_per_conn=$bpc" \
    | tee -a "$RAW" >&2
  sleep 1
}

A1_ARGS="--conns 10000 --broadcasts 110 --warmup 10 --window 1"
B5_ARGS="--conns 1000 --broadcasts 5200 --warmup 200 --window 64"
B4_ARGS="--conns 1000 --broadcasts 10200 --warmup 200 --window 1024 --rate 1000"
# B5p: B5 with the publishes pipelined on the keep-alive connection (64 requests written ahead
# of their responses), as floor-client's triggers are: wsgate only; its reference is floor's B5.
B5P_ARGS="$B5_ARGS --pipeline 64"
# B4p: B4 with pipelined publishes: one request at a time cannot reach 1000/s when each
# round trip takes longer than 1 ms. wsgate only; its reference is floor's B4.
B4P_ARGS="$B4_ARGS --pipeline 64"
LOADGEN_EXTRA=${LOADGEN_EXTRA:-}

echo "== run $RUN: REPS=$REPS ONLY=$ONLY" >&2
for rep in $(seq 1 "$REPS"); do
  # Alternate which server goes first, so slow drift of the machine does not favour one.
  if [ $((rep % 2)) -eq 1 ]; then ORDER="floor wsgate"; else ORDER="wsgate floor"; fi
  for sc in idle A1 B5 B5p B4 B4p; do
    [[ "$sc" =~ $ONLY ]] || continue
    for kind in $ORDER; do
      case $sc in
        idle) idle_one "$kind" "$rep" ;;
        A1) bench_one A1 "$kind" "$rep" "$A1_ARGS" ;;
        B5) bench_one B5 "$kind" "$rep" "$B5_ARGS" ;;
        B5p) [ "$kind" = wsgate ] && bench_one B5p wsgate "$rep" "$B5P_ARGS" ;;
        B4) bench_one B4 "$kind" "$rep" "$B4_ARGS" ;;
        B4p) [ "$kind" = wsgate ] && bench_one B4p wsgate "$rep" "$B4P_ARGS" ;;
      esac
    done
  done
done

python3 "$ROOT/benches/summarize.py" --run "$RUN" "$RAW"
