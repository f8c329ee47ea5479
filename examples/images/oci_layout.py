#!/usr/bin/env python3
"""Packs a root filesystem directory into an OCI image layout: one gzip layer, an image
config, a manifest and index.json. The result is reproducible (sorted entries, zero
mtimes, root-owned) so the same rootfs gives the same digest.

    oci_layout.py ROOTFS OUT [--entrypoint ARG]... [--cmd ARG]... [--env K=V]...
                  [--workdir DIR] [--user USER] [--port 8080/tcp] [--keep-owners]

--keep-owners keeps each file's numeric owner and group instead of making everything
root's: for a rootfs built as root by a package manager (debootstrap), where some files
belong to other users (www-data's cache directory, the shadow group's /etc/shadow).

Load it with `skiff image import OUT REF`, then `skiff image push REF`.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import sys
import tarfile


def add_tree(tar, root, keep_owners):
    """Adds everything under root, parents before children, names relative to root."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            entries.append(os.path.join(dirpath, name))
    for path in sorted(entries, key=lambda p: os.path.relpath(p, root).split(os.sep)):
        info = tar.gettarinfo(path, arcname=os.path.relpath(path, root))
        if keep_owners:
            # Names would come from the host's passwd and group, not the rootfs's: leave
            # them out, the numeric ids are what counts.
            info.uname = info.gname = ""
        else:
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
        info.mtime = 0
        if info.isreg():
            with open(path, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(out, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rootfs")
    p.add_argument("out")
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir")
    p.add_argument("--user")
    p.add_argument("--port", action="append", default=[])
    p.add_argument("--keep-owners", action="store_true")
    a = p.parse_args()
    if not os.path.isdir(a.rootfs):
        sys.exit(f"oci_layout.py: {a.rootfs} is not a directory")

    os.makedirs(os.path.join(a.out, "blobs", "sha256"), exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_tree(tar, a.rootfs, a.keep_owners)
    tar_bytes = raw.getvalue()
    layer, layer_size = blob(a.out, gzip.compress(tar_bytes, mtime=0))

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env
    config = {"Env": env}
    if a.entrypoint:
        config["Entrypoint"] = a.entrypoint
    if a.cmd:
        config["Cmd"] = a.cmd
    if a.workdir:
        config["WorkingDir"] = a.workdir
    if a.user:
        config["User"] = a.user
    if a.port:
        config["ExposedPorts"] = {port: {} for port in a.port}
    image_config = {
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()],
        },
    }
    config_digest, config_size = blob(a.out, json.dumps(image_config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = blob(a.out, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": arch, "os": "linux"},
            }
        ],
    }
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True)
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(manifest_digest)


if __name__ == "__main__":
    main()
