#!/usr/bin/env python3
"""Summarise bench-results/peers.txt (written by benches/peers.sh): medians per case and server,
the ratios of each wsgate build to the Node.js peer and to floor, and the issue-14 targets.

usage: benches/peers.py [--run RUN[,RUN...] | --all] [RAW_FILE]

Every raw line is `key=value` words: run, scenario (idle19k|low50|low10|bcast10k|high|storm),
server (wsgate or another LABEL, node, floor), rep, rc, the client's RESULT keys (or the idle /
storm figures) and other_cpu_pct. Without --run the latest run in the file is shown; several
runs (e.g. two wsgate builds measured in separate runs) can be merged with --run A,B. Medians
are over the clean runs (rc=0, nothing stuck or missing); a case with none uses all its runs and
is flagged '*'; '!' flags a median other_cpu_pct above MAX_OTHER (env, default 15).
"""
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize import kv, median, num  # noqa: E402  (the same parsing as compare.sh's table)

MAX_OTHER = float(os.environ.get("MAX_OTHER", 15))
REFS = ("node", "floor")
CASES = OrderedDict(
    [
        ("idle19k", "19,000 idle connections (4,000 + 15,000; then the 15,000 close, then all)"),
        ("low50", "1,000 sockets x 50 broadcasts/s"),
        ("low10", "10,000 sockets x 10 broadcasts/s"),
        ("bcast10k", "broadcast to 10,000 sockets, one at a time"),
        ("high", "1,000 sockets, 64 broadcasts in flight, pipelined publishes (floor: triggers)"),
        ("storm", "10,000 clients resume at once, since 1,000 events old (Redis mode)"),
    ]
)
# (key, label, scale, format, target) -- target: (op, limit, against) with against None
# (the absolute value) or a reference server name (the ratio to it).
METRICS = {
    "idle19k": [
        ("bytes_per_conn", "bytes/conn at 19k", 1, "{:,.0f}", ("<=", 4096, None)),
        ("server_rss_kib", "RSS MiB at 19k", 1 / 1024, "{:.1f}", None),
        ("server_rss0_kib", "RSS MiB at 0", 1 / 1024, "{:.1f}", None),
        ("server_rss_a_kib", "RSS MiB at 4k (before the 15k)", 1 / 1024, "{:.1f}", None),
        ("server_rss_closed_kib", "RSS MiB after the 15k closed", 1 / 1024, "{:.1f}", None),
        ("closed_over_before", "RSS after close / before open", 1, "{:.2f}", ("<=", 1.25, None)),
        ("server_rss_empty_kib", "RSS MiB after all closed", 1 / 1024, "{:.1f}", None),
        ("empty_over_base", "RSS all closed / at 0", 1, "{:.2f}", None),
    ],
    "low": [
        ("cpu_us_per_delivery", "server µs CPU/delivery", 1, "{:.2f}", ("<=", 2 / 3, "node")),
        ("server_cpu_pct", "server CPU %", 1, "{:.1f}", None),
        ("deliveries_per_s", "deliveries/s", 1, "{:,.0f}", None),
        ("msgs_per_s", "broadcasts/s", 1, "{:.1f}", None),
        ("lat_p50_us", "lat p50 ms", 1e-3, "{:.2f}", None),
        ("lat_p99_us", "lat p99 ms", 1e-3, "{:.2f}", None),
        ("ttl_p99_ms", "ttl p99 ms", 1, "{:.1f}", None),
        ("pub_p50_us", "publish RTT p50 ms", 1e-3, "{:.2f}", None),
        ("server_rss_kib", "server RSS MiB", 1 / 1024, "{:.0f}", None),
        ("client_cpu_pct", "client CPU %", 1, "{:.0f}", None),
        ("other_cpu_pct", "other CPU %", 1, "{:.0f}", None),
    ],
    "bcast10k": [
        ("ttl_p50_ms", "ttl p50 ms", 1, "{:.1f}", None),
        ("ttl_p99_ms", "ttl p99 ms", 1, "{:.1f}", ("<=", 50, None)),
        ("deliveries_per_s", "deliveries/s", 1, "{:,.0f}", None),
        ("cpu_us_per_delivery", "server µs CPU/delivery", 1, "{:.2f}", None),
        ("lat_p99_us", "lat p99 ms", 1e-3, "{:.2f}", None),
        ("server_cpu_pct", "server CPU %", 1, "{:.0f}", None),
        ("client_cpu_pct", "client CPU %", 1, "{:.0f}", None),
        ("other_cpu_pct", "other CPU %", 1, "{:.0f}", None),
    ],
    "high": [
        ("deliveries_per_s", "deliveries/s", 1, "{:,.0f}", (">=", 2e6, None)),
        ("ttl_p99_ms", "ttl p99 ms", 1, "{:.1f}", ("<=", 50, None)),
        ("ttl_p50_ms", "ttl p50 ms", 1, "{:.1f}", None),
        ("cpu_us_per_delivery", "server µs CPU/delivery", 1, "{:.2f}", None),
        ("server_cpu_pct", "server CPU %", 1, "{:.0f}", None),
        ("client_cpu_pct", "client CPU %", 1, "{:.0f}", None),
        ("server_rss_kib", "server RSS MiB", 1 / 1024, "{:.0f}", None),
        ("other_cpu_pct", "other CPU %", 1, "{:.0f}", None),
    ],
    "storm": [
        ("all_back_s", "s until all recovered + replayed", 1, "{:.2f}", None),
        ("all_connected_s", "s until all connected", 1, "{:.2f}", None),
        ("recover_p50_ms", "per client p50 ms", 1, "{:.0f}", None),
        ("recover_p99_ms", "per client p99 ms", 1, "{:.0f}", None),
        ("gw_cpu_s", "gateway CPU s", 1, "{:.2f}", None),
        ("redis_cpu_s", "redis CPU s", 1, "{:.2f}", None),
        ("client_cpu_s", "client CPU s", 1, "{:.2f}", None),
        ("replayed_events", "events replayed", 1, "{:,.0f}", None),
        ("recovered", "recovered:true", 1, "{:,.0f}", None),
        ("listen_overflows", "listen overflows", 1, "{:,.0f}", None),
        ("other_cpu_pct", "other CPU %", 1, "{:.0f}", None),
    ],
}
METRICS["low50"] = METRICS["low10"] = METRICS["low"]


def good(r):
    if r.get("rc") != "0":
        return False
    sc = r.get("scenario")
    if sc == "idle19k":
        return num(r.get("ok")) == num(r.get("conns"))
    if sc == "storm":
        return r.get("all_back") == "true" and r.get("missing") == "0" and r.get("dupes") == "0"
    return (
        r.get("stuck") == "false"
        and r.get("errors", "0") == "0"
        and num(r.get("delivered")) is not None
        and num(r.get("delivered")) == num(r.get("expected"))
    )


def value(r, key):
    if key == "cpu_us_per_delivery" and "cpu_us_per_delivery" not in r:
        # floor-client: server CPU % over the same wall time as deliveries/s.
        cpu, wall, d = num(r.get("server_cpu_pct")), num(r.get("wall_s")), num(r.get("delivered"))
        return cpu / 100 * wall * 1e6 / d if cpu is not None and wall and d else None
    ratio_of = {"closed_over_before": ("server_rss_closed_kib", "server_rss_a_kib"),
                "empty_over_base": ("server_rss_empty_kib", "server_rss0_kib")}
    if key in ratio_of and num(r.get(key)) is None:
        a, b = (num(r.get(k)) for k in ratio_of[key])
        return a / b if a is not None and b else None
    return num(r.get(key))


def med(runs, key):
    vals = [v for v in (value(r, key) for r in runs) if v is not None]
    return median([{"x": str(v)} for v in vals], "x") if vals else None


def main(argv):
    runs, show_all, path = None, False, None
    i = 0
    while i < len(argv):
        if argv[i] == "--run":
            runs = argv[i + 1].split(",")
            i += 2
        elif argv[i] == "--all":
            show_all = True
            i += 1
        else:
            path = argv[i]
            i += 1
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench-results", "peers.txt")
    if not os.path.exists(path):
        print(f"no results file {path}", file=sys.stderr)
        return 1
    rows = [kv(line) for line in open(path) if line.strip()]
    rows = [r for r in rows if "scenario" in r and "server" in r]
    if not rows:
        print("no results", file=sys.stderr)
        return 1
    if not show_all:
        runs = runs or [rows[-1].get("run")]
        rows = [r for r in rows if r.get("run") in runs]
    servers = []
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])
    ours = [s for s in servers if s not in REFS]
    refs = [s for s in REFS if s in servers]
    cols = ours + refs
    ratios = [(o, ref) for o in ours for ref in refs]

    print(f"### wsgate against the Node.js peer and floor ({'all runs' if show_all else 'run ' + ', '.join(runs)})\n")
    head = ["case", "metric"] + cols + [f"{o}/{ref}" for o, ref in ratios] + ["target"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    notes, verdicts = [], []
    for sc, title in CASES.items():
        groups = {s: [r for r in rows if r["scenario"] == sc and r["server"] == s] for s in cols}
        if not any(groups.values()):
            continue
        use, flag = {}, {}
        for s, rs in groups.items():
            ok = [r for r in rs if good(r)]
            use[s] = ok or rs
            flag[s] = "" if ok or not rs else "*"
            oth = med(use[s], "other_cpu_pct")
            if oth is not None and oth > MAX_OTHER:
                flag[s] += "!"
            bad = [r for r in rs if not good(r)]
            if bad:
                notes.append(f"{sc} {s}: {len(bad)}/{len(rs)} runs not clean (rc " + ", ".join(r.get("rc", "?") for r in bad) + ")")
            rate, got = med(use[s], "rate"), med(use[s], "msgs_per_s")
            if rate and got is not None and got < 0.95 * rate:
                notes.append(f"{sc} {s}: publish rate not reached ({got:,.1f} of {rate:,.1f}/s)")
        counts = ", ".join(f"{s} {len([r for r in groups[s] if good(r)])}/{len(groups[s])}" for s in cols if groups[s])
        label = f"{sc}: {title} (clean runs: {counts})"
        for key, mlabel, scale, fmt, target in METRICS[sc]:
            vals = {s: med(use[s], key) for s in cols}
            if all(v is None for v in vals.values()):
                continue
            cells = [fmt.format(vals[s] * scale) + flag[s] if vals[s] is not None else "-" for s in cols]
            rcells = []
            for o, ref in ratios:
                a, b = vals[o], vals[ref]
                rcells.append(f"{a / b:.2f}" if a is not None and b else "-")
            tcell = ""
            if target:
                op, lim, against = target
                parts = []
                for o in ours:
                    if against is None:
                        v = vals[o]
                    else:
                        v = vals[o] / vals[against] if vals[o] is not None and vals.get(against) else None
                    if v is None:
                        continue
                    ok = v <= lim if op == "<=" else v >= lim
                    verdicts.append(ok)
                    parts.append(f"{o}: {'PASS' if ok else 'FAIL'}")
                what = f"{op} {lim:.2f} x {against}" if against else f"{op} {fmt.format(lim * scale)}"
                tcell = what + (" — " + ", ".join(parts) if parts else "")
            print("| " + " | ".join([label, mlabel] + cells + rcells + [tcell]) + " |")
            label = ""
    print()
    print(f"Targets met: {sum(verdicts)}/{len(verdicts)}")
    print(f"(* no clean run, median of all runs; ! other processes used > {MAX_OTHER:.0f}% of a core)")
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
