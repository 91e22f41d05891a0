#!/bin/sh
# Regenerates the built-in hello-world image (serve --hello-world) from hello.S: the static program,
# its layer (a reproducible tar.gz: fixed mtime, owner and order, gzip without name or time), the
# OCI image config, manifest and index. Needs gcc (or as/ld), tar, gzip, sha256sum. Run it from
# anywhere; it writes next to itself. The files it writes are committed and embedded in the binary.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir "$work/rootfs"
gcc -static -nostdlib -Wl,--build-id=none -s -o "$work/rootfs/hello" "$here/hello.S"
chmod 0755 "$work/rootfs/hello"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=ustar \
    -cf "$work/layer.tar" -C "$work/rootfs" hello
gzip -n -9 -c "$work/layer.tar" > "$here/layer.tar.gz"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { wc -c < "$1" | tr -d ' '; }
diff_id=$(sha "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/hello"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"assets/hello-world/build.sh"}]}' \
    "$diff_id" > "$here/config.json"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$(sha "$here/config.json")" "$(size "$here/config.json")" \
    "$(sha "$here/layer.tar.gz")" "$(size "$here/layer.tar.gz")" > "$here/manifest.json"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"}}]}' \
    "$(sha "$here/manifest.json")" "$(size "$here/manifest.json")" > "$here/index.json"
echo "hello-world: index sha256:$(sha "$here/index.json")"
