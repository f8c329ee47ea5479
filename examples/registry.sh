#!/usr/bin/env bash
# Serves a local OCI registry on 127.0.0.1:5000 (Debian's docker-registry, data under
# ~/.local/share/skiff/registry) unless one answers there already, builds the example guests
# and pushes them as localhost:5000/skiff/{hello,http,testbed}:v1 with `skiff image`, so the
# manifests in examples/manifests run as they are.
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
examples/build.sh >/dev/null
cargo build --release -q -p skiff
for app in hello http testbed; do
  ref="localhost:5000/skiff/$app:v1"
  target/release/skiff image --root "$data/images" import "examples/build/$app.wasm" "$ref" >/dev/null
  target/release/skiff image --root "$data/images" push "$ref"
done
