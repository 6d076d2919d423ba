#!/usr/bin/env bash
# Makes sure a Docker daemon answers, installing and starting it when absent, for CI and
# fresh Debian machines where we are root. Idempotent: with a running daemon it only checks.
# Also installs what the chaos suite uses on the host: docker-compose (v1 on Debian 12),
# iptables and nsenter (faults are applied inside a container's network namespace).
# Every wait is bounded; the daemon's log goes to $DOCKERD_LOG.
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/flotilla-dockerd.log}"
START_TIMEOUT_S="${DOCKER_START_TIMEOUT_S:-60}"
APT_TIMEOUT_S="${APT_TIMEOUT_S:-600}"

log() { echo "ensure-docker: $*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

daemon_answers() { timeout 10 docker info >/dev/null 2>&1; }

need=()
have dockerd || need+=(docker.io)
have docker || need+=(docker.io)
have docker-compose || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
have iptables || need+=(iptables)
have nsenter || need+=(util-linux)
have tc || need+=(iproute2)

if [ "${#need[@]}" -gt 0 ]; then
  if daemon_answers && have docker-compose && have iptables && have nsenter && have tc; then
    :
  else
    [ "$(id -u)" = 0 ] || { log "missing ${need[*]} and not root: install them (apt-get install ${need[*]})"; exit 1; }
    have apt-get || { log "missing ${need[*]} and no apt-get: install Docker by hand"; exit 1; }
    # Unique names only; apt is fine with repeats but the log is clearer.
    mapfile -t pkgs < <(printf '%s\n' "${need[@]}" | sort -u)
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout "$APT_TIMEOUT_S" apt-get update -qq >&2
    timeout "$APT_TIMEOUT_S" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
  fi
fi

if daemon_answers; then
  exit 0
fi

[ "$(id -u)" = 0 ] || { log "the Docker daemon does not answer and we are not root to start it"; exit 1; }
if pgrep -x dockerd >/dev/null 2>&1; then
  log "dockerd is running but not answering yet; waiting"
else
  log "starting dockerd (log: $DOCKERD_LOG)"
  mkdir -p "$(dirname "$DOCKERD_LOG")"
  # Its own session: it must outlive this script and make's process group.
  setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
fi
for _ in $(seq 1 "$START_TIMEOUT_S"); do
  if daemon_answers; then
    log "Docker is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within ${START_TIMEOUT_S}s; last lines of $DOCKERD_LOG:"
tail -n 20 "$DOCKERD_LOG" >&2 || true
exit 1
