#!/usr/bin/env bash
# Cold build times, as a new user meets them: every crate compiled from scratch
# (registry sources already downloaded) into a fresh target directory, which is
# removed afterwards. Prints wall time, CPU time and peak RSS of each build.
#
#   benches/build-time.sh            # cargo build --release, then cargo test --workspace --no-run
#   benches/build-time.sh dev        # cargo test --workspace --no-run only
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(mktemp -d "${TMPDIR:-/tmp}/subkeeper-cold-XXXXXX")
trap 'rm -rf "$target"' EXIT
cargo fetch --quiet
run() {
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S %M" -o "$target/time" env CARGO_TARGET_DIR="$target" "$@" >/dev/null 2>"$target/log" \
    || { cat "$target/log" >&2; exit 1; }
  t1=$(date +%s.%N)
  read -r user sys rss <"$target/time"
  printf '%-40s wall %6.1f s   cpu %6.1f s   peak rss %5d MiB   target %s\n' \
    "$name" "$(echo "$t1 - $t0" | bc)" "$(echo "$user + $sys" | bc)" "$((rss / 1024))" \
    "$(du -sh "$target" | cut -f1)"
}
if [ "${1:-all}" != dev ]; then
  run "cargo build --release" cargo build --release --locked
fi
run "cargo test --workspace --no-run" cargo test --workspace --no-run --locked
