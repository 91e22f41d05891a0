#!/usr/bin/python3
"""bench-scripts/tls results (TSV) -> perf/TLS.md, and that section spliced into perf/RESULTS.md.

usage: tls-report.py --results results.tsv --out perf/TLS.md --ciphers FILE --clk-tck N --dur S --reps N ...
       tls-report.py --splice perf/TLS.md --into perf/RESULTS.md
       tls-report.py --splice guest-TLS.md --into perf/TLS.md --at guest

With --guest 1 (bench-scripts/tls-guest) the report is the subsection GUEST_SECTION, to be spliced
into perf/TLS.md after the host's section; a host run (no --guest) keeps the guest subsection that
perf/TLS.md already has.
"""
import argparse
import csv
import statistics
from collections import defaultdict

SECTION = "## 7. TLS serving"
GUEST_SECTION = "### Kernel TLS, in a qemu guest"
ROWS = [("ociregistry", "tls", "ociregistry, HTTPS (rustls)"), ("nginx", "tls", "nginx, HTTPS (OpenSSL)"),
        ("ociregistry", "ktls", "ociregistry, HTTPS, kernel TLS"), ("nginx", "ktls", "nginx, HTTPS, kernel TLS"),
        ("ociregistry", "plain", "ociregistry, plain HTTP"), ("nginx", "plain", "nginx, plain HTTP")]
REQUESTS = [("manifest", "manifest GET by digest (~0.5 KiB), 64 connections"),
            ("64k", "64 KiB blob GET, 64 connections"),
            ("1m", "1 MiB blob GET, 16 connections")]



# What ociregistry does with kernel TLS (also in README, HTTPS).
KTLS_BUILT = (
    "ociregistry probes for kernel TLS at startup when `serverTlsConfig` is set (`TCP_ULP tls` on a throwaway "
    "loopback connection) and exposes the answer as `ociregistry_tls_kernel_offload_available`. Where the module "
    "is there and `serverTlsConfig.kernelTls` is `auto` (the default), each connection is handed to the kernel "
    "after the rustls handshake (`TCP_ULP tls`, then the session's keys and sequence numbers with `TLS_TX` and "
    "`TLS_RX`), and file bodies go out with `sendfile` (or from the mapping) as over plain HTTP, counted as "
    "`ociregistry_tls_kernel_offloads_total` and `ociregistry_body_bytes_sent_total{path=\"kernel_tls\"}`."
)


def read_lines(path):
    try:
        return [l.rstrip("\n") for l in open(path) if l.strip()]
    except (TypeError, FileNotFoundError):
        return []


def read_ktls(path):
    """/proc/net/tls_stat around each HTTPS run: (server, scheme) -> list of rows."""
    runs = defaultdict(list)
    try:
        for r in csv.DictReader(open(path), delimiter="\t"):
            runs[(r["server"], r["scheme"])].append({k: int(r[k]) for k in ("tx_sw", "rx_sw", "curr_tx_mid", "decrypt_errors")})
    except (TypeError, FileNotFoundError):
        pass
    return runs


def verification(P, runs, checks):
    """Which path each HTTPS server took: /proc/net/tls_stat and ociregistry's own counters."""
    P("Which path the bytes took: `/proc/net/tls_stat` around each run (`TlsTxSw`: connections given kernel TLS "
      "for sending during the run, `TlsRxSw` for receiving; `TlsCurrTxSw`: those open at the run's midpoint; "
      "`TlsDecryptError`), medians over the runs of each server:")
    P("")
    P("| server | runs | TlsTxSw per run | TlsRxSw per run | TlsCurrTxSw mid-run | TlsDecryptError (sum) |")
    P("|---|---|---|---|---|---|")
    labels = dict(((s, sc), l) for s, sc, l in ROWS)
    for key in [("ociregistry", "tls"), ("nginx", "tls"), ("ociregistry", "ktls"), ("nginx", "ktls")]:
        rs = runs.get(key, [])
        if not rs:
            continue
        P(f"| {labels[key]} | {len(rs)} | {fmt(med([r['tx_sw'] for r in rs]))} | {fmt(med([r['rx_sw'] for r in rs]))} "
          f"| {fmt(med([r['curr_tx_mid'] for r in rs]))} | {sum(r['decrypt_errors'] for r in rs)} |")
    P("")
    nginx_k = runs.get(("nginx", "ktls"), [])
    if nginx_k and not any(r["tx_sw"] for r in nginx_k):
        P("nginx's `ssl_conf_command Options KTLS` opened no kernel TLS session (`TlsTxSw` did not grow): its "
          "OpenSSL does not use kernel TLS here, so the \"nginx, HTTPS, kernel TLS\" rows are nginx encrypting in "
          "user space, as the OpenSSL rows.")
        P("")
    if checks:
        wrong = [c for c in checks if "-- WRONG" in c]
        P("ociregistry's counters after each HTTPS cell (one process per cell and run; "
          "`ociregistry_tls_kernel_offloads_total`, `..._offload_declined_total`, `..._offload_failures_total`, "
          "`ociregistry_tls_handshake_failures_total`, `ociregistry_body_bytes_sent_total` by path):"
          + (" **a check failed**, see the lines marked WRONG." if wrong else " every check held (kTLS cells: "
             "offloads > 0, no failures, bytes only on path kernel_tls; rustls cells: no offloads, bytes on path tls)."))
        P("")
        P("```")
        for c in checks:
            P(c)
        P("```")
        P("")


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def splice(src, into, heading=SECTION):
    section = open(src).read().strip() + "\n"
    try:
        lines = open(into).read().split("\n")
    except FileNotFoundError:
        lines = []
    at = next((i for i, l in enumerate(lines) if l.startswith(heading)), None)
    if at is not None:
        lines = lines[:at]
    text = "\n".join(lines).rstrip() + "\n\n" + section
    open(into, "w").write(text)
    print(f"put {src} into {into}")


def main():
    ap = argparse.ArgumentParser()
    for opt in ["results", "out", "ciphers", "clk-tck", "dur", "reps", "elapsed", "load", "kernel", "cores",
                "nginx", "bin", "commit", "ulp", "splice", "into", "ktls", "checks", "ssl", "environment", "at",
                "guest"]:
        ap.add_argument("--" + opt)
    a = ap.parse_args()
    if a.splice:
        return splice(a.splice, a.into, GUEST_SECTION if a.at == "guest" else SECTION)
    guest = a.guest == "1"
    h = "####" if guest else "###"
    clk = int(a.clk_tck)
    cells = defaultdict(list)
    for r in csv.DictReader(open(a.results), delimiter="\t"):
        secs = int(r["dur_us"]) / 1e6
        n = int(r["requests"])
        cells[(r["server"], r["scheme"], r["request"])].append({
            "rps": n / secs,
            "mbps": int(r["bytes"]) / secs / 1e6,
            "p50": int(r["p50_us"]) / 1000,
            "p99": int(r["p99_us"]) / 1000,
            "errors": int(r["errors"]),
            "cpu_us": int(r["cpu_ticks"]) / clk * 1e6 / n if n else None,
        })

    def m(server, scheme, req, key):
        return med([c[key] for c in cells[(server, scheme, req)] if c[key] is not None])

    L = []
    P = L.append
    P(f"{GUEST_SECTION} (`bench-scripts/tls-guest`)" if guest else f"{SECTION} (`bench-scripts/tls`)")
    P("")
    P(f"Generated by `bench-scripts/tls` (commit `{a.commit}`, `{a.bin}`): medians of {a.reps} runs of {a.dur} s per cell, "
      f"ranges min–max; {a.elapsed} s in all. Machine: {a.cores} cores, kernel {a.kernel}, load {a.load}; wrk "
      f"`-t2 --timeout 10s` with keep-alive (one handshake per connection) and client and server on the same cores. "
      f"nginx {a.nginx} (2 workers, `ssl_protocols TLSv1.2 TLSv1.3`, access log off) and ociregistry "
      "(`serverTlsConfig`, defaults, 2 serving threads, io_uring, `airGapped: true`) use the same ECDSA P-256 "
      "certificate and serve the same bytes: a manifest and two layers loaded with `ociregistry load`, which "
      "nginx serves as static files. Server CPU = utime+stime of the server's processes over the run.")
    P("")
    has_ktls = any(k[1] == "ktls" for k in cells)
    ktls_runs = read_ktls(a.ktls)
    checks = read_lines(a.checks)
    if has_ktls:
        P(f"Kernel TLS: `/proc/sys/net/ipv4/tcp_available_ulp` = `{a.ulp}`. Two more servers: ociregistry with "
          "`kernelTls: auto` (kernel TLS after the rustls handshake) and nginx with `ssl_conf_command Options KTLS` "
          f"(OpenSSL's kernel TLS; nginx built with {a.ssl or '?'}), both with `sendfile`. The rows \"HTTPS (rustls)\" "
          "are ociregistry with `kernelTls: off`; \"HTTPS (OpenSSL)\" is nginx without the option.")
    else:
        P(f"Kernel TLS: `/proc/sys/net/ipv4/tcp_available_ulp` = `{a.ulp}`: no `tls` module, so neither server can "
          "hand encryption to the kernel here; both encrypt in user space (nginx with OpenSSL, ociregistry with "
          "rustls and ring, `kernelTls: off`), and ociregistry's plain-HTTP zero-copy path (sendfile) does not "
          "apply to HTTPS. `bench-scripts/tls-guest` runs this script in a qemu guest whose kernel has the module.")
    P("")
    P(KTLS_BUILT)
    P("")
    if a.environment:
        P(a.environment)
        P("")
    P("How to read it: with the client on the same two cores, throughput is shared between wrk (which "
      "decrypts every byte too) and the server, and when the load average is above the core count (other "
      "builds on the machine) whole runs lose their time slices: req/s ranges then span 2×. Server CPU per "
      "request is the steadier figure (it counts only the server's own work) and the one to compare first.")
    P("")
    try:
        ciphers = [l.strip() for l in open(a.ciphers) if l.strip()]
    except (TypeError, FileNotFoundError):
        ciphers = []
    if ciphers:
        P("Negotiated with `openssl s_client`: " + "; ".join(f"{c}" for c in ciphers) + ".")
        P("")
    P("| request | ociregistry / nginx over HTTPS, req/s | server CPU per request, ociregistry / nginx (HTTPS) | HTTPS / plain req/s, ociregistry | HTTPS / plain req/s, nginx |")
    P("|---|---|---|---|---|")
    for req, title in REQUESTS:
        def ratio(x, y):
            return f"{x / y:.2f}×" if x and y else "–"
        P(f"| {title} | {ratio(m('ociregistry', 'tls', req, 'rps'), m('nginx', 'tls', req, 'rps'))} "
          f"| {ratio(m('ociregistry', 'tls', req, 'cpu_us'), m('nginx', 'tls', req, 'cpu_us'))} "
          f"| {ratio(m('ociregistry', 'tls', req, 'rps'), m('ociregistry', 'plain', req, 'rps'))} "
          f"| {ratio(m('nginx', 'tls', req, 'rps'), m('nginx', 'plain', req, 'rps'))} |")
    P("")
    if has_ktls:
        def ratio(x, y):
            return f"{x / y:.2f}×" if x and y else "–"
        P("Kernel TLS, ratios in the same run:")
        P("")
        P("| request | ociregistry kTLS / nginx kTLS, req/s | server CPU per request, ociregistry kTLS / nginx kTLS "
          "| ociregistry kTLS / rustls, req/s | server CPU per request, ociregistry kTLS / rustls "
          "| nginx kTLS / OpenSSL, req/s | server CPU per request, nginx kTLS / OpenSSL |")
        P("|---|---|---|---|---|---|---|")
        for req, title in REQUESTS:
            o, n = "ociregistry", "nginx"
            if not cells[(o, "ktls", req)]:
                continue  # a run of some requests only (REQUESTS)
            P(f"| {title} | {ratio(m(o, 'ktls', req, 'rps'), m(n, 'ktls', req, 'rps'))} "
              f"| {ratio(m(o, 'ktls', req, 'cpu_us'), m(n, 'ktls', req, 'cpu_us'))} "
              f"| {ratio(m(o, 'ktls', req, 'rps'), m(o, 'tls', req, 'rps'))} "
              f"| {ratio(m(o, 'ktls', req, 'cpu_us'), m(o, 'tls', req, 'cpu_us'))} "
              f"| {ratio(m(n, 'ktls', req, 'rps'), m(n, 'tls', req, 'rps'))} "
              f"| {ratio(m(n, 'ktls', req, 'cpu_us'), m(n, 'tls', req, 'cpu_us'))} |")
        P("")
        verification(P, ktls_runs, checks)
    for req, title in REQUESTS:
        P(f"{h} {title}")
        P("")
        P("| server | req/s | MB/s | p50 ms | p99 ms | server CPU µs/req | errors |")
        P("|---|---|---|---|---|---|---|")
        for server, scheme, label in ROWS:
            cs = cells[(server, scheme, req)]
            if not cs:
                continue
            rps = [c["rps"] for c in cs]
            P(f"| {label} | {fmt(med(rps))} ({fmt(min(rps))}–{fmt(max(rps))}) | {fmt(m(server, scheme, req, 'mbps'), 1)} "
              f"| {fmt(m(server, scheme, req, 'p50'), 2)} | {fmt(m(server, scheme, req, 'p99'), 2)} "
              f"| {fmt(m(server, scheme, req, 'cpu_us'), 1)} | {sum(c['errors'] for c in cs)} |")
        P("")
    if guest:
        P("Reproduce: `bench-scripts/tls-guest` (as root; `DUR`, `REPS`, `ACCEL`, `TIMEOUT` as in its header): it "
          "builds the guest once, runs `bench-scripts/tls` inside and puts this subsection into `perf/TLS.md`.")
    else:
        P("Reproduce: `BIN=target/release/ociregistry bench-scripts/tls` (as root or any user that may run nginx; "
          "`DUR`, `REPS`, `WORK`, `PORT` as in the script's header); it writes `perf/TLS.md` and this section.")
    kept = ""
    if not guest:  # a host run keeps the guest's subsection
        try:
            old = open(a.out).read().split("\n")
            at = next((i for i, l in enumerate(old) if l.startswith(GUEST_SECTION)), None)
            if at is not None:
                kept = "\n" + "\n".join(old[at:]).strip() + "\n"
        except FileNotFoundError:
            pass
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n" + kept)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
