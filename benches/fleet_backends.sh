#!/usr/bin/env bash
# The fleet benchmark on both backends in one run: the embedded SQLite store with
# the in-process bus, then Postgres + NATS, alternating for PAIRS pairs (so a
# drift of the machine hits both alike). Builds once; each run's full report
# goes to target/fleet-backends/<n>-<backend>.txt and its headline lines to
# stdout. Extra arguments go to every run (e.g. --providers 1000).
#
#   benches/fleet_backends.sh            # 1 pair, 10,000 providers
#   PAIRS=2 benches/fleet_backends.sh --providers 1000
set -euo pipefail
cd "$(dirname "$0")/.."
pairs="${PAIRS:-1}"
out=target/fleet-backends
mkdir -p "$out"
cargo bench --bench fleet --no-run
for ((p = 0; p < pairs; p++)); do
  for backend in embedded postgres; do
    report="$out/$p-$backend.txt"
    echo "== pair $p, $backend (report: $report)"
    cargo bench --bench fleet -- --backend "$backend" "$@" > "$report" 2> "$out/$p-$backend.log"
    grep -E 'registered|renewal lag|peak RSS|renewed once' "$report" | head -12
  done
done
