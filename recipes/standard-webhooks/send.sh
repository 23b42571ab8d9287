#!/usr/bin/env bash
# Sends event.json signed as the Standard Webhooks specification says. SECRET: the whsec_ secret.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
secret=${SECRET:-whsec_cmVjaXBlLXN0YW5kYXJkLXdlYmhvb2tzLTVhYTE=}
id=msg_$(date +%s%N); ts=$(date +%s)
key=$(printf '%s' "${secret#whsec_}" | base64 -d | od -An -tx1 | tr -d ' \n')
sig=$(printf '%s.%s.%s' "$id" "$ts" "$body" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key" -binary | base64)
send billing -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig"
