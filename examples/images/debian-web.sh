#!/bin/sh
# Builds a standard distribution image as an OCI layout in $1 (default
# examples/build/debian-web-oci): a minimal Debian root filesystem made with debootstrap from
# the host's release and mirror, updated from its security suite, holding lighttpd from
# Debian's packages. lighttpd runs in the foreground as the container's first process, as
# www-data (33:33), serves /var/www/html on port 8080, logs to stderr and exits on SIGTERM.
# apt and dpkg stay, so the image is a Debian system one can `apt-get install` into;
# documentation, manual pages and translations are left out, as in Debian's slim images.
#
# Needs root (debootstrap does) and the network. A build takes about a minute; when $1 holds
# an image built by this same script (a stamp with its hash and oci_layout.py's), it is
# kept and the script returns at once. Delete $1 to rebuild, for Debian's updates say.
# DEBIAN_SUITE, DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR override what is taken from the host.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$(dirname "$here")/build/debian-web-oci}

# The host's release and its Debian mirrors (deb822 sources or the one-line format).
suite=${DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
[ -n "$suite" ] || { echo "debian-web.sh: no VERSION_CODENAME in /etc/os-release; set DEBIAN_SUITE" >&2; exit 1; }
host_uris() {
    { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }'
      cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
          awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; break } }'
    } | sed 's|/*$||'
}
mirror=${DEBIAN_MIRROR:-$(host_uris | grep '/debian$' | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-$(host_uris | grep '/debian-security$' | head -n 1)}
security=${security:-http://deb.debian.org/debian-security}

stamp=$(cat "$0" "$here/oci_layout.py" | sha256sum | cut -d' ' -f1)
stamp="$stamp $suite $mirror $security"
if [ -f "$out/index.json" ] && [ "$(cat "$out/build.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$out"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "debian-web.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debian-web.sh: install debootstrap (.ci/deps does)" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
# Beside the output rather than in /tmp: the same file system for the final rename, and
# debootstrap needs one where it can run programs and make device nodes.
work=$(mktemp -d "$out.work.XXXXXX")
root=$work/rootfs
cleanup() {
    # A failed debootstrap can leave /proc and /sys mounted in the rootfs: unmount before
    # removing, and never cross into another file system.
    grep -o " $root/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

echo "debian-web.sh: debootstrap $suite from $mirror" >&2
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    exit 1
}

# Keep what dpkg installs from here on slim (Debian's slim images do the same); what
# debootstrap unpacked is trimmed below.
cat >"$root/etc/dpkg/dpkg.cfg.d/excludes" <<'EOF'
# Added by Skiff's examples/images/debian-web.sh: no documentation, manual pages or
# translations; copyright files stay.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
# The release with its updates and security suites, as in Debian's own images.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Installing a daemon starts it; not in a build.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
# lighttpd depends on `systemd-sysv | lsb-base`: debootstrap's --include would take the
# first, systemd (25 MB more with libssl3), where apt is content with lsb-base (12 kB) when
# it is named.
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
echo "debian-web.sh: apt-get upgrade, install lighttpd" >&2
{
    in_root apt-get update -q &&
    in_root apt-get upgrade -y -q &&
    in_root apt-get install -y -q --no-install-recommends lighttpd lsb-base &&
    in_root apt-get clean
} >"$work/apt.log" 2>&1 || {
    tail -n 20 "$work/apt.log" >&2
    exit 1
}
rm "$root/usr/sbin/policy-rc.d"

find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/locale/"* "$root/usr/share/lintian/"*
# Package lists (apt-get update brings them back), logs, backups, and what the container
# runtime provides (devices, hostname, resolver, hosts).
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin \
    "$root/var/log/"*.log "$root/var/log/apt/"* "$root/var/cache/debconf/"*-old "$root/var/lib/dpkg/"*-old \
    "$root/var/cache/ldconfig/aux-cache" "$root/dev/"* "$root/run/"* "$root/tmp/"* \
    "$root/etc/hostname" "$root/etc/resolv.conf"
: >"$root/etc/hosts"

# Debian's lighttpd.conf listens on port 80 and builds its MIME table with a Perl script;
# this configuration is the container's: an unprivileged port, the foreground, logs on the
# container's stderr, and nothing it would have to write to. Without server.errorlog, errors
# go to the inherited descriptor 2; the access log is opened by name, so /dev/stderr must be
# writable by www-data: runc makes it so by giving the container user its stdio pipes.
cat >"$root/etc/lighttpd/skiff.conf" <<'EOF'
# Added by Skiff's examples/images/debian-web.sh: lighttpd as a container's only process.
server.modules = ("mod_accesslog")
server.document-root = "/var/www/html"
server.port = 8080
accesslog.filename = "/dev/stderr"
index-file.names = ("index.html")
mimetype.assign = (
    ".html" => "text/html; charset=utf-8",
    ".txt" => "text/plain; charset=utf-8",
    ".css" => "text/css",
    ".js" => "text/javascript",
    ".json" => "application/json",
    ".png" => "image/png",
    ".svg" => "image/svg+xml",
    "" => "application/octet-stream",
)
EOF
rm -f "$root/var/www/html/"*
version=$(chroot "$root" dpkg-query -W -f '${Version}' lighttpd)
echo "lighttpd $version on Debian $(cat "$root/etc/debian_version")" >"$root/var/www/html/index.html"

echo "debian-web.sh: packing the image" >&2
python3 "$here/oci_layout.py" "$root" "$work/oci" --keep-owners \
    --cmd=/usr/sbin/lighttpd --cmd=-D --cmd=-f --cmd=/etc/lighttpd/skiff.conf \
    --user 33:33 --port 8080/tcp >/dev/null
echo "$stamp" >"$work/oci/build.stamp"
rm -rf "$out"
mv "$work/oci" "$out"
echo "$out"
