#!/usr/bin/env bash
# Sends event.json signed as Zendesk signs it. SECRET: the webhook's signing secret.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
secret=${SECRET:-recipe-zendesk-secret-c04e}
ts=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sig=$(printf '%s%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$secret" -binary | base64)
send zendesk -H "X-Zendesk-Webhook-Signature: $sig" -H "X-Zendesk-Webhook-Signature-Timestamp: $ts"
