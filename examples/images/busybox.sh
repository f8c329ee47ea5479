#!/bin/sh
# Builds a busybox image as an OCI layout in $1 (default examples/build/busybox-oci) from
# Debian's busybox-static: a small standard Linux image with a shell, for container pods.
# Further arguments go to oci_layout.py (--entrypoint, --cmd, --env, --workdir, --user);
# without them the image's Cmd is `sh`. Users: root, web (1000), nobody (65534).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../build/busybox-oci}
[ $# -gt 0 ] && shift
busybox=$(command -v busybox) || { echo "busybox.sh: install busybox-static" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/home/nobody"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/sh\nweb:x:1000:1000:web:/home/web:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\nweb:x:1000:\nstaff:x:50:web\n' > "$root/etc/group"
rm -rf "$out"
[ $# -gt 0 ] || set -- --cmd sh
python3 "$here/oci_layout.py" "$root" "$out" "$@" >/dev/null
echo "$out"
