#!/usr/bin/env bash
# docker compose v2 when the plugin is there, else docker-compose v1 (what Debian 12 ships).
# The compose files are valid for both. Arguments are passed through.
set -euo pipefail
if docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose "$@"
fi
echo "compose.sh: neither 'docker compose' nor 'docker-compose' found (deploy/scripts/ensure-docker.sh installs it)" >&2
exit 1
