#!/usr/bin/env bash
# Chaos loop for "exactly once, or told" (the contract's "Start-up, Redis data loss and
# `recovered`"): runs the ignored chaos tests, each ROUNDS rounds of one fault with random
# timing (kill point, outage length, publishes in flight), every round a fresh redis-server
# (or primary + replica + 3 Sentinels) on free loopback ports and three wsgate instances:
#
#   restart_empty     Redis SIGKILLed mid-burst, restarted empty       (tests/exactly_once.rs)
#   aof_always        the same with --appendonly yes --appendfsync always
#   instance_killed   restarted empty, and an instance SIGKILLed during the outage
#   sentinel_failover the Sentinel primary SIGKILLed under load, replica promoted (tests/sentinel.rs)
#
# After each round every client resumes on another instance with since=<last id>. Prints one
# ROUND line per round (scenario, round, accepted, delivered, missing told/silent, duplicated,
# out of order, recovered true/false, resyncs), the failures of a failing round, one TOTAL line
# per scenario and the grand totals.
#
# Usage: benches/chaos.sh                    (50 rounds of each: roughly 40 minutes)
#        ROUNDS=5 benches/chaos.sh           (a short check)
#        ONLY='restart_empty|sentinel' SEED=42 benches/chaos.sh
# Env:   ROUNDS=50, SEED (default: drawn from the clock; printed, repeats a run),
#        ONLY (regex over the scenario names), CARGO_TARGET_DIR (default target/).
# Exit:  0 when no round had a silent gap, a duplicate, an out-of-order event or a harness
#        failure; 1 otherwise (2 if the build failed).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
ROUNDS=${ROUNDS:-50}
SEED=${SEED:-$(date +%s)}
ONLY=${ONLY:-.}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$ROOT/bench-results
RUN=$(date +%Y%m%dT%H%M%S)
mkdir -p "$OUT"
LOG=$OUT/chaos-$RUN.log

echo "chaos.sh: ROUNDS=$ROUNDS SEED=$SEED ONLY=$ONLY log $LOG"
cargo test --release --no-run -q --test exactly_once --test sentinel || exit 2

status=0
# scenario name, test file, test name
while read -r name file test; do
  [[ $name =~ $ONLY ]] || continue
  echo "=== $name ($file::$test)"
  CHAOS_ROUNDS=$ROUNDS CHAOS_SEED=$SEED \
    cargo test --release -q --test "$file" -- --ignored --exact "$test" --nocapture --test-threads 1 \
    2>&1 | tee -a "$LOG" | grep -E '^(ROUND|  |harness_failures|.*seed [0-9]+)' 
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "=== $name: FAILED (exit $rc)"; status=1; }
done <<'EOF'
restart_empty exactly_once chaos_restart_empty
aof_always exactly_once chaos_aof_always
instance_killed exactly_once chaos_instance_killed_in_outage
sentinel_failover sentinel chaos_sentinel_failover
EOF

echo "=== totals (rounds of every scenario run)"
grep -E '^ROUND .*round=[0-9]+ ' "$LOG" | awk '
  {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[2] ~ /^[0-9]+$/) sum[kv[1]] += kv[2] }
    if ($0 ~ /harness_failure=1/) broken++
    rounds++
  }
  END {
    printf "rounds=%d accepted=%d delivered=%d missing_told=%d missing_silent=%d duplicated=%d out_of_order=%d recovered_true=%d recovered_false=%d resyncs=%d harness_failures=%d\n",
      rounds, sum["accepted"], sum["delivered"], sum["missing_told"], sum["missing_silent"], sum["duplicated"],
      sum["out_of_order"], sum["recovered_true"], sum["recovered_false"], sum["resyncs"], broken
    if (sum["missing_silent"] + sum["duplicated"] + sum["out_of_order"] + broken > 0) exit 1
  }' || status=1
exit $status
