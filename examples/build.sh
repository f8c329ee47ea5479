#!/usr/bin/env bash
# Builds the example guests from source and copies them to examples/build/:
#   hello.wasm     wasi:cli command component (wasm32-wasip2)
#   hello-p1.wasm  the same program as a WASI preview 1 core module (wasm32-wasip1, `_start`)
#   http.wasm      wasi:http proxy component (wasm32-wasip2)
#   testbed.wasm   wasi:cli command component for the node agent's tests (wasm32-wasip2)
#   busybox-oci/   a busybox Linux image (OCI layout) from Debian's busybox-static
# With --native it also builds http-server, the HTTP example as a static Linux binary
# (x86_64-unknown-linux-musl), and http-server-oci/, a minimal image of it. Prints the paths
# of what it built, one a line.
#
# Cargo rebuilds only what changed and files are copied only when they differ, so a second
# run is quick. The guests have their own workspace and target dir (examples/apps/target);
# CARGO_TARGET_DIR from the environment is ignored so the root workspace's is never mixed in.
set -euo pipefail

native=false
for arg in "$@"; do
  case "$arg" in
    --native) native=true ;;
    *) echo "usage: $0 [--native]" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")" && pwd)"
apps="$here/apps"
out="$here/build"
export CARGO_TARGET_DIR="$apps/target"
targets=(wasm32-wasip1 wasm32-wasip2)
$native && targets+=(x86_64-unknown-linux-musl)

# Add the Rust targets that are missing. Without rustup (a distribution's Rust), the
# targets must already be there; cargo says so if not.
if command -v rustup >/dev/null 2>&1; then
  installed="$(rustup target list --installed)"
  missing=()
  for target in "${targets[@]}"; do
    grep -qx "$target" <<<"$installed" || missing+=("$target")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    rustup target add "${missing[@]}" >&2
  fi
fi

cargo=(cargo build --manifest-path "$apps/Cargo.toml" --release --locked)
# http is the library (a cdylib becomes the wasi:http component); its binary is the native
# server and is not built for Wasm.
"${cargo[@]}" --target wasm32-wasip2 --bin hello --bin testbed --lib
"${cargo[@]}" --target wasm32-wasip1 --bin hello
$native && "${cargo[@]}" --target x86_64-unknown-linux-musl --bin http-server

# Refuses to ship something that is not the expected kind of Wasm binary: the magic `\0asm`,
# then version 1 for a core module or the component layer (0d 00 01 00).
check_header() {
  local file="$1" want="$2" header
  header="$(od -An -tx1 -N8 "$file" | tr -d ' \n')"
  if [ "$header" != "$want" ]; then
    echo "build.sh: $file starts with $header, expected $want" >&2
    exit 1
  fi
}
component=0061736d0d000100
core=0061736d01000000

mkdir -p "$out"
copy() {
  local from="$1" to="$out/$2"
  if ! cmp -s "$from" "$to"; then
    cp "$from" "$to.tmp"
    mv "$to.tmp" "$to"
  fi
  echo "$to"
}
release="$CARGO_TARGET_DIR/wasm32-wasip2/release"
check_header "$release/hello.wasm" $component
check_header "$release/http.wasm" $component
check_header "$release/testbed.wasm" $component
check_header "$CARGO_TARGET_DIR/wasm32-wasip1/release/hello.wasm" $core
copy "$release/hello.wasm" hello.wasm
copy "$CARGO_TARGET_DIR/wasm32-wasip1/release/hello.wasm" hello-p1.wasm
copy "$release/http.wasm" http.wasm
copy "$release/testbed.wasm" testbed.wasm
if $native; then
  copy "$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/http-server" http-server
fi
"$here/images/busybox.sh" "$out/busybox-oci"
if $native; then
  "$here/images/http-server.sh" "$out/http-server-oci"
fi
