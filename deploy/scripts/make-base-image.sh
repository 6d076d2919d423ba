#!/usr/bin/env bash
# Builds a minimal local stand-in for node:20-bookworm-slim from this machine's own `node`,
# for hosts where no image registry can be reached (CI here). `docker import` of a root
# filesystem holding: the node binary at /usr/local/bin/node (where the official image has
# it), the shared libraries it and the native addons in node_modules load (ldd), and a
# `node` user with uid/gid 1000 (as in the official image). No shell, no package manager:
# the Dockerfile's `prebuilt` target needs neither.
#
# Prints the image reference on stdout (everything else goes to stderr). The tag is derived
# from the content, so an unchanged node binary reuses the image built before.
#   deploy/scripts/make-base-image.sh            -> flotilla-base:node20.20.2-<hash>
set -euo pipefail

NODE_BIN="$(readlink -f "${NODE_BIN:-$(command -v node)}")"
REPO="${BASE_IMAGE_REPO:-flotilla-base}"
# Libraries the native addons need beyond node's own (classic-level, crc32): librt.
EXTRA_LIBS=(librt.so.1)

libs_of() { ldd "$1" | awk '/=>/ { if ($3 ~ /^\//) print $3 } /^[ \t]*\/lib/ { print $1 }'; }

mapfile -t LIBS < <(
  {
    libs_of "$NODE_BIN"
    for name in "${EXTRA_LIBS[@]}"; do
      p="$(ldconfig -p | awk -v n="$name" '$1 == n && /x86-64|x86_64|AArch64|aarch64/ { print $NF; exit }')"
      [ -n "$p" ] && echo "$p"
    done
  } | sort -u
)

NODE_VERSION="$("$NODE_BIN" --version | tr -d v)"
SCRIPT_HASH="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
CONTENT_HASH="$( { sha256sum "$NODE_BIN" "${LIBS[@]/#/}" | awk '{print $1}'; echo "$SCRIPT_HASH"; } | sha256sum | cut -c1-12)"
REF="${REPO}:node${NODE_VERSION}-${CONTENT_HASH}"

if docker image inspect "$REF" >/dev/null 2>&1; then
  echo "base image $REF exists; reusing it" >&2
  echo "$REF"
  exit 0
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
echo "building base image $REF from $NODE_BIN (${#LIBS[@]} libraries)" >&2
install -D -m 0755 "$NODE_BIN" "$ROOT/usr/local/bin/node"
for lib in "${LIBS[@]}"; do
  # Keep the library's path (and the name a symlink gives it): the loader looks there.
  real="$(readlink -f "$lib")"
  install -D -m 0755 "$real" "$ROOT$lib"
done
mkdir -p "$ROOT/etc" "$ROOT/tmp" "$ROOT/home/node" "$ROOT/usr/bin"
chmod 1777 "$ROOT/tmp"
chown 1000:1000 "$ROOT/home/node"
cat >"$ROOT/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/usr/sbin/nologin
node:x:1000:1000:node:/home/node:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat >"$ROOT/etc/group" <<'GROUP'
root:x:0:
node:x:1000:
nogroup:x:65534:
GROUP
# Names from /etc/hosts (docker writes it) before DNS (docker's embedded resolver).
echo 'hosts: files dns' >"$ROOT/etc/nsswitch.conf"
ln -s /usr/local/bin/node "$ROOT/usr/bin/node"

tar -C "$ROOT" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  --change "ENV NODE_VERSION=${NODE_VERSION}" \
  --change 'CMD ["node"]' \
  --message "flotilla local base: node ${NODE_VERSION} from ${NODE_BIN}" \
  - "$REF" >&2
docker image inspect "$REF" >/dev/null
# Older builds of the base (another node binary, another script) are no longer used.
docker image ls --format '{{.Repository}}:{{.Tag}}' "$REPO" | grep -vxF "$REF" | xargs -r docker image rm >&2 || true
echo "$REF"
