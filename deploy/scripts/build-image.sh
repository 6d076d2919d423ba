#!/usr/bin/env bash
# `make image`: builds the Flotilla image on this machine without any registry.
#   1. Docker up (ensure-docker.sh), a local base image (make-base-image.sh) unless
#      BASE_IMAGE is given (e.g. BASE_IMAGE=node:20-bookworm-slim where a registry works).
#   2. deploy/docker/.prebuilt/: dist/ (production folders), proto/, package.json and the
#      production node_modules copied from this checkout's install (`npm ls --omit=dev`),
#      so the build needs no npm registry and native addons match the base's libc.
#   3. The image is tagged with a hash of everything that goes into it; when that tag exists
#      nothing is built. `flotilla:latest` (IMAGE_NAME:latest) always points at the result.
# Prints the image reference on stdout. Needs `make build` (dist/) first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
IMAGE_NAME="${IMAGE_NAME:-flotilla}"
PREBUILT=deploy/docker/.prebuilt
DIST_DIRS=(controller broker shared client cli)

log() { echo "build-image: $*" >&2; }

deploy/scripts/ensure-docker.sh >&2
BASE_IMAGE="${BASE_IMAGE:-$(deploy/scripts/make-base-image.sh)}"

for d in "${DIST_DIRS[@]}"; do
  [ -f "dist/$d/index.js" ] || [ -d "dist/$d" ] || { log "dist/$d missing: run make build first"; exit 1; }
done

# --- 2. the application tree --------------------------------------------------------------
rm -rf "$PREBUILT"
mkdir -p "$PREBUILT/dist" "$PREBUILT/node_modules"
for d in "${DIST_DIRS[@]}"; do
  # Source maps stay: stack traces in container logs point at the .ts lines.
  cp -r "dist/$d" "$PREBUILT/dist/$d"
done
cp -r proto "$PREBUILT/proto"
cp package.json "$PREBUILT/package.json"
ROOT_MODULES="$(cd node_modules && pwd -P)"
# Every production package as installed (nested ones included), without its own nested
# node_modules (those are listed separately when they are production packages too).
count=0
while IFS= read -r pkg; do
  rel="${pkg#"$ROOT_MODULES"/}"
  [ "$rel" != "$pkg" ] || continue  # the project itself
  mkdir -p "$PREBUILT/node_modules/$rel"
  tar -C "$pkg" --exclude=./node_modules -cf - . | tar -C "$PREBUILT/node_modules/$rel" -xf -
  count=$((count + 1))
done < <(cd "$ROOT_MODULES/.." && npm ls --omit=dev --all --parseable 2>/dev/null | sed "s|^$(pwd -P)/node_modules|$ROOT_MODULES|")
[ "$count" -gt 0 ] || { log "npm ls found no production packages"; exit 1; }
log "prepared $PREBUILT: ${#DIST_DIRS[@]} dist folders, $count production packages ($(du -sh "$PREBUILT" | cut -f1))"

# --- 3. build unless this exact content was built before ------------------------------------
HASH="$(
  {
    echo "base=$BASE_IMAGE"
    find deploy/docker .dockerignore -type f -print0 \
      | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
)"
REF="$IMAGE_NAME:$HASH"
if docker image inspect "$REF" >/dev/null 2>&1; then
  log "$REF is up to date; nothing to build"
else
  log "building $REF from base $BASE_IMAGE"
  # The `prebuilt` target comes before the from-source stages, so the classic builder
  # (which builds every stage up to the target) never runs npm; BuildKit via buildx when
  # present, the classic builder otherwise (docker.io has no buildx on Debian 12).
  if docker buildx version >/dev/null 2>&1; then
    docker buildx build --load --target prebuilt --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      -f deploy/docker/Dockerfile -t "$REF" . >&2
  else
    DOCKER_BUILDKIT=0 docker build --target prebuilt --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      -q -f deploy/docker/Dockerfile -t "$REF" . >&2 2> >(grep -v -e DEPRECATED -e 'legacy builder' -e 'BuildKit' -e 'buildx' -e 'environment-variable' -e '^$' >&2)
  fi
  docker image inspect "$REF" >/dev/null
fi
docker tag "$REF" "$IMAGE_NAME:latest"
# Images of earlier content are no longer referenced by anything.
docker image ls --format '{{.Repository}}:{{.Tag}}' "$IMAGE_NAME" | grep -vxF -e "$REF" -e "$IMAGE_NAME:latest" | xargs -r docker image rm >&2 || true
echo "$REF"
