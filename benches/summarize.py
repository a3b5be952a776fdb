#!/usr/bin/env python3
"""Summarise bench-results/raw.txt (written by benches/compare.sh) as a markdown table.

usage: benches/summarize.py [--run RUN_ID | --all] [RAW_FILE]

Every raw line is `key=value` words: run, scenario (idle|A1|B5|B4), server (floor|wsgate),
rep, rc, then the RESULT keys of the client (or the idle figures) and other_cpu_pct.
Without --run the latest run in the file is shown. Medians are taken over the good runs
(rc=0, stuck=false, errors=0, nothing missing); when a scenario has none, over all its runs,
flagged with '*'. A median whose other_cpu_pct is above MAX_OTHER (env, default 15) is flagged
'!' (another process used the CPU during the run; the figure is noisy).
"""
import os
import re
import statistics
import sys
from collections import OrderedDict

MAX_OTHER = float(os.environ.get("MAX_OTHER", 15))
SCENARIOS = ["idle", "A1", "B5", "B5p", "B4", "B4p"]
# Scenarios run for wsgate only, compared with floor's figures of another scenario.
FLOOR_REF = {"B5p": "B5", "B4p": "B4"}
LABELS = {
    "idle": "idle 10k conns",
    "A1": "A1 10k conns, window 1",
    "B5": "B5 1k conns, window 64",
    "B5p": "B5p = B5 with publishes pipelined (64 ahead; floor: its B5)",
    "B4": "B4 1k conns, 1000/s",
    "B4p": "B4p = B4 with publishes pipelined (floor: its B4)",
}

# (key, label, scale, format, bar) — bar = (scenarios, op, limit) on the wsgate/floor ratio
BENCH_METRICS = [
    ("deliveries_per_s", "deliveries/s", 1.0, "{:,.0f}", (("A1", "B5"), ">=", 0.8)),
    ("msgs_per_s", "broadcasts/s", 1.0, "{:,.0f}", None),
    ("pub_p50_us", "publish RTT p50 ms", 1e-3, "{:.2f}", None),
    ("ttl_p50_ms", "ttl p50 ms", 1.0, "{:.1f}", None),
    ("ttl_p99_ms", "ttl p99 ms", 1.0, "{:.1f}", (("A1", "B5", "B4"), "<=", 1.25)),
    ("lat_p50_us", "lat p50 ms", 1e-3, "{:.2f}", None),
    ("lat_p99_us", "lat p99 ms", 1e-3, "{:.2f}", None),
    ("server_cpu_pct", "server CPU %", 1.0, "{:.0f}", None),
    ("cpu_us_per_delivery", "server µs CPU/delivery", 1.0, "{:.2f}", None),
    ("client_cpu_pct", "client CPU %", 1.0, "{:.0f}", None),
    ("server_rss_kib", "server RSS MiB", 1 / 1024, "{:.0f}", None),
    ("other_cpu_pct", "other CPU %", 1.0, "{:.0f}", None),
]
IDLE_METRICS = [
    ("bytes_per_conn", "bytes/conn idle", 1.0, "{:,.0f}", (("idle",), "<=", 1.25)),
    ("server_rss_kib", "server RSS MiB", 1 / 1024, "{:.0f}", None),
    ("server_rss0_kib", "server RSS MiB at 0 conns", 1 / 1024, "{:.1f}", None),
]


def kv(line):
    return dict(re.findall(r"(\w+)=(\S*)", line))


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def good(r):
    if r.get("rc") != "0":
        return False
    if r.get("scenario") == "idle":
        return num(r.get("ok")) == num(r.get("conns")) and num(r.get("failed")) == 0
    return (
        r.get("stuck") == "false"
        and r.get("errors", "0") == "0"
        and num(r.get("delivered")) is not None
        and num(r.get("delivered")) == num(r.get("expected"))
    )


def value(r, key):
    if key == "cpu_us_per_delivery":
        cpu, d = num(r.get("server_cpu_pct")), num(r.get("deliveries_per_s"))
        return cpu * 1e4 / d if cpu is not None and d else None
    return num(r.get(key))


def median(runs, key):
    vals = [v for v in (value(r, key) for r in runs) if v is not None]
    return statistics.median(vals) if vals else None


def main(argv):
    run, show_all, path = None, False, None
    i = 0
    while i < len(argv):
        if argv[i] == "--run":
            run = argv[i + 1]
            i += 2
        elif argv[i] == "--all":
            show_all = True
            i += 1
        else:
            path = argv[i]
            i += 1
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench-results", "raw.txt")
    if not os.path.exists(path):
        print(f"no results file {path}", file=sys.stderr)
        return 1
    rows = [kv(l) for l in open(path) if l.strip()]
    rows = [r for r in rows if "scenario" in r and "server" in r]
    if not rows:
        print("no results", file=sys.stderr)
        return 1
    if not show_all:
        run = run or rows[-1].get("run")
        rows = [r for r in rows if r.get("run") == run]
    groups = OrderedDict()
    for r in rows:
        groups.setdefault((r["scenario"], r["server"]), []).append(r)

    title = "all runs" if show_all else f"run {run}"
    print(f"### wsgate vs floor ({title})\n")
    print("| scenario | metric | floor | wsgate | wsgate/floor | bar |")
    print("|---|---|---|---|---|---|")
    verdicts = []
    notes = []
    for sc in SCENARIOS:
        fr, wr = groups.get((FLOOR_REF.get(sc, sc), "floor"), []), groups.get((sc, "wsgate"), [])
        if not wr and (sc in FLOOR_REF or not fr):
            continue
        use, flags = {}, {}
        for name, runs in (("floor", fr), ("wsgate", wr)):
            ok = [r for r in runs if good(r)]
            use[name] = ok if ok else runs
            flag = "" if ok else "*"
            if sc != "idle":
                oth = median(use[name], "other_cpu_pct")
                if oth is not None and oth > MAX_OTHER:
                    flag += "!"
            flags[name] = flag
            bad = [r for r in runs if not good(r)]
            if bad:
                bits = []
                for r in bad:
                    b = f"rep {r.get('rep')}: rc={r.get('rc')}"
                    for k in ("stuck", "errors", "delivered", "expected", "dupes", "out_of_order", "closed", "failed"):
                        if k in r and r[k] not in ("0", "false", ""):
                            b += f" {k}={r[k]}"
                    bits.append(b)
                notes.append(f"{sc} {name}: {len(bad)}/{len(runs)} runs not clean ({'; '.join(bits)})")
        short = set()
        for name in ("floor", "wsgate"):
            rate, got = median(use[name], "rate"), median(use[name], "msgs_per_s")
            if rate and got is not None and got < 0.95 * rate:
                short.add(name)
                notes.append(f"{sc} {name}: publish rate not reached ({got:,.0f} of {rate:,.0f} broadcasts/s), "
                             "so its latencies are those of a lighter load and not comparable")
        metrics = IDLE_METRICS if sc == "idle" else BENCH_METRICS
        label = LABELS.get(sc, sc) + f" (runs used: floor {len(use['floor'])}/{len(fr)}, wsgate {len(use['wsgate'])}/{len(wr)})"
        for key, mlabel, scale, fmt, bar in metrics:
            f, w = median(use["floor"], key), median(use["wsgate"], key)
            fs = fmt.format(f * scale) + flags["floor"] if f is not None else "-"
            ws = fmt.format(w * scale) + flags["wsgate"] if w is not None else "-"
            ratio = w / f if f and w is not None else None
            rs = f"{ratio:.2f}" if ratio is not None else "-"
            bs = ""
            if bar and sc in bar[0]:
                op, lim = bar[1], bar[2]
                if ratio is None or (short and key != "deliveries_per_s"):
                    bs = f"{op} {lim} n/a" + (" (rate not reached)" if short else "")
                    verdicts.append((sc, mlabel, None))
                else:
                    ok = ratio >= lim if op == ">=" else ratio <= lim
                    bs = f"{op} {lim} {'PASS' if ok else 'FAIL'}"
                    verdicts.append((sc, mlabel, ok))
            print(f"| {label} | {mlabel} | {fs} | {ws} | {rs} | {bs} |")
            label = ""
    print()
    passed = sum(1 for v in verdicts if v[2])
    print(f"Pass bar: {passed}/{len(verdicts)} met"
          + ("" if passed == len(verdicts) else " — not met: "
             + ", ".join(f"{s} {m}" + (" (not comparable)" if ok is None else "") for s, m, ok in verdicts if not ok)))
    print("(* no clean run, median of all runs; ! other processes used > "
          f"{MAX_OTHER:.0f}% CPU during the run)")
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
