#!/usr/bin/python3
"""Summary of one perf profile, from the folded stacks of `perf script | inferno-collapse-perf --all`
(one line per distinct stack, root first, `frame;frame;...;leaf WEIGHT`, kernel frames ending in `_[k]`).
run-all samples the `cpu-clock` event, so a stack's weight is nanoseconds of CPU.

  profile.py --folded F --label L --contender C --json RESULTS

Appends {"kind": "profile", ...} to RESULTS: the CPU seconds sampled, the share spent in the kernel, the
share of samples inside each of a few kernel paths that explain where a server's CPU goes (a sample
counts for the first path, from the leaf up, that its stack passes through), and the functions with the
most self time. Stdlib only.
"""
import argparse
import json
import re
from collections import Counter

# (name, frame pattern); a sample is put in the first of these its stack passes through, leaf first
PATHS = [
    ("byte copy", re.compile(r"^(copy_user\w*|rep_movs\w*|_copy_(to|from)_(iter|user)\w*|copy_page\w*|memcpy\w*|"
                             r"__memcpy\w*|skb_copy_datagram\w*|simple_copy_to_iter)_\[k\]$")),
    ("page faults", re.compile(r"^(asm_exc_page_fault|handle_mm_fault|do_user_addr_fault)_\[k\]$")),
    # filemap_map_pages / filemap_fault run inside page faults: counted there (the walk goes on up)
    ("page cache lookup", re.compile(r"^(?!filemap_(map_pages|fault))(filemap_\w+|cachestat\w*|__x64_sys_mincore|"
                                     r"do_mincore)_\[k\]$")),
    ("TCP receive (loopback peer's softirq)", re.compile(r"^(tcp_v4_rcv|tcp_rcv_established|__netif_receive_skb\w*|"
                                                          r"net_rx_action|process_backlog)_\[k\]$")),
    ("TCP send", re.compile(r"^(tcp_sendmsg\w*|tcp_write_xmit|__tcp_transmit_skb|tcp_push\w*)_\[k\]$")),
    ("TCP receive (own reads)", re.compile(r"^(tcp_recvmsg\w*|tcp_read_sock)_\[k\]$")),
    ("sendfile / splice", re.compile(r"^(do_splice_direct\w*|splice_direct_to_actor|do_sendfile|__x64_sys_sendfile64)_\[k\]$")),
    ("io_uring", re.compile(r"^(?!io_schedule)(io_\w+|__io_\w+|__x64_sys_io_uring_enter)_\[k\]$")),
    ("epoll", re.compile(r"^(do_epoll_wait|ep_\w+|__x64_sys_epoll_\w+)_\[k\]$")),
    ("scheduler", re.compile(r"^(schedule|__schedule|try_to_wake_up|finish_task_switch\w*)_\[k\]$")),
    ("other syscalls", re.compile(r"^(entry_SYSCALL_64\w*|do_syscall_64)_\[k\]$")),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folded", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--contender", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    total = kernel = 0
    paths, leaves = Counter(), Counter()
    for line in open(a.folded, errors="replace"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        frames = stack.split(";")
        total += n
        leaf = frames[-1]
        leaves[leaf] += n
        if leaf.endswith("_[k]"):
            kernel += n
        for f in reversed(frames):
            name = next((p for p, rx in PATHS if rx.search(f)), None)
            if name:
                paths[name] += n
                break
        else:
            paths["other kernel" if leaf.endswith("_[k]") else "user space"] += n
    pct = lambda n: round(100.0 * n / total, 1) if total else 0.0
    res = {"kind": "profile", "label": a.label, "contender": a.contender, "cpu_s": total / 1e9,
           "kernel_pct": pct(kernel), "paths_pct": {k: pct(v) for k, v in paths.most_common()},
           "top_self": [[f, pct(n)] for f, n in leaves.most_common(a.top)]}
    line = json.dumps(res)
    with open(a.json, "a") as f:
        f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
