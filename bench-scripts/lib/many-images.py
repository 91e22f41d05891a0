#!/usr/bin/python3
"""An OCI image layout tarball of many tiny distinct images, for `ociregistry load` (stdlib only).

  many-images.py --out FILE.tar --count 10000 [--registry bench.local] [--json SUMMARY.json]

Writes `oci-layout`, `index.json` and `blobs/sha256/<hex>`: COUNT images named
`REGISTRY/prune/img-NNNNN:v1` (each its own config and one 64-byte layer, so
nothing is shared and pruning one frees three objects) and one image kept out
of any prune, `REGISTRY/keep/app:v1`, whose 4 KiB layer and manifest are what
the load is driven against. Layers are random bytes, not real tars: the
registry checks digests only. Deterministic for a given COUNT and REGISTRY.
The summary (JSON) names the kept image's manifest and layer digests.
"""
import argparse
import hashlib
import io
import json
import random
import sys
import tarfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    def __init__(self, tar):
        self.tar = tar
        self.index = []

    def add(self, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def blob(self, data):
        d = digest(data)
        self.add("blobs/sha256/" + d.split(":", 1)[1], data)
        return {"digest": d, "size": len(data)}

    def image(self, ref, layer):
        layer_desc = self.blob(layer)
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "config": {"Labels": {"ref": ref}},
            "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        }, separators=(",", ":")).encode()
        config_desc = self.blob(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, **config_desc},
            "layers": [{"mediaType": LAYER, **layer_desc}],
        }, separators=(",", ":")).encode()
        manifest_desc = self.blob(manifest)
        self.index.append({"mediaType": MANIFEST, **manifest_desc,
                           "annotations": {"io.containerd.image.name": ref,
                                           "org.opencontainers.image.ref.name": ref}})
        return manifest_desc["digest"], layer_desc["digest"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--registry", default="bench.local")
    ap.add_argument("--json", help="write the summary here too")
    a = ap.parse_args()
    if not 0 < a.count <= 30000:  # load takes at most 100,000 files: 3 per image
        raise SystemExit("--count: 1 to 30000")
    rng = random.Random(a.count)
    with tarfile.open(a.out, "w", format=tarfile.PAX_FORMAT) as tar:
        layout = Layout(tar)
        layout.add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        keep_ref = f"{a.registry}/keep/app:v1"
        keep_manifest, keep_layer = layout.image(keep_ref, rng.randbytes(4096))
        for i in range(a.count):
            layout.image(f"{a.registry}/prune/img-{i:05d}:v1", rng.randbytes(64))
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": layout.index}, separators=(",", ":")).encode()
        layout.add("index.json", index)
    summary = {"images": a.count + 1, "pruned_images": a.count, "keep": keep_ref,
               "keep_repository": f"{a.registry}/keep/app", "keep_manifest": keep_manifest,
               "keep_layer": keep_layer, "prune_pattern": f"^{a.registry}/prune/"}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f)
    json.dump(summary, sys.stdout)
    print()


if __name__ == "__main__":
    main()
