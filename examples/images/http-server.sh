#!/bin/sh
# Packs examples/build/http-server (the HTTP example as a static Linux binary, built by
# `build.sh --native`) into a minimal OCI layout in $1 (default examples/build/http-server-oci):
# one layer holding only /http-server, which is the Entrypoint, run as nobody (65534:65534),
# listening on 8080. The same app as the Wasm component build/http.wasm, so a Wasm pod and a
# container pod of one app can be compared.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$(dirname "$here")/build/http-server-oci}
binary=$here/../build/http-server
[ -x "$binary" ] || { echo "http-server.sh: $binary is missing: run examples/build.sh --native" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/rootfs"
cp "$binary" "$work/rootfs/http-server"
rm -rf "$out"
# A numeric user: the image has no /etc/passwd to look a name up in, and runAsNonRoot
# accepts only a numeric one.
python3 "$here/oci_layout.py" "$work/rootfs" "$out" --entrypoint /http-server \
    --user 65534:65534 --port 8080/tcp >/dev/null
echo "$out"
