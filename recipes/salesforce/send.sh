#!/usr/bin/env bash
# Sends event.json as Salesforce's callout would. KEY: the route's key.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
send salesforce -H "X-API-Key: ${KEY:-recipe-salesforce-key-3f9a}"
