#!/usr/bin/env bash
# Sends event.json signed as GitHub signs it. SECRET: the webhook's secret.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
secret=${SECRET:-recipe-github-secret-9d51}
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" -hex | sed 's/^.* //')
send github -H "X-Hub-Signature-256: sha256=$sig" -H "X-GitHub-Event: issues"
