#!/usr/bin/env bash
# One instance at growing fleet sizes (issue 12's table): the fleet benchmark on
# Postgres + NATS for each size in SIZES (fresh providers: register, then renew
# once), then the start-up of the largest size with its state already in the
# database (--seed-healthy). Builds once; each run's full report goes to
# target/fleet-scale/<size>.txt and its headline lines to stdout. Extra
# arguments go to every run (e.g. --speed 2000).
#
#   benches/fleet_scale.sh                     # 1k, 10k, 30k, 100k
#   SIZES="1000 10000" benches/fleet_scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="${SIZES:-1000 10000 30000 100000}"
out=target/fleet-scale
mkdir -p "$out"
cargo bench --bench fleet --no-run
headline='registered|renewal lag|renewals? \(first|peak RSS|renewed once|transactions|CPU during|bench process|lapsed|results:'
largest=0
for n in $sizes; do
  (( n > largest )) && largest=$n
  report="$out/$n.txt"
  echo "== $n fresh providers (report: $report)"
  cargo bench --bench fleet -- --providers "$n" --timeout-secs 1800 "$@" > "$report" 2> "$out/$n.log"
  grep -E "$headline" "$report" | head -20
done
report="$out/$largest-healthy.txt"
echo "== $largest providers with their state in the database (report: $report)"
cargo bench --bench fleet -- --seed-healthy --providers "$largest" --timeout-secs 600 "$@" > "$report" 2> "$out/$largest-healthy.log"
grep -E 'scheduled|ready|peak RSS|CPU' "$report" | head -12
