# Shell helpers shared by the bench scripts (benches/compare.sh, benches/peers.sh). Source it
# after setting ROOT (the repository) and, optionally, ME (the script's name for messages).
#
# - process bookkeeping: every PID a script starts goes into PIDS; only those are ever
#   signalled (stop_pid, and cleanup on exit);
# - the memory guard: check_mem stops the script when MemAvailable is below MIN_AVAIL_KIB;
# - /proc readings: busy (machine busy ticks), pcpu (a process's utime+stime in ticks, all its
#   threads), rss (VmRSS in KiB), other_cpu (CPU of everything else over a run, % of a core);
# - ports: next_port picks a free port in PORT_LO..PORT_HI (never 6379);
# - builds: build_floor (the read-only floor, or a copy in /tmp), build_wsgate.
ME=${ME:-$(basename "$0")}
MIN_AVAIL_KIB=${MIN_AVAIL_KIB:-$((3 * 1024 * 1024))}
HZ=$(getconf CLK_TCK)

raise_nofile() {
  ulimit -n 20000 2>/dev/null || { echo "$ME: cannot raise the open-files limit to 20000" >&2; exit 1; }
}

# ---- process bookkeeping: only PIDs started here are ever signalled
PIDS=()
forget() { local p=$1 q; local keep=(); for q in "${PIDS[@]}"; do [ "$q" != "$p" ] && keep+=("$q"); done; PIDS=("${keep[@]}"); }
stop_pid() { # PID [grace seconds]: SIGTERM, wait up to the grace period, then SIGKILL
  local p=$1 g=${2:-15} i
  kill "$p" 2>/dev/null
  for i in $(seq 1 $((g * 10))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  forget "$p"
}
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap 'echo "$ME: interrupted" >&2; exit 130' INT TERM

# ---- memory guard
memavail() { awk '/^MemAvailable:/{print $2}' /proc/meminfo; }
check_mem() {
  local a; a=$(memavail)
  if [ "$a" -lt "$MIN_AVAIL_KIB" ]; then
    echo "$ME: MemAvailable ${a} KiB is below $((MIN_AVAIL_KIB / 1024 / 1024)) GiB; stopping" >&2
    exit 1
  fi
}

# ---- /proc readings
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
pcpu() { awk '{s=$0; sub(/^.*\) /,"",s); split(s,f," "); print f[12]+f[13]}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# other_cpu B0 B1 T0 T1 TICKS_OF_OURS: machine busy ticks B0→B1 over wall T0→T1 (date +%s.%N),
# minus the ticks our processes used; % of one core.
other_cpu() {
  awk -v b0="$1" -v b1="$2" -v t0="$3" -v t1="$4" -v ours="$5" -v hz="$HZ" \
    'BEGIN{ d=t1-t0; if (d<=0) {print 0; exit}; printf "%.0f", ((b1-b0)-ours)*100/hz/d }'
}

# ---- ports
PORT_LO=${PORT_LO:-9400}
PORT_HI=${PORT_HI:-9499}
PORT=$((PORT_LO - 1))
port_busy() { ss -Htan "( sport = :$1 or dport = :$1 )" 2>/dev/null | grep -q .; }
next_port() { # sets PORT to the next free port in PORT_LO..PORT_HI
  local i
  for i in $(seq 1 $((PORT_HI - PORT_LO + 1))); do
    PORT=$((PORT + 1)); [ "$PORT" -gt "$PORT_HI" ] && PORT=$PORT_LO
    [ "$PORT" = 6379 ] && continue
    if ! port_busy "$PORT"; then return 0; fi
  done
  echo "$ME: no free port in $PORT_LO-$PORT_HI" >&2; exit 1
}
wait_listen() { # PID PORT NAME LOG: until PORT listens (10 s), or PID exits
  local pid=$1 port=$2 name=$3 log=$4 i
  for i in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then echo "$ME: $name exited at start (see $log)" >&2; return 1; fi
    if ss -Hltn "( sport = :$port )" 2>/dev/null | grep -q .; then return 0; fi
    sleep 0.1
  done
  echo "$ME: $name not listening on $port after 10 s" >&2
  return 1
}

# ---- builds
FLOOR_SRC=${FLOOR_SRC:-/work/shared/floor}
FLOOR_TARGET=${FLOOR_TARGET:-$ROOT/target-floor}
build_floor() {
  echo "== building floor" >&2
  if ! CARGO_TARGET_DIR=$FLOOR_TARGET timeout 1800 cargo build --release --locked --manifest-path "$FLOOR_SRC/Cargo.toml" >&2; then
    echo "== floor --locked build failed; building a copy in /tmp" >&2
    rm -rf /tmp/wsgate-floor-src && mkdir -p /tmp/wsgate-floor-src
    (cd "$FLOOR_SRC" && tar --exclude=./target -cf - .) | (cd /tmp/wsgate-floor-src && tar -xf -) || exit 1
    chmod -R u+w /tmp/wsgate-floor-src
    CARGO_TARGET_DIR=$FLOOR_TARGET timeout 1800 cargo build --release --manifest-path /tmp/wsgate-floor-src/Cargo.toml >&2 || exit 1
  fi
}
build_wsgate() {
  echo "== building wsgate and wsgate-loadgen" >&2
  timeout 3600 cargo build --release -p wsgate -p wsgate-loadgen >&2 || exit 1
}
FLOOR_SERVER=$FLOOR_TARGET/release/floor-server
FLOOR_CLIENT=$FLOOR_TARGET/release/floor-client
