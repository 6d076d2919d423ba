#!/usr/bin/env bash
# Waits (bounded) until the compose cluster answers from the host: a controller leader and
# every broker registered and unfenced, through the published ports. Then prints the
# cluster as `flotilla cluster describe` sees it.
#   FLOTILLA_BOOTSTRAP  addresses to ask (default: the compose file's published ports)
#   BROKERS             brokers expected (default 3); WAIT_TIMEOUT_S (default 90)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export FLOTILLA_BOOTSTRAP="${FLOTILLA_BOOTSTRAP:-127.0.0.1:9093,127.0.0.1:9094,127.0.0.1:9095,127.0.0.1:9193,127.0.0.1:9194,127.0.0.1:9195}"
BROKERS="${BROKERS:-3}"
WAIT_TIMEOUT_S="${WAIT_TIMEOUT_S:-90}"
CLI=(node dist/cli/main.js --timeout-ms 3000)

deadline=$((SECONDS + WAIT_TIMEOUT_S))
while [ "$SECONDS" -lt "$deadline" ]; do
  if json="$("${CLI[@]}" cluster describe --json 2>/dev/null)" &&
    echo "$json" | node -e '
      const c = JSON.parse(require("fs").readFileSync(0, "utf8"));
      const live = c.brokers.filter((b) => !b.fenced).length;
      process.exit(c.controllerId > 0 && live >= Number(process.argv[1]) ? 0 : 1);' "$BROKERS"; then
    "${CLI[@]}" cluster describe
    exit 0
  fi
  sleep 1
done
echo "compose-wait: the cluster at $FLOTILLA_BOOTSTRAP was not ready (leader + $BROKERS unfenced brokers) within ${WAIT_TIMEOUT_S}s" >&2
"${CLI[@]}" cluster describe >&2 || true
exit 1
