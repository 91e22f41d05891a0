#!/usr/bin/python3
"""Write one image as an OCI image layout tarball (stdlib only), for `ociregistry load`.

Layers are random bytes (the registry checks digests only). The image is named by the
`io.containerd.image.name` annotation. Prints a JSON catalogue on stdout:

  {"name": ..., "manifest": {"digest", "size"}, "config": {"digest", "size"},
   "layers": [{"digest", "size"}...]}

usage: oci-tar.py --name bench.local/tls/app:v1 --layers 65536,1048576 --out image.tar
"""
import argparse
import hashlib
import io
import json
import os
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def blob(tar, data):
    hexd = hashlib.sha256(data).hexdigest()
    add(tar, f"blobs/sha256/{hexd}", data)
    return {"digest": f"sha256:{hexd}", "size": len(data)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--layers", required=True, help="comma-separated sizes in bytes")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sizes = [int(s) for s in a.layers.split(",")]
    with tarfile.open(a.out, "w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        layers = [blob(tar, os.urandom(n)) for n in sizes]
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
        }).encode()
        cfg = blob(tar, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **cfg},
            "layers": [{"mediaType": OCI_LAYER, **l} for l in layers],
        }).encode()
        man = blob(tar, manifest)
        index = json.dumps({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_MANIFEST, **man,
                           "annotations": {"io.containerd.image.name": a.name}}],
        }).encode()
        add(tar, "index.json", index)
    json.dump({"name": a.name, "manifest": man, "config": cfg, "layers": layers}, sys.stdout)


if __name__ == "__main__":
    main()
