#!/usr/bin/python3
"""A TCP relay that adds round-trip latency, for kernels without netem (stdlib, threads).

These machines' kernel has tc tbf but no netem (CONFIG_NET_SCH_NETEM unset), so the
upstream link's ~20 ms RTT is made here. The relay runs inside the upstream's network
namespace, in front of the registry, one relay connection per client connection (a
contender that opens many upstream connections still has that many). The bandwidth limit
stays in the kernel (tc tbf on the veth pair, shared by all connections).

Latency model: a new connection costs one RTT before its first request is forwarded (the
TCP handshake to a far upstream), and every chunk of request bytes is forwarded one RTT
after it arrived; response bytes go back at once, zero-copy (os.splice through a pipe), so
the relay does not cap throughput. Every request/response turn therefore costs one RTT,
like a link with RTT/2 each way.

usage: delay-relay.py --listen 10.200.0.2:5000 --target 127.0.0.1:5001 --rtt-ms 20
"""
import argparse
import fcntl
import os
import socket
import threading
import time

F_SETPIPE_SZ = 1031


def forward_requests(src, dst, rtt):
    """client -> upstream: each chunk leaves `rtt` after it arrived, in order."""
    try:
        while True:
            data = src.recv(65536)
            arrived = time.monotonic()
            if not data:
                break
            wait = arrived + rtt - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def forward_responses(src, dst):
    """upstream -> client, spliced through a pipe (no copy through Python)."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    try:
        while True:
            n = os.splice(src.fileno(), w, 1 << 20)
            if n == 0:
                break
            while n:
                n -= os.splice(r, dst.fileno(), n)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def handle(client, target, rtt):
    time.sleep(rtt)  # the handshake with a far upstream
    try:
        up = socket.create_connection(target, timeout=30)
    except OSError:
        client.close()
        return
    up.settimeout(None)
    for s in (client, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = threading.Thread(target=forward_requests, args=(client, up, rtt), daemon=True)
    t.start()
    forward_responses(up, client)
    t.join(600)
    client.close()
    up.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--rtt-ms", type=float, default=20)
    a = ap.parse_args()
    lh, lp = a.listen.rsplit(":", 1)
    th, tp = a.target.rsplit(":", 1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((lh, int(lp)))
    srv.listen(1024)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c, (th, int(tp)), a.rtt_ms / 1000), daemon=True).start()


if __name__ == "__main__":
    main()
