#!/usr/bin/python3
"""Contender-neutral pull client for the cold scenarios, stdlib only.

storm:   N clients (one process each) pull the same image at once. Each client opens its connection,
         waits on a barrier, then GETs the manifest by tag and every blob (largest first,
         one after another on its keep-alive connection), checking length and sha256
         of every body. Reports each client's time to first body byte of its first
         (largest) blob and its end time, both from the common start.
breadth: a list of different images, pulled by C workers at once (images/s).

The registry is addressed as BASE/v2/<PREFIX><repo>/...; PREFIX is e.g.
"10.200.0.2:5000/" for ociregistry's path form and "" for proxies.
"""
import argparse
import hashlib
import http.client
import json
import multiprocessing
import queue
import sys
import threading
import time
import urllib.parse

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
BUF = 1 << 20


class Puller:
    def __init__(self, base, prefix, timeout):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.prefix, self.timeout = u.hostname, u.port or 80, prefix, timeout
        self.conn = None
        self.buf = bytearray(BUF)

    def connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.connect()

    def get(self, path, accept=None, t0=None):
        """GET path -> (status, body sha256 hex, length, first-byte time, end time)."""
        if self.conn is None:
            self.connect()
        headers = {"Accept": accept} if accept else {}
        try:
            self.conn.request("GET", path, headers=headers)
            r = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            # a keep-alive connection the server closed: one fresh attempt
            self.conn.close()
            self.connect()
            self.conn.request("GET", path, headers=headers)
            r = self.conn.getresponse()
        h = hashlib.sha256()
        n = 0
        first = None
        mv = memoryview(self.buf)
        first_chunk = r.read1(BUF) if r.status == 200 else r.read()
        if first_chunk:
            first = time.monotonic()
            h.update(first_chunk)
            n += len(first_chunk)
        while True:
            k = r.readinto(mv)
            if not k:
                break
            h.update(mv[:k])
            n += k
        if r.will_close:
            self.conn.close()
            self.conn = None
        return r.status, h.hexdigest(), n, first, time.monotonic()

    def pull(self, image, t0, record):
        """Pulls one image of the catalogue; fills `record`; returns True if all byte-exact."""
        errors = record.setdefault("errors", [])
        repo, tag = image["repo"], image["tag"]
        st, sha, n, _, tm = self.get(f"/v2/{self.prefix}{repo}/manifests/{tag}", ACCEPT)
        record["manifest_s"] = tm - t0
        if st != 200 or "sha256:" + sha != image["manifest"]["digest"]:
            errors.append(f"manifest: status {st}, {n} bytes, sha256:{sha[:12]}")
            return False
        record["bytes"] = n
        for i, b in enumerate(sorted(image["blobs"], key=lambda b: -b["size"])):
            st, sha, n, first, tend = self.get(f"/v2/{self.prefix}{repo}/blobs/{b['digest']}")
            record["bytes"] += n
            if i == 0:
                record["ttfb_s"] = (first - t0) if first else None
            if st != 200:
                errors.append(f"{b['digest'][:19]}: status {st}")
            elif n != b["size"]:
                errors.append(f"{b['digest'][:19]}: {n} of {b['size']} bytes")
            elif "sha256:" + sha != b["digest"]:
                errors.append(f"{b['digest'][:19]}: wrong bytes (sha256:{sha[:12]})")
        record["end_s"] = time.monotonic() - t0
        return not errors


def storm_client(i, args, image, barrier, t0, out):
    """One storm client, in a process of its own: connect, wait for the start, pull, report."""
    rec = {"client": i}
    try:
        p = Puller(args.base, args.prefix, args.timeout)
        p.connect()
        barrier.wait()
        rec["ok"] = p.pull(image, t0.value, rec)
    except Exception as e:  # noqa: BLE001 - every failure is a result here
        rec["ok"] = False
        rec.setdefault("errors", []).append(f"{type(e).__name__}: {e}")
        try:
            barrier.abort()
        except Exception:
            pass
    out.put(rec)


def storm(args, image):
    # One process per client: in one process the clients' HTTP parsing and hashing would take turns
    # under the interpreter lock, and a late client's first byte would measure this client, not the
    # server. CLOCK_MONOTONIC (time.monotonic) is the same clock in every process.
    n = args.clients
    ctx = multiprocessing.get_context("fork")
    t0 = ctx.Value("d", 0.0, lock=False)
    # The start line is the barrier's release, when every client has connected: the last process to
    # arrive stamps it before any is let go.
    barrier = ctx.Barrier(n + 1, action=lambda: setattr(t0, "value", time.monotonic()), timeout=args.deadline)
    out = ctx.Queue()
    procs = [ctx.Process(target=storm_client, args=(i, args, image, barrier, t0, out), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        t0.value = time.monotonic()  # a client failed to connect: its record says why
    deadline = t0.value + args.deadline
    records = []

    def collect(until):
        while len(records) < n:
            try:
                records.append(out.get(timeout=max(0.01, until - time.monotonic())))
            except queue.Empty:
                return

    collect(deadline)
    for p in procs:
        p.join(5.0 if len(records) == n else 0.1)
    collect(time.monotonic() + 0.5)  # records sent while the others were joined
    hung = sum(p.is_alive() for p in procs)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(1.0)
    records += [{"client": None, "ok": False, "errors": ["no result by the deadline"]} for _ in range(n - len(records))]
    ttfbs = sorted(r["ttfb_s"] for r in records if r.get("ttfb_s") is not None)
    ends = sorted(r["end_s"] for r in records if r.get("end_s") is not None)
    ok = sum(1 for r in records if r.get("ok"))
    return {
        "mode": "storm", "clients": n, "image": f"{image['repo']}:{image['tag']}", "image_bytes": image["total"],
        "ok": ok, "failed": n - ok, "hung": hung,
        "ttfb_first_s": ttfbs[0] if ttfbs else None, "ttfb_last_s": ttfbs[-1] if ttfbs else None,
        "end_first_s": ends[0] if ends else None, "end_last_s": ends[-1] if len(ends) == n else None,
        "ttfbs_s": ttfbs, "ends_s": ends,
        "errors": sorted({e for r in records for e in r.get("errors", [])})[:20],
    }


def breadth(args, images):
    lock = threading.Lock()
    todo = list(images)
    done = []
    errors = []
    t0 = time.monotonic()

    def worker():
        p = Puller(args.base, args.prefix, args.timeout)
        while time.monotonic() - t0 < args.deadline:
            with lock:
                if not todo:
                    return
                img = todo.pop(0)
            rec = {}
            start = time.monotonic()
            try:
                ok = p.pull(img, start, rec)
            except Exception as e:  # noqa: BLE001
                ok = False
                rec.setdefault("errors", []).append(f"{type(e).__name__}: {e}")
                p.conn = None
            with lock:
                done.append((ok, time.monotonic() - start))
                errors.extend(rec.get("errors", []))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, t0 + args.deadline - time.monotonic()))
    elapsed = time.monotonic() - t0
    ok = sum(1 for d in done if d[0])
    lat = sorted(d[1] for d in done)
    return {
        "mode": "breadth", "images": len(images), "concurrency": args.concurrency, "ok": ok,
        "failed": len(images) - ok, "elapsed_s": elapsed, "images_per_s": ok / elapsed if elapsed else None,
        "pull_p50_s": lat[len(lat) // 2] if lat else None, "pull_max_s": lat[-1] if lat else None,
        "errors": sorted(set(errors))[:20],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["storm", "breadth"])
    ap.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--prefix", default="", help="path prefix before the repo, e.g. UPSTREAM:PORT/")
    ap.add_argument("--catalogue", required=True, help="images.json written by images.py")
    ap.add_argument("--image", action="append", required=True, help="repo:tag (breadth: repeat, or a prefix*)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=60, help="socket timeout, s")
    ap.add_argument("--deadline", type=float, default=120, help="bound on the whole run, s")
    ap.add_argument("--json", help="append the result as one JSON line here")
    ap.add_argument("--label", default="", help="copied into the result")
    args = ap.parse_args()
    cat = json.load(open(args.catalogue))
    if args.mode == "storm":
        res = storm(args, cat[args.image[0]])
    else:
        names = []
        for pat in args.image:
            names += sorted(k for k in cat if k.startswith(pat[:-1])) if pat.endswith("*") else [pat]
        res = breadth(args, [cat[k] for k in names])
    res["label"] = args.label
    line = json.dumps(res)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")
    print(line)
    return 0 if res["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
