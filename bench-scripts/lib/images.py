#!/usr/bin/python3
"""Generate benchmark images and push them to a registry (the upstream), stdlib only.

Layers are random bytes (incompressible, like real gzip layers); the registry only
checks digests, so they need not be real tar.gz. Each image gets an OCI config and
an OCI image manifest. Writes a JSON catalogue:

  {"<repo>:<tag>": {"repo":..., "tag":..., "manifest": {"digest","size","media_type"},
                    "blobs": [{"digest","size"}...] (config first), "total": bytes}}

usage: images.py --registry http://127.0.0.1:5000 --spec SPEC.json --out CATALOGUE.json
SPEC: [{"repo": "bench/warm", "tag": "v1", "layers": [4096, 134217728]}, ...]
"""
import argparse
import hashlib
import http.client
import json
import os
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def conn_for(base):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=120)


def push_blob(base, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    c = conn_for(base)
    c.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    r = c.getresponse()
    r.read()
    if r.status == 200:
        return digest
    c.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    r = c.getresponse()
    r.read()
    if r.status != 202:
        raise SystemExit(f"upload start {repo}: HTTP {r.status}")
    loc = urllib.parse.urlsplit(r.getheader("Location"))
    path = loc.path + "?" + (loc.query + "&" if loc.query else "") + "digest=" + digest
    c.request("PUT", path, body=data,
              headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    r = c.getresponse()
    r.read()
    if r.status != 201:
        raise SystemExit(f"upload {repo} {digest}: HTTP {r.status}")
    c.close()
    return digest


def push_image(base, spec):
    repo, tag = spec["repo"], spec["tag"]
    layers = []
    for size in spec["layers"]:
        data = os.urandom(size)
        layers.append({"mediaType": OCI_LAYER, "digest": push_blob(base, repo, data), "size": size})
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"bench": repo}},
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
    }, separators=(",", ":")).encode()
    cfg = {"mediaType": OCI_CONFIG, "digest": push_blob(base, repo, config), "size": len(config)}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": layers},
                          separators=(",", ":")).encode()
    c = conn_for(base)
    c.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
              headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(len(manifest))})
    r = c.getresponse()
    r.read()
    if r.status != 201:
        raise SystemExit(f"manifest {repo}:{tag}: HTTP {r.status}")
    blobs = [{"digest": cfg["digest"], "size": cfg["size"]}] + [{"digest": l["digest"], "size": l["size"]} for l in layers]
    return f"{repo}:{tag}", {
        "repo": repo, "tag": tag,
        "manifest": {"digest": "sha256:" + hashlib.sha256(manifest).hexdigest(), "size": len(manifest),
                     "media_type": OCI_MANIFEST},
        "blobs": blobs, "total": len(manifest) + sum(b["size"] for b in blobs),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=4)
    a = ap.parse_args()
    spec = json.load(open(a.spec))
    cat = {}
    with ThreadPoolExecutor(a.jobs) as ex:
        for key, entry in ex.map(lambda s: push_image(a.registry, s), spec):
            cat[key] = entry
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cat, f, indent=1)
    os.replace(tmp, a.out)
    print(f"pushed {len(cat)} images, {sum(e['total'] for e in cat.values()) / 2**20:.0f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
