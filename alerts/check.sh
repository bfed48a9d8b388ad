#!/bin/sh
# Validates the alerting artifacts; exits non-zero on the first failure.
# Needs promtool and amtool on PATH (Debian: prometheus, prometheus-alertmanager);
# installs nothing. Run from anywhere: bash alerts/check.sh
set -eu

cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "rules parse"
promtool check rules alerts/subkeeper.rules.yml

step "rule unit tests"
promtool test rules alerts/tests/*.yml

step "prometheus config (also loads the rules it references)"
promtool check config deploy/prometheus.yml

step "alertmanager config"
amtool check-config alerts/alertmanager.yml

step "alertmanager config with overridden receiver URLs"
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
SUBKEEPER_PAGE_WEBHOOK_URL='http://127.0.0.1:5001/page?token=a&b' \
SUBKEEPER_NOTIFY_WEBHOOK_URL='http://127.0.0.1:5001/notify' \
  sh alerts/render-alertmanager.sh > "$rendered"
grep -q 'url: http://127.0.0.1:5001/page?token=a&b$' "$rendered"
grep -q 'url: http://127.0.0.1:5001/notify$' "$rendered"
if grep -q 'receiver\.invalid/alerts' "$rendered"; then echo "placeholder URL left in rendered config"; exit 1; fi
amtool check-config "$rendered"

step "alertmanager routing"
route() { # expected-receiver labels...
  want=$1; shift
  # amtool warns on stderr that --config.file overrides --alertmanager.url;
  # keep stdout (the receiver) and the exit status, drop that noise.
  amtool config routes test --config.file=alerts/alertmanager.yml \
    --verify.receivers="$want" "$@" 2>/dev/null || {
    echo "routing: $* did not go to $want"; return 1; }
}
route page   alertname=SubkeeperProviderRenewalFailing severity=page tenant=acme provider=p1
route page   alertname=SubkeeperDown severity=page
route notify alertname=SubkeeperProviderNeedsReauth severity=ticket tenant=acme provider=p1
route notify alertname=SubkeeperWebhookSilence severity=warning tenant=acme provider=p1
route notify alertname=SomethingUnlabelled

step "every subkeeper_ metric used is documented in docs/metrics.md"
# Comment lines are skipped: they may speak of families like subkeeper_provider_*.
used=$(cat alerts/subkeeper.rules.yml dashboards/*.json | grep -vE '^[[:space:]]*#' \
  | grep -oE 'subkeeper_[a-z_]+' | sed -E 's/_(bucket|count|sum)$//' | sort -u)
missing=0
for m in $used; do
  if ! grep -q "\`$m\`" docs/metrics.md; then
    echo "undocumented metric: $m"; missing=1
  fi
done
[ "$missing" -eq 0 ]

step "every alert has unit tests and a runbook section its runbook_url points at"
for a in $(sed -nE 's/^[[:space:]]*- alert: ([A-Za-z]+)$/\1/p' alerts/subkeeper.rules.yml); do
  anchor=$(printf '%s' "$a" | tr 'A-Z' 'a-z')
  grep -qE "alertname: $a\$" alerts/tests/*.yml || { echo "no unit test for $a"; exit 1; }
  grep -qx "## $a" docs/runbook.md || { echo "no '## $a' in docs/runbook.md"; exit 1; }
  grep -q "runbook.md#$anchor\"" alerts/subkeeper.rules.yml || { echo "$a: runbook_url is not #$anchor"; exit 1; }
done

printf '\nall alerting checks passed\n'
