#!/bin/sh
# Prints alerts/alertmanager.yml with the receiver URLs replaced, for deployment
# and for tests that run a real Alertmanager against their own webhook:
#
#   SUBKEEPER_PAGE_WEBHOOK_URL=http://127.0.0.1:5001/page \
#   SUBKEEPER_NOTIFY_WEBHOOK_URL=http://127.0.0.1:5001/notify \
#     alerts/render-alertmanager.sh > /tmp/alertmanager.yml
#
# An unset variable leaves its placeholder. POSIX sh and sed only, so it also
# runs inside the busybox-based prom/alertmanager image (see docker-compose.yml).
set -eu

here=$(dirname "$0")
src=${SUBKEEPER_ALERTMANAGER_TEMPLATE:-$here/alertmanager.yml}
page=${SUBKEEPER_PAGE_WEBHOOK_URL:-http://subkeeper-page-receiver.invalid/alerts}
notify=${SUBKEEPER_NOTIFY_WEBHOOK_URL:-http://subkeeper-notify-receiver.invalid/alerts}

# '|' cannot appear unescaped in a URL, so it is a safe sed delimiter; escape
# '&' and '\', which sed would otherwise interpret in the replacement.
escape() { printf '%s' "$1" | sed 's/[\\&|]/\\&/g'; }

sed -e "s|http://subkeeper-page-receiver.invalid/alerts|$(escape "$page")|" \
    -e "s|http://subkeeper-notify-receiver.invalid/alerts|$(escape "$notify")|" \
    "$src"
