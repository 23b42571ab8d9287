#!/usr/bin/env bash
# Sends event.json signed as HubSpot v3 signs it. SECRET: the app's client secret; PUBLIC_URL: the
# route's public_url.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
secret=${SECRET:-recipe-hubspot-secret-71c2}
uri="${PUBLIC_URL:-https://patchbay.example.com}/v1/hooks/hubspot"
ts=$(($(date +%s) * 1000))
sig=$(printf 'POST%s%s%s' "$uri" "$body" "$ts" | openssl dgst -sha256 -hmac "$secret" -binary | base64)
send hubspot -H "X-HubSpot-Signature-v3: $sig" -H "X-HubSpot-Request-Timestamp: $ts"
