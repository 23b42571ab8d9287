# Shared by every recipe's send.sh: where Patchbay listens, and how an answer is shown.
# PATCHBAY_URL: the gateway (default http://127.0.0.1:8080).
PATCHBAY_URL=${PATCHBAY_URL:-http://127.0.0.1:8080}
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
# The event exactly as the CRM sends it: signatures cover these bytes.
body=$(cat "$here/event.json")
# POSTs the event to route $1 with the remaining arguments as curl options; prints the answer and
# fails unless Patchbay answered 2xx.
send() {
  local route=$1; shift
  curl -sS --fail-with-body -H 'Content-Type: application/json' "$@" \
    --data-binary "$body" "$PATCHBAY_URL/v1/hooks/$route"
  echo
}
