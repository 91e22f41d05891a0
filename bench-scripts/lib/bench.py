#!/usr/bin/python3
"""Measurement helpers for run-all, stdlib only. Every result is one JSON line appended to --json.

  bench.py wrk      --pid PID --json F --label L [--meta k=v ...] -- [nice -n N] wrk|oha|httpload ARGS...
  bench.py cold     --pid PID --json F --label L --upstream-log LOG [--meta k=v] -- storm.py ARGS...
  bench.py rss      --pid PID            -> {"hwm_kb", "rss_kb", "procs"} over the process tree
  bench.py pids     --pid PID            -> the process and its descendants, comma-separated (for perf -p)
  bench.py startup  --bin B --dir D --runs N --json F --label L
  bench.py synth    --dir D --count N     (an image path with N cached blobs)

Server CPU is utime+stime (+cutime+cstime) from /proc/<pid>/stat summed over the
process and all its live descendants (all threads are included by /proc/<pid>/stat).
"other_cpu_s" is the machine's busy time in the same window minus server and client:
other builds sharing the cores show up there.
"""
import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))


def tree(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def cpu_s(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        # fields[11..14] = utime stime cutime cstime (stat fields 14..17)
        total += sum(int(x) for x in fields[11:15])
    return total / TICK


def rss(pid):
    """VmHWM and VmRSS summed over the process tree, and anon_kb: VmRSS without file-backed pages
    (RssAnon + RssShmem), i.e. without the page cache a process has mapped."""
    hwm = cur = anon = 0
    procs = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                st = f.read()
        except OSError:
            continue
        procs += 1
        m = re.search(r"VmHWM:\s+(\d+)", st)
        hwm += int(m.group(1)) if m else 0
        m = re.search(r"VmRSS:\s+(\d+)", st)
        cur += int(m.group(1)) if m else 0
        for key in ("RssAnon", "RssShmem"):
            m = re.search(key + r":\s+(\d+)", st)
            anon += int(m.group(1)) if m else 0
    return {"hwm_kb": hwm, "rss_kb": cur, "anon_kb": anon, "procs": procs}


def busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICK


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def meta(kvs):
    out = {}
    for kv in kvs or []:
        k, _, v = kv.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def append(path, obj):
    line = json.dumps(obj)
    with open(path, "a") as f:
        f.write(line + "\n")
    return line


def cmd_wrk(a, rest):
    c0, b0, k0 = cpu_s(a.pid), busy_s(), child_cpu()
    t0 = time.monotonic()
    peak = [0, 0]
    stop = threading.Event()

    def sample():  # the highest RSS while the load runs (VmHWM keeps the peak of earlier scenarios)
        while not stop.wait(0.25):
            now = rss(a.pid)
            peak[0] = max(peak[0], now["rss_kb"])
            peak[1] = max(peak[1], now["anon_kb"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        p = subprocess.run(rest, capture_output=True, text=True, timeout=a.timeout)
    finally:
        stop.set()
        sampler.join()
    wall = time.monotonic() - t0
    server, busy, client = cpu_s(a.pid) - c0, busy_s() - b0, child_cpu() - k0
    tool = next((os.path.basename(x) for x in rest if os.path.basename(x) in ("wrk", "oha", "httpload")), rest[0])
    w = parse_oha(p.stdout) if tool == "oha" else parse_wrk(p.stdout)
    if w is None:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"{rest[0]} printed no summary")
    w["client"] = tool
    secs = w["duration_us"] / 1e6
    res = {"kind": "wrk", "label": a.label, **meta(a.meta), **w,
           "rps": w["requests"] / secs, "bytes_per_s": w["bytes"] / secs,
           "server_cpu_s": server, "client_cpu_s": client, "other_cpu_s": max(0.0, busy - server - client),
           "wall_s": wall,
           "server_us_per_req": server * 1e6 / w["requests"] if w["requests"] else None,
           "server_s_per_gb": server / (w["bytes"] / 1e9) if w["bytes"] else None,
           "rss": {**rss(a.pid), "sampled_max_kb": peak[0], "sampled_max_anon_kb": peak[1]}}
    print(append(a.json, res))


def parse_wrk(out):
    m = re.search(r"^JSON (.*)$", out, re.M)
    return json.loads(m.group(1)) if m else None


def parse_oha(out):
    """oha's `--output-format json` summary, in the shape of lib/wrk-json.lua (seconds -> microseconds)."""
    try:
        o = json.loads(out[out.index("{"):])
    except ValueError:
        return None
    s, pct = o["summary"], o.get("latencyPercentiles") or {}
    us = lambda x: int((x or 0) * 1e6)
    ok = sum(v for k, v in (o.get("statusCodeDistribution") or {}).items() if 200 <= int(k) < 400)
    bad = sum(v for k, v in (o.get("statusCodeDistribution") or {}).items() if not 200 <= int(k) < 400)
    # requests still running when -z ends are "aborted due to deadline": the end of the run, not errors
    errs = sum(v for k, v in (o.get("errorDistribution") or {}).items() if k != "aborted due to deadline")
    cdf = [[float(k[1:]), us(v)] for k, v in pct.items() if v is not None]
    return {"duration_us": us(s["total"]), "requests": ok, "bytes": int(s.get("totalData") or 0),
            "errors": {"connect": 0, "read": errs, "write": 0, "status": bad, "timeout": 0},
            "lat_us": {"min": us(s.get("fastest")), "mean": us(s.get("average")), "max": us(s.get("slowest")),
                       "p50": us(pct.get("p50")), "p90": us(pct.get("p90")), "p99": us(pct.get("p99"))},
            "cdf_us": sorted(cdf)}


def parse_upstream_log(path, offset):
    """distribution's access log (gorilla combined format) from byte offset on."""
    rx = re.compile(r'"(GET|HEAD) (/v2/\S+) HTTP/[\d.]+" (\d{3}) (\d+|-)')
    out = {"blob_gets": 0, "blob_bytes": 0, "blob_heads": 0, "manifest_gets": 0, "manifest_heads": 0, "per_digest": {}}
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            m = rx.search(raw.decode("utf-8", "replace"))
            if not m:
                continue
            method, url, status, size = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            if "/blobs/" in url and "/uploads/" not in url:
                if method == "GET":
                    d = url.rsplit("/", 1)[1].split("?")[0]
                    out["blob_gets"] += 1
                    out["blob_bytes"] += int(size) if size != "-" else 0
                    out["per_digest"][d] = out["per_digest"].get(d, 0) + 1
                else:
                    out["blob_heads"] += 1
            elif "/manifests/" in url:
                out["manifest_gets" if method == "GET" else "manifest_heads"] += 1
    return out


def cmd_cold(a, rest):
    off = os.path.getsize(a.upstream_log)
    c0, b0, k0 = cpu_s(a.pid), busy_s(), child_cpu()
    p = subprocess.run(rest, capture_output=True, text=True, timeout=a.timeout)
    server, busy, client = cpu_s(a.pid) - c0, busy_s() - b0, child_cpu() - k0
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit("storm printed no result")
    time.sleep(a.settle)  # let background fetches (prefetch, orphaned downloads) reach the log
    up = parse_upstream_log(a.upstream_log, off)
    r = json.loads(lines[-1])
    res = {"kind": "cold", **r, "label": a.label, **meta(a.meta), "upstream": up,
           "server_cpu_s": server, "client_cpu_s": client, "other_cpu_s": max(0.0, busy - server - client),
           "rss": rss(a.pid)}
    if r.get("image_bytes"):
        res["upstream_over_image"] = up["blob_bytes"] / r["image_bytes"]
    print(append(a.json, res))


def cmd_rss(a, _):
    print(json.dumps(rss(a.pid)))


def cmd_pids(a, _):
    print(",".join(str(p) for p in tree(a.pid)))


def cmd_startup(a, _):
    cfg = os.path.join(a.dir, "..", "startup-config.yaml")
    with open(cfg, "w") as f:
        f.write('registries:\n  - name: "127.0.0.1:5000"\n    scheme: http\n')
    for run in range(a.runs):
        t0 = time.monotonic()
        p = subprocess.Popen([a.bin, "--image-path", a.dir, "--config-file", cfg, "serve",
                              "--host", "127.0.0.1", "--port", "0"],
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        took, indexed = None, None
        try:
            deadline = t0 + a.timeout
            while time.monotonic() < deadline:
                line = p.stderr.readline()
                if not line:
                    break
                if "cache indexed" in line:
                    m = re.search(r"digests=(\d+)", line)
                    indexed = int(m.group(1)) if m else None
                if "listening" in line:
                    took = time.monotonic() - t0
                    break
            r = rss(p.pid)
        finally:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        print(append(a.json, {"kind": "startup", "label": a.label, "run": run, "startup_s": took,
                              "digests_indexed": indexed, "rss": r}))


def cmd_synth(a, _):
    """An image path with `count` committed blobs (real content, real digests) and their records."""
    blobs = os.path.join(a.dir, "blobs", "sha256")
    os.makedirs(os.path.join(a.dir, "index"), exist_ok=True)
    for i in range(256):
        os.makedirs(os.path.join(blobs, f"{i:02x}"), exist_ok=True)
    with open(os.path.join(a.dir, "index", "records.jsonl"), "w") as j:
        for i in range(a.count):
            data = f"synthetic blob {i}\n".encode()
            hx = hashlib.sha256(data).hexdigest()
            with open(os.path.join(blobs, hx[:2], hx), "wb") as f:
                f.write(data)
            j.write(json.dumps({"digest": "sha256:" + hx, "kind": "blob", "size": len(data),
                                "source": f"127.0.0.1:5000/synthetic/r{i % 100}"}, separators=(",", ":")) + "\n")
    with open(os.path.join(a.dir, ".complete"), "w") as f:
        f.write(str(a.count))


def main():
    argv = sys.argv[1:]
    rest = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["wrk", "cold", "rss", "pids", "startup", "synth"])
    ap.add_argument("--pid", type=int)
    ap.add_argument("--json")
    ap.add_argument("--label", default="")
    ap.add_argument("--meta", action="append")
    ap.add_argument("--upstream-log")
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--bin")
    ap.add_argument("--dir")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=100000)
    a = ap.parse_args(argv)
    {"wrk": cmd_wrk, "cold": cmd_cold, "rss": cmd_rss, "pids": cmd_pids, "startup": cmd_startup,
     "synth": cmd_synth}[a.cmd](a, rest)


if __name__ == "__main__":
    main()
