"""Reads `perf report --no-children --sort symbol --stdio` on stdin and prints the top
symbols by self time and the share of a few groups of symbols (used by profile.sh;
instructions.sh imports `group_of` to group callgrind's counts the same way).

A symbol is counted in the first group whose pattern it matches; what matches none is
"other". Kernel symbols are `[k]` lines.
"""

import re
import sys

# (group, regex on the symbol name); order matters: first match wins.
GROUPS = [
    ("signature verification (P-256, Ed25519, SHA-2)",
     r"p256|nistz256|ecp_nistz|ecdsa|ed25519|curve25519|x25519|fiat_|sha256|sha512|"
     r"ring_core|aws_lc|GFp_|bn_mul|bn_sqr|sha2::|curve25519_dalek|LIMBS_|p521|p384"),
    ("tokio scheduler and timers",
     r"tokio::runtime::(scheduler|task|context|time|park|driver|blocking)|tokio::sync::notify|"
     r"tokio::time|parking_lot|std::sys::.*futex|futex"),
    ("tokio I/O driver", r"tokio::runtime::io|tokio::io|mio::|epoll"),
    ("hyper and HTTP (parse, encode, client pool)",
     r"hyper::|hyper_util::|httparse|http::header|http::uri|h2::|want::"),
    ("allocation", r"malloc|free|realloc|calloc|_int_|alloc::|__rust_alloc|__rust_dealloc|"
     r"cfree|tcache|arena_"),
    ("JSON and base64", r"serde_json|serde::|base64::"),
    ("memcpy, memset, memcmp (moves and copies)", r"__mem(move|cpy|set|cmp)|^mem(cpy|move|set|cmp)"),
    ("clock reads", r"clock_gettime|Instant::now|SystemTime::now"),
    ("axum and tower (routing, service clones)", r"axum::|tower::|tower_http::"),
    ("bytes (refcounts)", r"bytes::"),
    # `hash_one` is where std's SipHash and foldhash (keygate's `IdMap`s) are both
    # called from; a name alone cannot tell them apart.
    ("hashing (SipHash, foldhash)", r"core::hash::sip|BuildHasher::hash_one|foldhash::"),
    ("byte searches (memchr)", r"memchr::"),
    ("keygate", r"keygate"),
    ("kernel: network and syscalls",
     r"^\[k\] .*(tcp|ip_|inet|sock|skb|net_|__dev|loopback|lo_xmit|napi|nf_|__x64_sys|"
     r"entry_SYSCALL|syscall|do_syscall|ep_|epoll)"),
    ("kernel: scheduling, wake-ups, context switches",
     r"^\[k\] .*(_raw_spin_unlock_irqrestore|finish_task_switch|schedule|futex|try_to_wake_up|"
     r"pick_next|enqueue_|dequeue_|update_curr|__switch_to|wake_up|select_task_rq|ttwu)"),
    ("kernel: other", r"^\[k\]"),
]

COMPILED = [(name, re.compile(rx)) for name, rx in GROUPS]


def group_of(sym, kernel=False):
    """The group of a symbol name (kernel groups for kernel symbols, marked `[k] `)."""
    for name, rx in COMPILED:
        # Kernel groups see only kernel symbols (with their "[k]" mark); the others see
        # only user-space symbols, without it.
        if name.startswith("kernel") != kernel:
            continue
        if rx.search(sym):
            return name
    return "other"


def main():
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    rows = []
    for line in sys.stdin:
        m = re.match(r"\s*([\d.]+)%\s+(\[[k.]\])\s+(.*\S)", line)
        if not m:
            continue
        pct, space, sym = float(m.group(1)), m.group(2), m.group(3)
        rows.append((pct, f"{space} {sym}"))

    total = sum(p for p, _ in rows) or 1.0
    print(f"top {top} symbols by self time:")
    for pct, sym in rows[:top]:
        print(f"  {pct:6.2f}%  {sym[:110]}")
    shares = {name: 0.0 for name, _ in GROUPS}
    shares["other"] = 0.0
    others = []
    for pct, sym in rows:
        kernel = sym.startswith("[k]")
        group = group_of(sym if kernel else sym[4:], kernel)
        shares[group] += pct
        if group == "other":
            others.append((pct, sym))
    print("by group (share of keygate's samples):")
    for name, pct in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * pct / total:6.1f}%  {name}")
    print("largest in \"other\":")
    for pct, sym in others[:8]:
        print(f"  {pct:6.2f}%  {sym[:110]}")


if __name__ == "__main__":
    main()
