#!/usr/bin/env python3
"""Markdown summary of a bench/run.sh results file (JSON lines), with tokenwarden's goal checks.

Input: the JSONL written by bench/run.sh. Lines carry a "case":
  meta  run parameters and versions
  main  the peer kit's run-bench.sh lines (direct / nginx / tokenwarden; nonstream and stream;
        wrk -c{CONCS}); lines without "case" are taken as main, so raw kit output works too
  idle  RSS of each proxy right after start
  long  run-bench.sh lines for 1000-chunk streams
  slow  one line per proxy for the 1,000 concurrent slow streams (RSS idle / peak / after)

Numbers are medians over repetitions. CPU µs/request = CPU cores used by the proxy's process
group / requests per second (for "direct" that is the mock's CPU, marked "(mock)").

Goals checked for every proxy target other than the references (direct, nginx):
  CPU µs/request <= 1.5 x nginx          (each mode, each concurrency)
  rps at c=64 >= 0.9 x nginx              (each mode)
  p50 at c=1 <= direct + 0.15 ms          (each mode)
  idle RSS < 20 MiB                       (right after start, no request yet)

Usage: summarize.py results.jsonl [more.jsonl ...] > summary.md
"""
import json
import statistics
import sys
from collections import defaultdict

REFS = ("direct", "nginx")
ORDER = ["direct", "nginx", "tokenwarden", "litellm", "portkey"]
MODES = ["nonstream", "stream"]

CPU_RATIO_MAX = 1.5
RPS_RATIO_MIN = 0.9
RPS_GOAL_CONC = 64
P50_ADD_MAX_MS = 0.15
P50_GOAL_CONC = 1
IDLE_RSS_MAX_MIB = 20.0


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    print(f"<!-- {p}:{n}: skipped unparsable line ({e}) -->")
                    continue
                r.setdefault("case", "main")
                rows.append(r)
    return rows


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def wrk_errors(w):
    return sum(w.get(k, 0) for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))


def target_key(t):
    return (ORDER.index(t) if t in ORDER else len(ORDER), t)


class Cell:
    """Median of one (target, mode, conc) over its repetitions."""

    def __init__(self, rs):
        ws = [r["wrk"] for r in rs if r.get("wrk")]
        self.n, self.failed = len(ws), len(rs) - len(ws)
        self.rps = median([w["rps"] for w in ws])
        self.rps_all = "/".join(f"{w['rps']:.0f}" for w in ws) or "—"
        self.p50 = median([w["p50_us"] / 1000 for w in ws])
        self.p99 = median([w["p99_us"] / 1000 for w in ws])
        self.errs = sum(wrk_errors(w) for w in ws)
        self.reqs = sum(w.get("requests", 0) for w in ws)
        self.cores = median([r.get("cpu_cores") for r in rs if r.get("wrk")])
        self.rss = median([r.get("rss_kb") for r in rs if r.get("wrk")])
        self.cpu_of = rs[0].get("cpu_of", "proxy")
        self.check = ",".join(sorted({str(r.get("check", "?")) for r in rs}))
        self.cpu_us = self.cores / self.rps * 1e6 if self.rps and self.cores is not None else None


def cells(rows, case):
    g = defaultdict(list)
    for r in rows:
        if r["case"] == case and "target" in r:
            g[(r["target"], r["mode"], r["conc"])].append(r)
    return {k: Cell(v) for k, v in g.items()}


def f(x, fmt="{:.2f}", none="—"):
    return none if x is None else fmt.format(x)


def load_table(cs, title_extra=""):
    """The kit's table shape, plus CPU µs/request relative to nginx."""
    out = [
        "| mode | conc | target | rps (median; per rep) | p50 ms | p99 ms | Δp50 vs direct ms | Δp99 vs direct ms "
        "| rps vs direct | CPU cores | CPU µs/req | CPU/req vs nginx | RSS MiB (under load) | errors | check |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    targets = sorted({k[0] for k in cs}, key=target_key)
    for mode in MODES:
        for c in sorted({k[2] for k in cs if k[1] == mode}):
            d = cs.get(("direct", mode, c))
            ng = cs.get(("nginx", mode, c))
            for t in targets:
                a = cs.get((t, mode, c))
                if not a:
                    continue
                ref = t != "direct" and d is not None
                dp50 = f"{a.p50 - d.p50:+.3f}" if ref and a.p50 is not None and d.p50 is not None else "—"
                dp99 = f"{a.p99 - d.p99:+.2f}" if ref and a.p99 is not None and d.p99 is not None else "—"
                ratio = (f"{a.rps / d.rps:.2f}×" if ref and a.rps and d.rps else ("1.00×" if t == "direct" and a.rps else "—"))
                who = "" if a.cpu_of == "proxy" else " (mock)"
                vs_ng = "—"
                if t not in REFS and ng and a.cpu_us and ng.cpu_us:
                    vs_ng = f"{a.cpu_us / ng.cpu_us:.2f}×"
                elif t == "nginx" and a.cpu_us:
                    vs_ng = "1.00×"
                errs = f"{a.errs}" + (f" (+{a.failed} runs without wrk output)" if a.failed else "")
                out.append(
                    f"| {mode} | {c} | {t} | {f(a.rps, '{:.0f}')} ({a.rps_all}) | {f(a.p50)} | {f(a.p99)} | {dp50} | {dp99} "
                    f"| {ratio} | {f(a.cores)}{who} | {f(a.cpu_us, '{:.0f}')}{who} | {vs_ng} | {f(a.rss and a.rss / 1024, '{:.1f}')}{who} "
                    f"| {errs} | {a.check} |")
    return out


def goal_rows(t, main, idle_rss_kb):
    """[(goal, scope, value, reference, limit, status)] for proxy target t."""
    rows = []
    concs = sorted({k[2] for k in main})
    for mode in MODES:
        for c in concs:
            a, ng = main.get((t, mode, c)), main.get(("nginx", mode, c))
            if not a and not ng:
                continue
            if a and ng and a.cpu_us and ng.cpu_us:
                r = a.cpu_us / ng.cpu_us
                rows.append(("CPU µs/req ≤ 1.5× nginx", f"{mode} c={c}", f"{a.cpu_us:.0f} µs",
                             f"nginx {ng.cpu_us:.0f} µs", f"{r:.2f}× (≤ {CPU_RATIO_MAX}×)",
                             "met" if r <= CPU_RATIO_MAX else "missed"))
            else:
                rows.append(("CPU µs/req ≤ 1.5× nginx", f"{mode} c={c}", "—", "—", "—", "n/a (no data)"))
    for mode in MODES:
        if not any(k[1] == mode for k in main):
            continue
        a, ng = main.get((t, mode, RPS_GOAL_CONC)), main.get(("nginx", mode, RPS_GOAL_CONC))
        if a and ng and a.rps and ng.rps:
            r = a.rps / ng.rps
            rows.append((f"rps at c={RPS_GOAL_CONC} ≥ 0.9× nginx", mode, f"{a.rps:.0f}", f"nginx {ng.rps:.0f}",
                         f"{r:.2f}× (≥ {RPS_RATIO_MIN}×)", "met" if r >= RPS_RATIO_MIN else "missed"))
        else:
            rows.append((f"rps at c={RPS_GOAL_CONC} ≥ 0.9× nginx", mode, "—", "—", "—",
                         f"n/a (c={RPS_GOAL_CONC} not measured)"))
    for mode in MODES:
        if not any(k[1] == mode for k in main):
            continue
        a, d = main.get((t, mode, P50_GOAL_CONC)), main.get(("direct", mode, P50_GOAL_CONC))
        if a and d and a.p50 is not None and d.p50 is not None:
            add = a.p50 - d.p50
            rows.append((f"added p50 at c={P50_GOAL_CONC} ≤ {P50_ADD_MAX_MS} ms", mode, f"{a.p50:.3f} ms",
                         f"direct {d.p50:.3f} ms", f"{add:+.3f} ms (≤ +{P50_ADD_MAX_MS})",
                         "met" if add <= P50_ADD_MAX_MS else "missed"))
        else:
            rows.append((f"added p50 at c={P50_GOAL_CONC} ≤ {P50_ADD_MAX_MS} ms", mode, "—", "—", "—",
                         f"n/a (c={P50_GOAL_CONC} not measured)"))
    if idle_rss_kb is not None:
        mib = idle_rss_kb / 1024
        rows.append((f"idle RSS < {IDLE_RSS_MAX_MIB:.0f} MiB", "right after start", f"{mib:.1f} MiB", "—",
                     f"< {IDLE_RSS_MAX_MIB:.0f} MiB", "met" if mib < IDLE_RSS_MAX_MIB else "missed"))
    else:
        rows.append((f"idle RSS < {IDLE_RSS_MAX_MIB:.0f} MiB", "right after start", "—", "—", "—",
                     "n/a (not measured)"))
    return rows


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    rows = load(argv[1:])
    meta = next((r for r in rows if r["case"] == "meta"), {})
    main_c, long_c = cells(rows, "main"), cells(rows, "long")
    idle = {r["target"]: r for r in rows if r["case"] == "idle"}
    slow = [r for r in rows if r["case"] == "slow"]
    out = []

    out.append(f"## tokenwarden benchmark{(' — ' + meta['ts']) if meta.get('ts') else ''}")
    out.append("")
    smoke = meta and (meta.get("dur", 99) < 5 or meta.get("reps", 9) < 2)
    if smoke:
        out.append("> **SMOKE RUN** (short durations / one repetition): checks that the harness works; "
                   "the numbers are not for publication.")
        out.append("")
    if meta:
        dirty = " (uncommitted changes)" if meta.get("git_dirty") else ""
        out.append(f"- tokenwarden: `{meta.get('tokenwarden', '?')}`, commit `{meta.get('git', '?')}`{dirty}; "
                   f"{meta.get('nginx', 'nginx ?')}; {meta.get('wrk', 'wrk ?')}")
        out.append(f"- machine: {meta.get('cpu', '?')}, {meta.get('ncpu', '?')} CPUs, Linux {meta.get('kernel', '?')}. "
                   "Proxy under test pinned to CPU 1; wrk and the mock upstream share CPU 0; everything on 127.0.0.1.")
        out.append(f"- main: wrk -t1 -c{{{','.join(map(str, meta.get('concs', [])))}}} -d{meta.get('dur')}s × "
                   f"{meta.get('reps')} reps, kit mock (20-chunk streams), tokenwarden and nginx with access logs off.")
        out.append("")

    if main_c:
        out.append("### Overhead vs direct and nginx (kit mock, 20-chunk streams)")
        out.append("")
        out += load_table(main_c)
        out.append("")

    proxies = sorted({k[0] for k in main_c if k[0] not in REFS} | {t for t in idle if t not in REFS}, key=target_key)
    if proxies:
        out.append("### Goals")
        out.append("")
        for t in proxies:
            idle_kb = idle.get(t, {}).get("rss_kb")
            if idle_kb is None:
                idle_kb = next((r["idle_rss_kb"] for r in slow if r["target"] == t), None)
            gr = goal_rows(t, main_c, idle_kb)
            met = sum(1 for g in gr if g[5] == "met")
            missed = sum(1 for g in gr if g[5] == "missed")
            na = len(gr) - met - missed
            out.append(f"**{t}**: {met} met, {missed} missed" + (f", {na} not measured" if na else ""))
            out.append("")
            out.append(f"| goal | scope | {t} | reference | ratio / Δ (limit) | status |")
            out.append("|---|---|---|---|---|---|")
            for g in gr:
                status = {"met": "✅ met", "missed": "❌ missed"}.get(g[5], g[5])
                out.append(f"| {g[0]} | {g[1]} | {g[2]} | {g[3]} | {g[4]} | {status} |")
            bad = [k for k, v in main_c.items() if k[0] == t and (v.errs or v.failed or "FAIL" in v.check)]
            if bad:
                out.append("")
                out.append(f"⚠ {t} had errors or failed checks in: "
                           + ", ".join(f"{m} c={c}" for _, m, c in sorted(bad)) + " (see the table above).")
            out.append("")

    if idle:
        out.append("### Idle memory (right after start, no request yet)")
        out.append("")
        out.append("| target | RSS MiB | processes | threads |")
        out.append("|---|---|---|---|")
        for t in sorted(idle, key=target_key):
            r = idle[t]
            out.append(f"| {t} | {r['rss_kb'] / 1024:.1f} | {r.get('processes', '?')} | {r.get('threads', '?')} |")
        out.append("")
        out.append("RSS is summed over the proxy's process group (nginx: master + worker, shared pages counted twice).")
        out.append("")

    if long_c:
        ch = next((r.get("chunks") for r in rows if r["case"] == "long"), meta.get("long_chunks"))
        out.append(f"### Long streams ({ch} SSE chunks per request, kit mock)")
        out.append("")
        if meta:
            out.append(f"wrk -t1 -c{{{','.join(map(str, meta.get('long_concs', [])))}}} -d{meta.get('long_dur')}s × "
                       f"{meta.get('long_reps')} reps, post.lua MODE=stream.")
            out.append("")
        out += load_table(long_c)
        out.append("")

    if slow:
        out.append("### Many concurrent slow streams (memory)")
        out.append("")
        s0 = slow[0]
        out.append(f"{s0['conc']} connections (wrk -t1 -c{s0['conc']} -d{s0['dur']}s, post.lua MODE=stream) through the proxy "
                   f"to `tokenwarden-mock --output-chunks {s0['chunks']} --chunk-delay-ms {s0['delay_ms']}` "
                   f"(~{s0['chunks'] * s0['delay_ms'] / 1000:.0f} s per stream). RSS of the proxy sampled every 0.5 s.")
        out.append("")
        out.append("| target | streams open (peak seen) | idle RSS MiB | peak RSS MiB | RSS after MiB | per stream KiB "
                   "| streams completed | CPU s | errors | check |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in sorted(slow, key=lambda r: target_key(r["target"])):
            w = r.get("wrk") or {}
            errs = wrk_errors(w) if w else "no wrk output"
            out.append(f"| {r['target']} | {r['max_conns']} / {r['conc']} | {r['idle_rss_kb'] / 1024:.1f} | "
                       f"{r['peak_rss_kb'] / 1024:.1f} | {r['after_rss_kb'] / 1024:.1f} | {r['per_stream_kb']:.1f} | "
                       f"{w.get('requests', '—')} | {r.get('cpu_s', '—')} | {errs} | {r.get('check', '?')} |")
        out.append("")
        out.append("per stream = (peak − idle) / connections. Streams open = established client connections on the "
                   "proxy's port at the busiest sample; if it is below the target the proxy (or its accept backlog) "
                   "did not hold them all at once. Streams still running when wrk stops are cut, not counted as completed.")
        out.append("")

    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
