#!/usr/bin/python3
"""results.jsonl (from run-all) -> RESULTS.md with medians and ratios, and PNG charts.

usage: report.py --results results.jsonl --out perf/RESULTS.md --charts perf/charts [--notes FILE]
"""
import argparse
import json
import os
import statistics
from collections import defaultdict

ORDER = ["ociregistry", "ociregistry-sendfile", "ociregistry-epoll", "nginx", "varnish", "distribution"]
COLORS = {"ociregistry": "#d9534f", "ociregistry-sendfile": "#e8908d", "ociregistry-epoll": "#a94442",
          "nginx": "#5cb85c", "varnish": "#5bc0de", "distribution": "#f0ad4e"}
PEERS = ["nginx", "varnish", "distribution"]
MiB = 1 << 20


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=1, unit=""):
    if x is None:
        return "–"
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:,.0f}{unit}"
    return f"{x:,.{nd}f}{unit}"


def ratio(a, b):
    return None if a is None or not b else a / b


def rfmt(x):
    return "–" if x is None else f"{x:.2f}×"


def spread(xs, nd=0):
    xs = [x for x in xs if x is not None]
    return f"{min(xs):,.{nd}f}–{max(xs):,.{nd}f}" if len(xs) > 1 else ""


def load_cells(rs):
    """The last cells of every load table's row: client CPU s, other CPU s, errors (over the runs `rs`)."""
    errs = sum(sum(r["errors"].values()) for r in rs)
    return f"{fmt(med([r['client_cpu_s'] for r in rs]))} | {fmt(med([r['other_cpu_s'] for r in rs]))} | {errs} |"


def load(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = defaultdict(lambda: defaultdict(list))
    env, link, rss, startup, profiles = {}, None, {}, [], []
    for r in rows:
        k = r["kind"]
        if k == "env":
            env = r
        elif k == "link":
            link = r
        elif k == "rss":
            rss[r["contender"]] = r["rss"]
        elif k == "startup":
            startup.append(r)
        elif k == "profile":
            profiles.append(r)
        else:
            by[r["label"]][r["contender"]].append(r)
    return by, env, link, rss, startup, profiles


def median_run(runs, key):
    """The run whose `key` is the median (for CDF charts)."""
    rs = sorted((r for r in runs if r.get(key) is not None), key=lambda r: r[key])
    return rs[len(rs) // 2] if rs else None


def present(d):
    return [c for c in ORDER if c in d]


def charts(by, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(outdir, exist_ok=True)
    made = []
    if "large" not in by or not any(k in by for k in ("manifest-get-digest", "manifest-head-tag", "blob-4k")):
        return made  # a partial run (BENCH_SCENARIOS without 1 and 2): no warm charts

    # throughput bars: large blob MB/s and small requests req/s, median with min-max whiskers
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    cs = present(by.get("large", {}))
    vals = [[r["bytes_per_s"] / 1e6 for r in by["large"][c]] for c in cs]
    m = [med(v) for v in vals]
    ax.bar(cs, m, color=[COLORS[c] for c in cs],
           yerr=[[a - min(v) for a, v in zip(m, vals)], [max(v) - a for a, v in zip(m, vals)]], capsize=4)
    for i, v in enumerate(m):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom")
    ax.set_title("1. warm 128 MiB blob, 16 conns (wrk)")
    ax.tick_params(axis="x", labelrotation=20)
    ax.set_ylabel("MB/s (median, min–max)")
    ax = axes[1]
    kinds = [k for k in ("manifest-get-digest", "manifest-head-tag", "blob-4k") if k in by]
    small = [c for c in ORDER if any(c in by[k] for k in kinds)]
    w = 0.8 / max(1, len(small))
    for j, c in enumerate(small):
        ys = [med([r["rps"] for r in by[k].get(c, [])]) or 0 for k in kinds]
        ax.bar([i + j * w for i in range(len(kinds))], ys, w, label=c, color=COLORS[c])
    ax.set_xticks([i + w * (len(small) - 1) / 2 for i in range(len(kinds))], kinds)
    ax.set_title("2. warm small requests, 64 conns (wrk)")
    ax.set_ylabel("requests/s (median)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "throughput.png"), dpi=110)
    plt.close(fig)
    made.append("throughput.png")

    # latency CDFs of the small-request runs (the median run of each contender)
    fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(5 * (len(kinds) + 1), 4), squeeze=False)
    for ax, k in zip(axes[0], kinds + ["large"]):
        for c in present(by.get(k, {})):
            r = median_run(by[k][c], "rps")
            if not r:
                continue
            xs = [p[1] / 1000 for p in r["cdf_us"]]
            ys = [p[0] for p in r["cdf_us"]]
            ax.plot(xs, ys, marker=".", label=c, color=COLORS[c])
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log)")
        ax.set_ylabel("percentile")
        ax.set_title(f"{k}: latency CDF (median run)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "latency-cdf.png"), dpi=110)
    plt.close(fig)
    made.append("latency-cdf.png")

    # cold storm: per-client time to first byte and finish, CDF over clients (median run)
    if "storm" in by:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for c in present(by["storm"]):
            r = median_run(by["storm"][c], "end_first_s")
            if not r:
                continue
            for ax, key in zip(axes, ("ttfbs_s", "ends_s")):
                xs = r[key]
                if xs:
                    ax.step(xs, [100 * (i + 1) / r["clients"] for i in range(len(xs))], where="post",
                            label=c, color=COLORS[c])
        for c in present(by.get("single", {})):
            s = med([r["end_first_s"] for r in by["single"][c]])
            if s:
                axes[1].axvline(s, color=COLORS[c], ls=":", lw=1)
        axes[0].set_title("3. cold storm: first byte of the largest layer")
        axes[1].set_title("3. cold storm: pull finished (dotted: one client alone)")
        for ax in axes:
            ax.set_xlabel("seconds from the common start")
            ax.set_ylabel("% of clients")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "storm-cdf.png"), dpi=110)
        plt.close(fig)
        made.append("storm-cdf.png")
    return made


def large_table(P, verdicts, lg, client):
    """Scenario 1's table and targets for one client's runs (`client` names it in the targets)."""
    if not lg:
        return
    tp = {c: med([r["bytes_per_s"] for r in lg[c]]) for c in lg}
    cpg = {c: med([r["server_s_per_gb"] for r in lg[c]]) for c in lg}
    # The host's CPU per GB: server and client together (on loopback the kernel's copy into the
    # receiving socket is charged to whichever side makes it).
    hpg = {c: med([(r["server_cpu_s"] + r["client_cpu_s"]) / (r["bytes"] / 1e9) for r in lg[c] if r["bytes"]])
           for c in lg}
    best = max((v for v in tp.values() if v), default=None)
    if not client:
        P("`ociregistry` runs its defaults: the client is on the same host, so bodies of 4 MiB and more go out from a "
          "mapping of the blob file (`blobSend: auto`); `ociregistry-sendfile` is the same server with `blobSend: "
          "sendfile`, `ociregistry-epoll` the defaults on the epoll driver. Host CPU s/GB = (server + client CPU) / GB.")
        P("")
    P("| contender | MB/s | range | vs nginx | vs best | server CPU s/GB | CPU/GB vs nginx | host CPU s/GB | host CPU/GB vs nginx | p99 ms | client CPU s | other CPU s | errors |")
    P("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in present(lg):
        rs = lg[c]
        P(f"| {c} | {fmt(tp[c] / 1e6)} | {spread([r['bytes_per_s'] / 1e6 for r in rs])} | {rfmt(ratio(tp[c], tp.get('nginx')))} | "
          f"{rfmt(ratio(tp[c], best))} | {fmt(cpg[c], 2)} | {rfmt(ratio(cpg[c], cpg.get('nginx')))} | "
          f"{fmt(hpg[c], 2)} | {rfmt(ratio(hpg[c], hpg.get('nginx')))} | "
          f"{fmt(med([r['lat_us']['p99'] / 1000 for r in rs]))} | {load_cells(rs)}")
    P("")
    if "ociregistry" not in tp:
        return
    others = {c: v for c, v in tp.items() if c in PEERS}
    bc = max(others, key=others.get) if others else None
    r1 = ratio(tp["ociregistry"], others.get(bc))
    verdicts.append((f"warm large blob{client}: throughput ≥ best contender", f"{rfmt(r1)} of {bc}", r1 is not None and r1 >= 1))
    r2 = ratio(cpg.get("ociregistry"), cpg.get("nginx"))
    verdicts.append((f"warm large blob{client}: server CPU/GB ≤ 1.5× nginx", f"{rfmt(r2)}", r2 is not None and r2 <= 1.5))
    r3 = ratio(hpg.get("ociregistry"), hpg.get("nginx"))
    verdicts.append((f"warm large blob{client}: host CPU/GB (server + client) ≤ nginx's", f"{rfmt(r3)}", r3 is not None and r3 <= 1))
    if "ociregistry-sendfile" in cpg:
        r4 = ratio(cpg["ociregistry-sendfile"], cpg.get("nginx"))
        verdicts.append((f"warm large blob{client}, `blobSend: sendfile`: server CPU/GB ≤ 1.5× nginx", f"{rfmt(r4)}",
                         r4 is not None and r4 <= 1.5))


def fixed_rate_tables(P, verdicts, by):
    """Scenario 2r: the small requests at one offered rate for every contender (open loop)."""
    kinds = [(k, t) for k, t in (("fixed-manifest-get-digest", "manifest GET by digest"),
                                 ("fixed-manifest-head-tag", "manifest HEAD by tag"),
                                 ("fixed-blob-4k", "4 KiB blob GET")) if by.get(k)]
    if not kinds:
        return
    rate = next(iter(by[kinds[0][0]].values()))[0].get("target_rps")
    P(f"### 2r. The same requests at a fixed {fmt(rate, 0)} req/s (open loop)")
    P("")
    P("The cells above are closed loops: each of the 64 connections sends its next request when the last one is "
      "answered, so a faster server is handed more requests at once on the same two cores, and the p99s compare "
      "different loads. Here `lib/httpload.c -R` offers every contender the same load, spread evenly over the 64 "
      "connections, and counts each latency from the request's scheduled time (a stall is charged to every "
      "request it delays, as wrk2 does).")
    P("")
    P("| request | contender | offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server µs/req | client CPU s | other CPU s | errors |")
    P("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, title in kinds:
        d = by[k]
        p99 = {c: med([r["lat_us"]["p99"] / 1000 for r in d[c]]) for c in d}
        for c in present(d):
            rs = d[c]
            P(f"| {title} | {c} | {fmt(med([r['target_rps'] for r in rs]), 0)} | {fmt(med([r['rps'] for r in rs]), 0)} | "
              f"{fmt(med([r['lat_us']['p50'] / 1000 for r in rs]), 2)} | {fmt(med([r['lat_us']['p90'] / 1000 for r in rs]), 2)} | "
              f"{fmt(p99[c], 2)} ({spread([r['lat_us']['p99'] / 1000 for r in rs], 2) or '–'}) | "
              f"{fmt(med([r['lat_us'].get('p999', 0) / 1000 for r in rs]), 2)} | {fmt(med([r['lat_us']['max'] / 1000 for r in rs]), 1)} | "
              f"{fmt(med([r['server_us_per_req'] for r in rs]))} | {load_cells(rs)}")
        if "ociregistry" in p99 and "nginx" in p99:
            # comparable only where both kept up with the offered rate (in every run)
            kept = {c: all(r.get("target_rps") and r["rps"] >= 0.99 * r["target_rps"] for r in d[c])
                    for c in ("ociregistry", "nginx")}
            o, n = p99["ociregistry"], p99["nginx"]
            behind = [c for c, k in kept.items() if not k]
            measured = f"{fmt(o, 2)} vs {fmt(n, 2)} ms" + (f" ({', '.join(behind)} fell behind the offered rate)" if behind else "")
            verdicts.append((f"{title} at a fixed {fmt(rate, 0)} req/s (open loop): p99 ≤ nginx's", measured,
                             not behind and o is not None and n is not None and o <= n))
    P("")


def profile_tables(P, profiles, rel_fg):
    """Scenario P: where each server's CPU goes under load (perf, flame graphs)."""
    if not profiles:
        return
    P("## 6. Profiles: where the servers' CPU goes")
    P("")
    P("`perf record -e cpu-clock -F 499 --call-graph dwarf` on each server's processes for 4 s in the middle of an 8 s wrk run "
      "(`large-*`: the 128 MiB blob, 16 connections; `small-*`: manifest GET by digest, 64 connections), folded "
      "by inferno. Each sample is put in the first of these kernel paths its stack passes through from the leaf "
      "up; the flame graphs show every stack.")
    P("")
    order = ["user space", "byte copy", "TCP send", "TCP receive (loopback peer's softirq)", "TCP receive (own reads)",
             "sendfile / splice", "page cache lookup", "page faults", "io_uring", "epoll", "scheduler",
             "other syscalls", "other kernel"]
    seen = {k for p in profiles for k, v in p["paths_pct"].items() if v >= 1}
    names = [k for k in order if k in seen] + sorted(seen - set(order))
    P("| profile | CPU s sampled | kernel % | " + " | ".join(f"{n} %" for n in names) + " | top self time | flame graph |")
    P("|---|---:|---:|" + "---:|" * len(names) + "---|---|")
    for p in profiles:
        top = "; ".join(f"`{f.replace('_[k]', '')}` {v:.0f}" for f, v in p["top_self"][:4])
        P(f"| {p['label']} | {p['cpu_s']:.2f} | {p['kernel_pct']:.0f} | "
          + " | ".join(f"{p['paths_pct'].get(n, 0):.0f}" for n in names)
          + f" | {top} | [svg]({rel_fg}/{p['label']}.svg) |")
    P("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--charts", required=True)
    ap.add_argument("--notes")
    a = ap.parse_args()
    by, env, link, rss, startup, profiles = load(a.results)
    made = charts(by, a.charts)
    rel = os.path.relpath(a.charts, os.path.dirname(os.path.abspath(a.out)))
    L = []
    P = L.append
    verdicts = []

    P("# Benchmark results: ociregistry vs nginx, Varnish, distribution")
    P("")
    P("Generated by `bench-scripts/run-all` (raw data: `perf/results.jsonl`). Medians of "
      f"{env.get('runs', '?')} runs per cell; ranges are min–max over the runs.")
    P("")
    P(f"- Run: {env.get('date', '?')}, commit `{env.get('commit', '?')}`, whole suite {env.get('suite_seconds', '?')} s.")
    P(f"- Machine: {env.get('cpus', '?')} × {env.get('cpu_model', '?')}, kernel {env.get('kernel', '?')}. "
      "Client (wrk, the Python storm client, ociregistry-perf) and servers share these cores; "
      f"load average at the end {env.get('loadavg_end', '?')}. `other CPU` columns show CPU used by processes "
      "other than server and client in the same window (other builds on the machine): noise.")
    P(f"- Contenders: ociregistry (`target/release`, io_uring, 2 serving threads, defaults except `RUST_LOG=info,access=off`); nginx {env.get('nginx', '?')} "
      "(2 workers, sendfile, tcp_nopush, access_log off) serving hard links of ociregistry's blob files; "
      f"Varnish {env.get('varnish', '?')} (malloc 1G, `do_stream`, blobs/manifests by digest cached 1 d, tags 60 s); "
      f"distribution {env.get('distribution', '?')} (`docker-registry`, proxy mode, filesystem storage).")
    if link:
        P(f"- Upstream: `docker-registry` in a network namespace behind one veth pair, tc tbf {link['rate']} "
          f"shared by all connections, {link['rtt_ms']} ms RTT (the kernel has no netem: `lib/delay-relay.py` in the namespace "
          "delays each connection's handshake and each request by one RTT and splices responses back). One client alone over the link: "
          f"{link['bytes'] / MiB:.0f} MiB in {link['seconds']:.2f} s = {link['bytes'] / link['seconds'] / 1e6:.0f} MB/s.")
    P(f"- Clients: wrk {env.get('wrk', '?')} `-t2 --timeout 10s`; oha {env.get('oha', '?')} (scenario 1b); "
      "`lib/httpload.c` for HEADs and the fixed-rate cells (2r).")
    P("- Server CPU = utime+stime(+cutime+cstime) of the server process and every descendant, from /proc/<pid>/stat.")
    P("")

    # ---- 1
    P("## 1. Warm large blob (128 MiB), 16 connections")
    P("")
    P(f"![throughput]({rel}/throughput.png)")
    P("")
    large_table(P, verdicts, by.get("large", {}), "")
    if by.get("large-oha"):
        P("### 1b. The same with oha")
        P("")
        P(f"oha {env.get('oha', '?')} (`-z {env.get('dur_large', '?')}s -c 16`, keep-alive), the second client the issue names; "
          "a Rust (tokio, hyper) client with other read sizes and scheduling than wrk's.")
        P("")
        large_table(P, verdicts, by["large-oha"], " (oha)")

    # ---- 2
    P("## 2. Warm small requests, 64 connections")
    P("")
    P(f"![latency CDF]({rel}/latency-cdf.png)")
    P("")
    for k, title in (("manifest-get-digest", "manifest GET by digest"), ("manifest-head-tag", "manifest HEAD by tag"),
                     ("blob-4k", "4 KiB blob GET"),
                     ("manifest-get-digest-prio", "manifest GET by digest, load generator at nice −15")):
        d = by.get(k, {})
        if not d:
            continue
        rps = {c: med([r["rps"] for r in d[c]]) for c in d}
        p99 = {c: med([r["lat_us"]["p99"] / 1000 for r in d[c]]) for c in d}
        best = max(v for v in rps.values() if v)
        P(f"### {title}")
        P("")
        P("| contender | req/s | range | vs nginx | vs best | p50 ms | p99 ms | server µs/req | client CPU s | other CPU s | errors (non-2xx etc.) |")
        P("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in present(d):
            rs = d[c]
            P(f"| {c} | {fmt(rps[c])} | {spread([r['rps'] for r in rs])} | {rfmt(ratio(rps[c], rps.get('nginx')))} | "
              f"{rfmt(ratio(rps[c], best))} | {fmt(med([r['lat_us']['p50'] / 1000 for r in rs]), 2)} | {fmt(p99[c], 2)} | "
              f"{fmt(med([r['server_us_per_req'] for r in rs]))} | {load_cells(rs)}")
        P("")
        if "ociregistry" in rps and "nginx" in rps:
            r = ratio(rps["ociregistry"], rps["nginx"])
            verdicts.append((f"{title}: ≥ 1.5× nginx req/s", rfmt(r), r is not None and r >= 1.5))
            verdicts.append((f"{title}: p99 ≤ nginx's", f"{fmt(p99['ociregistry'], 2)} vs {fmt(p99['nginx'], 2)} ms",
                             p99["ociregistry"] is not None and p99["ociregistry"] <= p99["nginx"]))

    fixed_rate_tables(P, verdicts, by)

    # ---- 3
    st, sg = by.get("storm", {}), by.get("single", {})
    if st:
        c0 = next(iter(st.values()))[0]
        P(f"## 3. Cold storm: {c0['clients']} clients pull the same uncached image at once")
        P("")
        P(f"Image: config + layers of 32 MiB, 8 MiB, 512 KiB ({c0['image_bytes'] / MiB:.1f} MiB), a fresh one per "
          "contender and run. Each client (a process of its own): GET manifest by tag, then every blob, largest first, on one keep-alive "
          "connection; every body's length and sha256 checked. Upstream GETs and bytes are counted from the "
          "upstream's access log (including background fetches that finish within 1.5 s of the last client).")
        P("")
        P(f"![storm]({rel}/storm-cdf.png)")
        P("")
        P("| contender | upstream blob GETs (image has 4 blobs) | max GETs of one blob | upstream bytes / image | first byte: first client s | last client s | last − first ms | one client alone s | all done s | all done / alone | byte-exact clients | server CPU s |")
        P("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        agg = {}
        for c in present(st):
            rs = st[c]
            gets = med([r["upstream"]["blob_gets"] for r in rs])
            mx = max(max(r["upstream"]["per_digest"].values() or [0]) for r in rs)
            ub = med([r["upstream_over_image"] for r in rs])
            f1 = med([r["ttfb_first_s"] for r in rs])
            fl = med([r["ttfb_last_s"] for r in rs])
            gap = med([(r["ttfb_last_s"] - r["ttfb_first_s"]) * 1000 if r["ttfb_last_s"] is not None else None for r in rs])
            alone = med([r["end_last_s"] for r in sg.get(c, [])])
            alld = med([r["end_last_s"] for r in rs])
            ok = sum(r["ok"] for r in rs)
            tot = sum(r["clients"] for r in rs)
            agg[c] = dict(alld=alld, gap=gap, mx=mx, ok=ok, tot=tot)
            P(f"| {c} | {fmt(gets, 0)} | {mx} | {fmt(ub, 2)} | {fmt(f1, 3)} | {fmt(fl, 3)} | {fmt(gap, 0)} | {fmt(alone, 2)} | "
              f"{fmt(alld, 2)} | {rfmt(ratio(alld, alone))} | {ok}/{tot} | {fmt(med([r['server_cpu_s'] for r in rs]), 2)} |")
        P("")
        errs = {c: sorted({e for r in st[c] for e in r["errors"]}) for c in st}
        for c, es in errs.items():
            if es:
                P(f"- {c} client errors (first few): " + "; ".join(f"`{e}`" for e in es[:5]))
        P("")
        if "ociregistry" in agg:
            o = agg["ociregistry"]
            verdicts.append(("cold storm: exactly one upstream GET per blob", f"max {o['mx']} GETs of one blob", o["mx"] == 1))
            verdicts.append(("cold storm: every body byte-exact", f"{o['ok']}/{o['tot']} clients", o["ok"] == o["tot"]))
            verdicts.append(("cold storm (Python client): last client's first byte ≤ 50 ms after the first",
                             f"{fmt(o['gap'], 0)} ms", o["gap"] is not None and o["gap"] <= 50))
            if "varnish" in agg:
                r = ratio(o["alld"], agg["varnish"]["alld"])
                verdicts.append(("cold storm: all done no later than Varnish", f"{fmt(o['alld'], 2)} s vs {fmt(agg['varnish']['alld'], 2)} s ({rfmt(r)})",
                                 r is not None and r <= 1.0))

    rst = by.get("rstorm", {})
    if rst:
        n0 = next(iter(rst.values()))[0]["nodes"]
        P(f"### 3b. The same storm pulled by `ociregistry-perf` ({n0} nodes)")
        P("")
        P("Another fresh image of the same shape per contender and run, pulled by the Rust load generator (tag HEAD, "
          "manifest, config and layers 3 at a time per node, every digest verified): the spread between the first "
          "and the last node's first layer byte without the Python client's scheduling in it. For ociregistry the "
          "load generator also reads the server's own counters (`--metrics-url`): its upstream blob requests and "
          "upstream bytes per image byte.")
        P("")
        P("| contender | first-byte spread ms | range | all done s | vs varnish | pulls ok | upstream blob GETs (server's counters) | upstream bytes / image (server's counters) |")
        P("|---|---:|---:|---:|---:|---:|---:|---:|")
        rag = {}
        v_alld = med([r["all_done_s"] for r in rst.get("varnish", [])])
        for c in present(rst):
            rs = rst[c]
            sp = med([r["spread_ms"] for r in rs])
            spr = [r["spread_ms"] for r in rs if r["spread_ms"] is not None]
            alld = med([r["all_done_s"] for r in rs])
            rag[c] = dict(sp=sp, alld=alld)
            rng = f"{min(spr):.0f}–{max(spr):.0f}" if spr else "–"
            gets = [r.get("server_upstream_blob_gets") for r in rs if r.get("server_upstream_blob_gets") is not None]
            per = [r.get("server_upstream_per_image") for r in rs if r.get("server_upstream_per_image") is not None]
            P(f"| {c} | {fmt(sp, 0)} | {rng} | {fmt(alld, 2)} | "
              f"{rfmt(ratio(alld, v_alld))} | "
              f"{sum(r['ok'] for r in rs)}/{sum(r['nodes'] for r in rs)} | "
              f"{', '.join(f'{g:.0f}' for g in gets) or '–'} | {', '.join(f'{x:.2f}' for x in per) or '–'} |")
        P("")
        if "ociregistry" in rag:
            sp = rag["ociregistry"]["sp"]
            verdicts.append(("cold storm (Rust load generator): last node's first byte ≤ 50 ms after the first",
                             f"{fmt(sp, 0)} ms", sp is not None and sp <= 50))

    # ---- 4
    br = by.get("breadth", {})
    if br:
        c0 = next(iter(br.values()))[0]
        P(f"## 4. Cold breadth: {c0['images']} different small images (config + one 64 KiB layer), {c0['concurrency']} pulls at a time")
        P("")
        ips = {c: med([r["images_per_s"] for r in br[c]]) for c in br}
        best = max(v for v in ips.values() if v) if any(ips.values()) else None
        P("| contender | images/s | range | vs best | pull p50 s | pull max s | upstream manifest GETs+HEADs | upstream blob GETs | failed pulls | server CPU s |")
        P("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in present(br):
            rs = br[c]
            P(f"| {c} | {fmt(ips[c], 1)} | {'–'.join(f'{x:.1f}' for x in (min(r['images_per_s'] for r in rs), max(r['images_per_s'] for r in rs)))} | "
              f"{rfmt(ratio(ips[c], best))} | {fmt(med([r['pull_p50_s'] for r in rs]), 3)} | {fmt(med([r['pull_max_s'] for r in rs]), 3)} | "
              f"{fmt(med([r['upstream']['manifest_gets'] + r['upstream']['manifest_heads'] for r in rs]), 0)} | "
              f"{fmt(med([r['upstream']['blob_gets'] for r in rs]), 0)} | {sum(r['failed'] for r in rs)} | "
              f"{fmt(med([r['server_cpu_s'] for r in rs]), 2)} |")
        P("")
        errs = {c: sorted({e for r in br[c] for e in r["errors"]}) for c in br}
        for c, es in errs.items():
            if es:
                P(f"- {c} errors (first few): " + "; ".join(f"`{e}`" for e in es[:5]))
        P("")

    # ---- 5
    P("## 5. Memory and startup")
    P("")
    c256 = by.get("c256-blob-4k", {})
    P("Peak RSS = VmHWM summed over the server's processes after scenarios 1–3 (Varnish's includes its malloc "
      "object store, i.e. the cached blobs; ociregistry's includes the page cache of the blob files it had mapped "
      "for same-host clients, nginx's none). `RSS at 256 conns` = the highest VmRSS sum sampled while wrk held 256 "
      "connections on the 4 KiB blob; `… without file pages` the highest RssAnon + RssShmem (page cache aside).")
    P("")
    P("| contender | processes | peak RSS MiB (1–3) | RSS at 256 conns MiB | … without file pages MiB | req/s at 256 conns | p99 ms at 256 conns |")
    P("|---|---:|---:|---:|---:|---:|---:|")
    for c in ORDER:
        if c not in rss and c not in c256:
            continue
        r256 = c256.get(c, [{}])[0]
        peak = r256.get("rss", {}).get("sampled_max_kb")
        anon = r256.get("rss", {}).get("sampled_max_anon_kb")
        P(f"| {c} | {rss.get(c, {}).get('procs', '–')} | {fmt(rss[c]['hwm_kb'] / 1024) if c in rss else '–'} | "
          f"{fmt(peak / 1024) if peak else '–'} | {fmt(anon / 1024) if anon else '–'} | {fmt(r256.get('rps'))} | "
          f"{fmt(r256['lat_us']['p99'] / 1000, 2) if r256 else '–'} |")
    P("")
    if "ociregistry" in c256:
        got = c256["ociregistry"][0]["rss"]
        peak, anon = got.get("sampled_max_kb"), got.get("sampled_max_anon_kb")
        if peak:
            verdicts.append(("RSS ≤ 64 MiB at 256 connections", f"{peak / 1024:.1f} MiB", peak / 1024 <= 64))
        if anon:
            verdicts.append(("RSS ≤ 64 MiB at 256 connections, page cache aside (RssAnon + RssShmem)",
                             f"{anon / 1024:.1f} MiB", anon / 1024 <= 64))
    if startup:
        ts = [r["startup_s"] for r in startup if r["startup_s"] is not None]
        s = med(ts)
        P(f"Startup of ociregistry with {startup[0].get('digests_indexed') or '?'} cached blobs (exec → `listening` "
          f"log line, page cache warm): median {fmt(s, 3)} s over {len(ts)} runs "
          f"({', '.join(f'{t:.3f}' for t in ts)}); RSS right after startup {fmt(med([r['rss']['rss_kb'] / 1024 for r in startup]))} MiB.")
        P("")
        verdicts.append(("startup with 100k cached blobs < 1 s", f"{fmt(s, 3)} s", s is not None and s < 1))

    # ---- 6
    profile_tables(P, profiles, "flamegraphs")  # run-all writes them beside RESULTS.md

    # ---- verdicts first in the file
    head = ["## Targets (issue 3) in this run", "", "| target | measured | met |", "|---|---|---|"]
    head += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in verdicts]
    head.append("")
    if a.notes and os.path.exists(a.notes):
        head += ["## Interpretation", "", open(a.notes).read().strip(), ""]
    i = next(n for n, l in enumerate(L) if l.startswith("## 1."))
    L[i:i] = head
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"wrote {a.out} and {', '.join(made)}")


if __name__ == "__main__":
    main()
