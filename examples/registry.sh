#!/usr/bin/env bash
# Serves a local OCI registry on 127.0.0.1:5000 (Debian's docker-registry, data under
# ~/.local/share/skiff/registry) unless one answers there already, builds the examples and
# pushes them with `skiff image`, so the manifests in examples/manifests run as they are:
#   localhost:5000/skiff/{hello,http,testbed}:v1      the Wasm guests
#   localhost:5000/skiff/http:v2                      the http guest again, to roll a Deployment to
#   localhost:5000/skiff/busybox:v1                   busybox (images/busybox.sh)
#   localhost:5000/skiff/http-server:v1               the http example as a container (images/http-server.sh)
#   localhost:5000/skiff/debian-web:v1                Debian with lighttpd (images/debian-web.sh)
# The Debian image needs root and about a minute the first time (debootstrap); run as
# another user, the script asks sudo for it. SKIFF names a skiff binary to use instead of
# building target/release/skiff.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${XDG_DATA_HOME:-$HOME/.local/share}/skiff/registry"
if ! curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  command -v docker-registry >/dev/null || { echo "registry.sh: run .ci/deps first (it installs docker-registry)" >&2; exit 1; }
  mkdir -p "$data"
  cat >"$data/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $data/blobs
http:
  addr: 127.0.0.1:5000
YAML
  nohup docker-registry serve "$data/config.yml" >"$data/registry.log" 2>&1 &
  for _ in $(seq 50); do curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && break; sleep 0.1; done
  echo "registry.sh: registry on 127.0.0.1:5000 (log: $data/registry.log)"
fi
# build.sh --native also packs busybox-oci and http-server-oci.
examples/build.sh --native >/dev/null
if [ "$(id -u)" -eq 0 ]; then
  examples/images/debian-web.sh >/dev/null
else
  sudo examples/images/debian-web.sh >/dev/null
fi
if [ -n "${SKIFF:-}" ]; then
  skiff="$SKIFF"
else
  cargo build --release -q -p skiff
  skiff=target/release/skiff
fi
push() {
  local from="$1" ref="localhost:5000/skiff/$2:${3:-v1}"
  # A staging store of the registry's own, not the node's: the images reach nodes by pulls.
  "$skiff" image --data-dir "$data" import "$from" "$ref" >/dev/null
  "$skiff" image --data-dir "$data" push "$ref"
}
for app in hello http testbed; do
  push "examples/build/$app.wasm" "$app"
done
push examples/build/http.wasm http v2
for image in busybox http-server debian-web; do
  push "examples/build/$image-oci" "$image"
done
