#!/usr/bin/env bash
# Admin API provider list with 100,000 providers in one tenant (plus 20,000 in
# others): response time of the first page and of a page deep in the list (by
# cursor), p50/p99 over N requests each. Runs the debug or release binary
# against a fresh Postgres database on the local server; the providers are
# inserted disabled (one INSERT … SELECT generate_series), so no supervisor runs
# and the numbers are the API's and the store's alone.
#
#   benches/provider_list.sh [target/release/subkeeper] [N=200]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/subkeeper}
n=${2:-200}
db=subkeeper_bench_list_$$
port=$((20000 + $$ % 10000))
token=bench-admin-token-0123456789
server=${SUBKEEPER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432}
psql "$server/postgres" -qc "CREATE DATABASE $db" >/dev/null
dir=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
export SUBKEEPER_DATABASE_URL="$server/$db" SUBKEEPER_ADMIN_TOKEN=$token \
  SUBKEEPER_HTTP_ADDR=127.0.0.1:$port SUBKEEPER_DATA_DIR=$dir \
  SUBKEEPER_SECRET_KEYS=$("$bin" rotate-key --print-new-key) SUBKEEPER_LOG_FILTER=warn
"$bin" migrate >/dev/null
psql "$SUBKEEPER_DATABASE_URL" -q <<'SQL'
INSERT INTO providers (id, tenant_id, kind, display_name, resource, enabled, status, created_at, updated_at)
SELECT gen_random_uuid(), CASE WHEN i <= 100000 THEN 'big' ELSE 'other' || (i % 20) END, 'graph_mail',
       'mailbox ' || i, 'users/m' || i || '/messages', false, 'disabled',
       now() - (i || ' seconds')::interval, now()
FROM generate_series(1, 120000) AS i;
ANALYZE;
SQL
"$bin" run >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port/api/v1/tenants/big/providers"
# A cursor half way: page through 50,000 rows with limit=500 once.
cursor=""
for _ in $(seq 1 100); do
  cursor=$(curl -sf -H "Authorization: Bearer $token" "$url?limit=500${cursor:+&cursor=$cursor}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"])')
done
measure() {
  for _ in $(seq 1 "$n"); do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $token" "$1"
  done | sort -n | awk -v what="$2" '{ t[NR] = $1 * 1000 } END {
    printf "%-34s p50 %6.1f ms  p99 %6.1f ms  (n=%d)\n", what, t[int(NR*0.5)], t[int(NR*0.99)], NR }'
}
measure "$url" "first page (limit 50)"
measure "$url?limit=50&cursor=$cursor" "page after row 50,000 (limit 50)"
measure "$url?limit=500&cursor=$cursor" "page after row 50,000 (limit 500)"
