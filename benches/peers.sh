#!/usr/bin/env bash
# wsgate against the Node.js peer (/work/shared/peers/node-ws: http + ws + ioredis) and floor,
# measured the same way in one run (issue 14, "Leaner sockets"). See benches/README.md,
# section "Against the Node.js peer".
#
# Usage: benches/peers.sh
# Env:   REPS=3             repetitions; servers interleaved per case, their order rotated per rep
#        ONLY=regex         cases to run: idle19k low50 low10 bcast10k high storm
#        SERVERS="wsgate node floor"   servers to run (storm is wsgate only)
#        LOW_SECS=20        measured seconds of low50 / low10
#        HIGH_BROADCASTS=2000   measured broadcasts of high (to 1,000 sockets each)
#        GW_CPU=1 CLIENT_CPU=0   taskset cores of the gateway and of the load generators
#                           (redis-server runs on CLIENT_CPU too)
#        CLIENT_THREADS=1   runtime threads per load-generator process
#        WSGATE_ENV="K=V …" extra environment for wsgate (e.g. WS_READ_BUFFER_BYTES=256)
#        LABEL=wsgate       the name wsgate's lines get (to compare builds: WSGATE=… LABEL=…)
#        ALT=path ALT_LABEL=alt ALT_ENV="K=V …"   a second wsgate build (or the same one with
#                           other settings), run as server kind `alt`: SERVERS="wsgate alt node"
#                           interleaves the two builds like the servers
#        REDIS=1            fan-out cases with a redis-server for wsgate and node (default:
#                           both in memory mode; storm always uses Redis)
#        TMO=600            bound in seconds on each client run
#        NOBUILD=1, SECRET, WSGATE, LOADGEN, SOAK, NODE_HOME (/tmp/wsgate-node-ws)
# Output: raw lines appended to bench-results/peers.txt, logs in bench-results/logs/, then the
#         table of benches/peers.py for this run.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

REPS=${REPS:-3}
ONLY=${ONLY:-.}
TMO=${TMO:-600}
SECRET=${SECRET:-wsgate-bench-secret-0123456789abcdef}
SERVERS=${SERVERS:-wsgate node floor}
LOW_SECS=${LOW_SECS:-20}
GW_CPU=${GW_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
CLIENT_THREADS=${CLIENT_THREADS:-1}
WSGATE_ENV=${WSGATE_ENV:-}
LABEL=${LABEL:-wsgate}
OUT=$ROOT/bench-results
LOGS=$OUT/logs
RAW=$OUT/peers.txt
RUN=$(date +%Y%m%dT%H%M%S)
NODE_SRC=/work/shared/peers/node-ws
NODE_HOME=${NODE_HOME:-/tmp/wsgate-node-ws}
mkdir -p "$LOGS"

ME=peers.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
raise_nofile

if [ -z "${NOBUILD:-}" ]; then
  [[ " $SERVERS " == *" floor "* ]] && build_floor
  build_wsgate
  timeout 3600 cargo build --release -p wsgate-loadgen --bin soak >&2 || exit 1
fi
WSGATE=${WSGATE:-$ROOT/target/release/wsgate}
LOADGEN=${LOADGEN:-$ROOT/target/release/wsgate-loadgen}
SOAK=${SOAK:-$ROOT/target/release/soak}
for b in "$WSGATE" "$LOADGEN" "$SOAK"; do [ -x "$b" ] || { echo "$ME: missing binary $b" >&2; exit 1; }; done
if [[ " $SERVERS " == *" floor "* ]]; then
  for b in "$FLOOR_SERVER" "$FLOOR_CLIENT"; do [ -x "$b" ] || { echo "$ME: missing binary $b" >&2; exit 1; }; done
fi

# The Node peer runs from a copy: its folder is read-only for us, but run.sh's `-w` test is
# true for root, so run in place it would `npm ci` into the shared folder.
if [[ " $SERVERS " == *" node "* ]]; then
  mkdir -p "$NODE_HOME"
  for f in server.js package.json package-lock.json run.sh; do
    cmp -s "$NODE_SRC/$f" "$NODE_HOME/$f" || { cp "$NODE_SRC/$f" "$NODE_HOME/$f" && chmod u+w "$NODE_HOME/$f"; }
  done
  timeout 600 "$NODE_HOME/run.sh" --install-only >&2 || { echo "$ME: npm ci for the Node peer failed" >&2; exit 1; }
fi

PIN_GW="taskset -c $GW_CPU"
PIN_CLI="taskset -c $CLIENT_CPU"

# ---- redis-server (storm; fan-out cases with REDIS=1), never on 6379
RPID= RPORT=
start_redis() { # LOG
  next_port; RPORT=$PORT
  $PIN_CLI redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no > "$1" 2>&1 &
  RPID=$!; PIDS+=("$RPID")
  local i
  for i in $(seq 1 50); do redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && return 0; sleep 0.1; done
  echo "$ME: redis-server did not start (see $1)" >&2; return 1
}

# ---- servers
SPID=
start_server() { # KIND LOG [REDIS_URL]
  local kind=$1 log=$2 redis=${3:-}
  next_port
  case $kind in
    floor) $PIN_GW "$FLOOR_SERVER" --addr "127.0.0.1:$PORT" --buffers small --threads 1 > "$log" 2>&1 & ;;
    node)
      env LISTEN_ADDR="127.0.0.1:$PORT" JWT_SECRET="$SECRET" INSTANCE_ID="node-$PORT" ${redis:+REDIS_URL=$redis} \
        $PIN_GW "$NODE_HOME/run.sh" > "$log" 2>&1 & ;;
    alt)
      # shellcheck disable=SC2086
      env LISTEN_ADDR="127.0.0.1:$PORT" JWT_SECRET="$SECRET" PUBLISH_RATE_PER_SEC=0 LOG_FORMAT=text RUST_LOG=warn \
        ${redis:+REDIS_URL=$redis} ${ALT_ENV:-} $PIN_GW "${ALT:-$WSGATE}" > "$log" 2>&1 & ;;
    *)
      # shellcheck disable=SC2086
      env LISTEN_ADDR="127.0.0.1:$PORT" JWT_SECRET="$SECRET" PUBLISH_RATE_PER_SEC=0 LOG_FORMAT=text RUST_LOG=warn \
        ${redis:+REDIS_URL=$redis} $WSGATE_ENV $PIN_GW "$WSGATE" > "$log" 2>&1 & ;;
  esac
  SPID=$!
  PIDS+=("$SPID")
  wait_listen "$SPID" "$PORT" "$kind server" "$log" || return 1
  if [ -n "$redis" ] && [ "$kind" != floor ]; then # until it is subscribed
    local i
    for i in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/ws/stats" | grep -q '"redis_connected":true' && break; sleep 0.1; done
  fi
}

# Connections the server holds now.
server_conns() { # KIND PORT LOG
  if [ "$1" = floor ]; then
    grep -o 'conns=[0-9]*' "$3" | tail -1 | cut -d= -f2
  else
    curl -s --max-time 5 "http://127.0.0.1:$2/ws/stats" | grep -o '"local_connections":[0-9]*' | cut -d: -f2
  fi
}

order() { # REP: the servers, rotated by rep
  local -a s; read -ra s <<< "$SERVERS"
  local n=${#s[@]} i out=()
  for i in $(seq 0 $((n - 1))); do out+=("${s[$(( (i + $1 - 1) % n ))]}"); done
  echo "${out[@]}"
}
name_of() { case $1 in wsgate) echo "$LABEL" ;; alt) echo "${ALT_LABEL:-alt}" ;; *) echo "$1" ;; esac; }

# ---- one fan-out run: the load generator (wsgate, node) or floor-client (floor)
bench_one() { # CASE KIND REP "LOADGEN ARGS" "FLOOR ARGS"
  local sc=$1 kind=$2 rep=$3 cargs=$4 fargs=$5
  local name; name=$(name_of "$kind")
  local tag=$RUN.$sc.$name.r$rep
  local slog=$LOGS/$tag.srv.log clog=$LOGS/$tag.cli.log tlog=$LOGS/$tag.time
  check_mem
  local redis=
  if [ -n "${REDIS:-}" ] && [ "$kind" != floor ]; then
    start_redis "$LOGS/$tag.redis.log" || { echo "run=$RUN scenario=$sc server=$name rep=$rep rc=redis_failed" >> "$RAW"; return; }
    redis=redis://127.0.0.1:$RPORT
  fi
  if ! start_server "$kind" "$slog" "$redis"; then
    echo "run=$RUN scenario=$sc server=$name rep=$rep rc=start_failed" | tee -a "$RAW" >&2
    [ -n "$SPID" ] && stop_pid "$SPID" 2
    [ -n "$redis" ] && stop_pid "$RPID" 5
    return
  fi
  local b0 s0 t0 b1 s1 t1 r0=0 r1=0
  b0=$(busy); s0=$(pcpu "$SPID"); t0=$(date +%s.%N); [ -n "$redis" ] && r0=$(pcpu "$RPID")
  local TIMEFORMAT="%U %S"
  if [ "$kind" = floor ]; then
    # shellcheck disable=SC2086
    { time timeout "$TMO" $PIN_CLI "$FLOOR_CLIENT" --addr "127.0.0.1:$PORT" --server-pid "$SPID" \
        --threads "$CLIENT_THREADS" $fargs > "$clog" 2>&1 ; } 2> "$tlog"
  else
    # shellcheck disable=SC2086
    { time timeout "$TMO" $PIN_CLI "$LOADGEN" --mode bench --addr "127.0.0.1:$PORT" --server-pid "$SPID" \
        --secret "$SECRET" --threads "$CLIENT_THREADS" --timeout 60 $cargs > "$clog" 2>&1 ; } 2> "$tlog"
  fi
  local crc=$?
  b1=$(busy); s1=$(pcpu "$SPID"); t1=$(date +%s.%N); [ -n "$redis" ] && r1=$(pcpu "$RPID")
  stop_pid "$SPID" 15
  [ -n "$redis" ] && stop_pid "$RPID" 5
  local cl other r
  cl=$(awk '{print $1+$2}' "$tlog" 2>/dev/null)
  other=$(other_cpu "$b0" "$b1" "$t0" "$t1" \
    "$(awk -v a="$s0" -v b="$s1" -v c="$r0" -v d="$r1" -v cl="${cl:-0}" -v hz="$HZ" 'BEGIN{print (b-a)+(d-c)+cl*hz}')")
  r=$(grep '^RESULT' "$clog" | tail -1 | sed 's/^RESULT //')
  local rc=$crc; [ -z "$r" ] && rc=no_result
  echo "run=$RUN scenario=$sc server=$name rep=$rep rc=$rc $r redis=${redis:+1} other_cpu_pct=$other" | tee -a "$RAW" >&2
  sleep 1
}

# ---- idle19k: 4,000 connections (group A, one process), then 15,000 more (group B, two
# processes), each sending one {"type":"ping"}; then group B closes, then group A.
IDLE_A=${IDLE_A:-4000}
IDLE_B=${IDLE_B:-15000}
SETTLE=${SETTLE:-4}
CLOSE_SETTLE=${CLOSE_SETTLE:-5}
idle_client() { # KIND CONNS SRC_BASE SRC_IPS LOG -> sets CPID
  local kind=$1 n=$2 base=$3 ips=$4 log=$5
  if [ "$kind" = floor ]; then
    $PIN_CLI "$FLOOR_CLIENT" --mode idle --hold 0 --addr "127.0.0.1:$PORT" --conns "$n" --src-base "$base" \
      --src-ips "$ips" --threads "$CLIENT_THREADS" --hello > "$log" 2>&1 &
  else
    $PIN_CLI "$LOADGEN" --mode idle --hold 900 --addr "127.0.0.1:$PORT" --conns "$n" --src-base "$base" \
      --src-ips "$ips" --threads "$CLIENT_THREADS" --hello --secret "$SECRET" --timeout 60 > "$log" 2>&1 &
  fi
  CPID=$!; PIDS+=("$CPID")
}
wait_ready() { # LOG PID: 0 once READY, else 1 (the client exited, or 300 s)
  local i
  for i in $(seq 1 3000); do
    grep -q '^READY' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    check_mem
    sleep 0.1
  done
  return 1
}
ready_ok() { grep '^READY' "$1" | tail -1 | grep -o 'conns=[0-9]*' | cut -d= -f2; }
wait_conns() { # KIND LOG N: until the server holds at most N connections (30 s)
  local i c
  for i in $(seq 1 300); do
    c=$(server_conns "$1" "$PORT" "$2"); [ -n "$c" ] && [ "$c" -le "$3" ] && return 0
    sleep 0.1
  done
  return 1
}
idle_one() { # KIND REP
  local kind=$1 rep=$2 sc=idle19k
  local name; name=$(name_of "$kind")
  local tag=$RUN.$sc.$name.r$rep
  local slog=$LOGS/$tag.srv.log
  check_mem
  if ! start_server "$kind" "$slog"; then
    echo "run=$RUN scenario=$sc server=$name rep=$rep rc=start_failed" | tee -a "$RAW" >&2
    [ -n "$SPID" ] && stop_pid "$SPID" 2
    return
  fi
  sleep 2
  local rss0 rss_a=0 rss19=0 rss_closed=0 rss_empty=0 rc=0 ok=0 conns19=? ca cb1 cb2 half=$((IDLE_B / 2))
  rss0=$(rss "$SPID")
  idle_client "$kind" "$IDLE_A" 2 4 "$LOGS/$tag.cliA.log"; ca=$CPID
  if wait_ready "$LOGS/$tag.cliA.log" "$ca"; then
    sleep "$SETTLE"; rss_a=$(rss "$SPID")
    idle_client "$kind" "$half" 10 8 "$LOGS/$tag.cliB1.log"; cb1=$CPID
    idle_client "$kind" "$((IDLE_B - half))" 20 8 "$LOGS/$tag.cliB2.log"; cb2=$CPID
    if wait_ready "$LOGS/$tag.cliB1.log" "$cb1" && wait_ready "$LOGS/$tag.cliB2.log" "$cb2"; then
      sleep "$SETTLE"; rss19=$(rss "$SPID")
      ok=$(( $(ready_ok "$LOGS/$tag.cliA.log") + $(ready_ok "$LOGS/$tag.cliB1.log") + $(ready_ok "$LOGS/$tag.cliB2.log") ))
      [ "$kind" = floor ] && sleep 1 # its count is logged once a second
      conns19=$(server_conns "$kind" "$PORT" "$slog")
      stop_pid "$cb1" 10; stop_pid "$cb2" 10
      wait_conns "$kind" "$slog" "$IDLE_A" || rc=close_timeout
      sleep "$CLOSE_SETTLE"; rss_closed=$(rss "$SPID")
      stop_pid "$ca" 10
      wait_conns "$kind" "$slog" 0 || rc=close_timeout
      sleep "$CLOSE_SETTLE"; rss_empty=$(rss "$SPID")
    else
      rc=clientB_not_ready
    fi
  else
    rc=clientA_not_ready
  fi
  for p in "${PIDS[@]}"; do [ "$p" != "$SPID" ] && [ "$p" != "${RPID:-}" ] && stop_pid "$p" 10; done
  stop_pid "$SPID" 15
  local n=$((IDLE_A + IDLE_B)) bpc=0
  [ "$ok" -gt 0 ] && bpc=$(( (rss19 - rss0) * 1024 / ok ))
  echo "run=$RUN scenario=$sc server=$name rep=$rep rc=$rc conns=$n ok=$ok server_conns=$conns19 \
server_rss0_kib=$rss0 server_rss_a_kib=$rss_a server_rss_kib=$rss19 server_rss_closed_kib=$rss_closed \
server_rss_empty_kib=$rss_empty bytes_per_conn=$bpc \
closed_over_before=$(awk -v a="$rss_closed" -v b="$rss_a" 'BEGIN{printf "%.3f", (b>0)?(a/b):0}') \
empty_over_base=$(awk -v a="$rss_empty" -v b="$rss0" 'BEGIN{printf "%.3f", (b>0)?(a/b):0}')" | tee -a "$RAW" >&2
  sleep 1
}

# ---- storm: 10,000 clients resume at once, `since` 1,000 events old (wsgate, Redis mode)
STORM_CONNS=${STORM_CONNS:-10000}
STORM_BACKLOG=${STORM_BACKLOG:-1000}
STORM_CONC=${STORM_CONC:-5000}
storm_one() { # REP
  local rep=$1 sc=storm name=$LABEL
  local tag=$RUN.$sc.$name.r$rep
  check_mem
  if ! start_redis "$LOGS/$tag.redis.log"; then
    echo "run=$RUN scenario=$sc server=$name rep=$rep rc=redis_failed" | tee -a "$RAW" >&2; return
  fi
  if ! start_server wsgate "$LOGS/$tag.srv.log" "redis://127.0.0.1:$RPORT"; then
    echo "run=$RUN scenario=$sc server=$name rep=$rep rc=start_failed" | tee -a "$RAW" >&2
    [ -n "$SPID" ] && stop_pid "$SPID" 2; stop_pid "$RPID" 5; return
  fi
  timeout "$TMO" $PIN_CLI "$SOAK" --mode resume --addr "127.0.0.1:$PORT" --gateway-pids "$SPID" --redis-pid "$RPID" \
    --conns "$STORM_CONNS" --procs 2 --backlog "$STORM_BACKLOG" --conc "$STORM_CONC" --threads "$CLIENT_THREADS" \
    --secret "$SECRET" --recover-timeout-s 120 > "$LOGS/$tag.cli.log" 2> "$LOGS/$tag.cli.err"
  local rc=$? r
  stop_pid "$SPID" 15; stop_pid "$RPID" 5
  r=$(grep '^SUMMARY' "$LOGS/$tag.cli.log" | tail -1 | sed 's/^SUMMARY //')
  [ -z "$r" ] && rc=no_result
  echo "run=$RUN scenario=$sc server=$name rep=$rep rc=$rc $r" | tee -a "$RAW" >&2
  sleep 1
}

W=$((LOW_SECS))
LOW50="--conns 1000 --rate 50 --duration-s $W --warmup 50 --window 1024 --pipeline 16"
LOW50_F="--conns 1000 --rate 50 --broadcasts $((50 + 50 * W)) --warmup 50 --window 1024"
LOW10="--conns 10000 --rate 10 --duration-s $W --warmup 10 --window 1024 --pipeline 16"
LOW10_F="--conns 10000 --rate 10 --broadcasts $((10 + 10 * W)) --warmup 10 --window 1024"
BCAST="--conns 10000 --broadcasts 110 --warmup 10 --window 1"
HIGH_F="--conns 1000 --broadcasts $((200 + ${HIGH_BROADCASTS:-2000})) --warmup 200 --window 64"
HIGH="$HIGH_F --pipeline 64"

echo "== peers $RUN: REPS=$REPS ONLY=$ONLY SERVERS=$SERVERS gateway on cpu $GW_CPU, clients on cpu $CLIENT_CPU${REDIS:+, Redis mode}" >&2
for rep in $(seq 1 "$REPS"); do
  for sc in idle19k low50 low10 bcast10k high storm; do
    [[ "$sc" =~ $ONLY ]] || continue
    if [ "$sc" = storm ]; then
      [[ " $SERVERS " == *" wsgate "* ]] && storm_one "$rep"
      continue
    fi
    for kind in $(order "$rep"); do
      case $sc in
        idle19k) idle_one "$kind" "$rep" ;;
        low50) bench_one "$sc" "$kind" "$rep" "$LOW50" "$LOW50_F" ;;
        low10) bench_one "$sc" "$kind" "$rep" "$LOW10" "$LOW10_F" ;;
        bcast10k) bench_one "$sc" "$kind" "$rep" "$BCAST" "$BCAST" ;;
        high) bench_one "$sc" "$kind" "$rep" "$HIGH" "$HIGH_F" ;;
      esac
    done
  done
done

python3 "$ROOT/benches/peers.py" --run "$RUN" "$RAW"
