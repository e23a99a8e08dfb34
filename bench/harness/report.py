"""Results files: <suite>-<dataset>[-quick].json / .md / .png under
bench/results/, and bench/RESULTS.md rebuilt from every results JSON there."""

import glob
import json
import os

from .common import BENCH_DIR, RESULTS_DIR

ORDER = ["quiver", "faiss", "hnswlib", "pgvector", "milvus", "lancedb"]
LABEL = {
    "quiver": "quiver (pgwire, psycopg)",
    "faiss": "faiss IndexHNSWFlat (in-process)",
    "hnswlib": "hnswlib (in-process)",
    "pgvector": "PostgreSQL 15 + pgvector (psycopg, TCP)",
    "milvus": "Milvus 2.3.5 (pymilvus gRPC)",
    "lancedb": "LanceDB IVF_HNSW_FLAT (in-process)",
}


def stem(res):
    return f"{res['suite']}-{res['dataset']}" + ("-quick" if res["quick"] else "")


def _f(v, fmt="{:,.1f}"):
    if v is None or v == "":
        return "–"
    if isinstance(v, (int, float)):
        return fmt.format(v)
    return str(v)


def _sorted(systems):
    return sorted(systems, key=lambda r: ORDER.index(r["system"]) if r["system"] in ORDER else 99)


def sweep_table(res):
    filt = res["suite"] == "filtered"
    k = res["params"]["k"]
    head = ["system"] + (["filter"] if filt else []) + [
        "ef", f"recall@{k}", "QPS", "QPS 2 clients", "p50 ms", "p99 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in _sorted(res["systems"]):
        for p in r.get("points", []):
            row = [r["system"]] + ([p.get("filter") or ""] if filt else []) + [
                "exact" if p["ef"] is None else str(p["ef"]), f"{p['recall']:.3f}",
                _f(p["qps"], "{:,.0f}"), _f(p.get("qps_2c"), "{:,.0f}"),
                _f(p["p50_ms"], "{:.2f}"), _f(p["p99_ms"], "{:.2f}")]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def has_ivf(res):
    return any(r.get("ivf") for r in res["systems"])


IVF_INDEX = {
    "quiver": "`ivf_flat`, one per sealed segment",
    "faiss": "IndexIVFFlat (IndexFlatL2 quantizer)",
    "pgvector": "`ivfflat`",
}


def ivf_intro(res):
    """Bullets: how the IVF points were made."""
    ivf = res["params"].get("ivf") or {}
    lists = ivf.get("lists")
    by = {r["system"]: r for r in res["systems"] if r.get("ivf")}
    names = [r["system"] for r in _sorted(res["systems"]) if not r.get("ivf")]
    hnsw_only = [n for n in names if n not in IVF_INDEX]
    missing = [n for n in names if n in IVF_INDEX]
    out = [f"- IVF-flat indexes (L2), lists = {lists} ({ivf.get('lists_rule', '')}), probes "
           f"{', '.join(map(str, ivf.get('probes', [])))}: built after the HNSW points, in "
           f"the same worker and server, the HNSW index dropped first; measured as the HNSW "
           f"points (the same queries; one client, prepared statement; 2 clients for "
           f"servers)" + (f"; {', '.join(hnsw_only)}: HNSW only" if hnsw_only else "")
           + (f"; {', '.join(missing)}: no IVF points (stopped before them)"
              if missing else "")]
    if "quiver" in by:
        out.append(f"- quiver: `DROP INDEX items_hnsw`, `CREATE INDEX items_ivf ON items USING "
                   f"ivf_flat (embedding vector_l2_ops) WITH (lists = {lists}, wait = true)`, "
                   f"`SET ivfflat.probes = p`")
        b = by["quiver"]["ivf"].get("build") or {}
        if b.get("lists_per_segment"):
            lps = b["lists_per_segment"]
            out[-1] += (f"; one index per sealed segment ({len(lps)} here, of "
                        f"{', '.join(f'{x:,}' for x in b['segment_rows'])} rows), each with at "
                        f"most rows / 39 lists ({', '.join(map(str, lps))}), p lists probed in "
                        f"each")
    if "pgvector" in by:
        out.append(f"- pgvector: `DROP INDEX items_hnsw`, `CREATE INDEX items_ivf ON items USING "
                   f"ivfflat (embedding vector_l2_ops) WITH (lists = {lists})`, "
                   f"`SET ivfflat.probes = p`")
    if "faiss" in by:
        out.append(f"- faiss: IndexIVFFlat(IndexFlatL2, {lists}), nprobe = p; 2 threads to "
                   f"build, 1 to search (the ceiling)")
    return "\n".join(out)


def ivf_table(res):
    k = res["params"]["k"]
    head = ["system", "lists", "probes", f"recall@{k}", "QPS", "QPS 2 clients", "p50 ms",
            "p99 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in _sorted(res["systems"]):
        ivf = r.get("ivf") or {}
        for p in ivf.get("points", []):
            row = [r["system"], _f(ivf.get("lists"), "{:,}"), str(p["probes"]),
                   f"{p['recall']:.3f}", _f(p["qps"], "{:,.0f}"),
                   _f(p.get("qps_2c"), "{:,.0f}"),
                   _f(p["p50_ms"], "{:.2f}"), _f(p["p99_ms"], "{:.2f}")]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ivf_build_table(res):
    head = ["system", "IVF index", "lists", "index build s", "index MB", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in _sorted(res["systems"]):
        ivf = r.get("ivf")
        if not ivf:
            continue
        b = ivf.get("build") or {}
        lists = _f(ivf.get("lists"), "{:,}")
        if b.get("lists_per_segment"):
            lists += f" (per segment: {', '.join(map(str, b['lists_per_segment']))})"
        build = _f(b.get("seconds"), "{:.1f}")
        if b.get("train_s") is not None:
            build += f" (k-means {b['train_s']:.1f})"
        status = "ok" if not ivf.get("error") else f"**error**: {ivf['error'][:200]}"
        notes = "; ".join(ivf.get("notes") or [])
        if notes:
            status += f" ({notes[:500]})"
        row = [r["system"], IVF_INDEX.get(r["system"], ""), lists, build,
               _f(b.get("index_mb"), "{:,.0f}"), status.replace("|", "/").replace("\n", " ")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary_table(res):
    head = ["system", "version", "load", "rows/s", "index build s", "peak RSS MB",
            "disk MB", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in _sorted(res["systems"]):
        info = r.get("info", {})
        ver = info.get("version") or info.get("pgvector") or info.get("milvus") or \
            (f"commit {info['git']}" if info.get("git") else "")
        if r["system"] == "pgvector" and info.get("pgvector"):
            ver = f"pgvector {info['pgvector']}, PG {info.get('postgres', '?').split()[0]}"
        load, build, mem = r.get("load") or {}, r.get("build") or {}, r.get("memory") or {}
        status = "ok"
        if r.get("skipped"):
            status = f"skipped: {r['skipped']}"
        elif r.get("error"):
            status = f"**error**: {r['error'][:200]}"
        rss = _f(mem.get("peak_rss_mb"), "{:,.0f}")
        if mem.get("scope") == "benchmark process" and r.get("baseline_rss_mb"):
            # in-process: the worker also holds Python and the dataset arrays
            rss += f" (of which {r['baseline_rss_mb']:,.0f} before the build)"
        notes = "; ".join(r.get("notes") or [])
        if notes:
            status += f" ({notes[:700]})"
        row = [LABEL.get(r["system"], r["system"]), ver,
               (f"{load.get('method', '')} {_f(load.get('seconds'), '{:.1f}')} s"
                if load.get("seconds") is not None else "–"),
               _f(load.get("rows_per_s"), "{:,.0f}"), _f(build.get("seconds"), "{:.1f}"),
               rss, _f(r.get("disk_mb"), "{:,.0f}"),
               status.replace("|", "/").replace("\n", " ")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def wire_table(res):
    lines = ["| server | SELECT $1::int QPS | µs per round trip | p99 µs |", "|---|---|---|---|"]
    for name, w in sorted((res.get("wire") or {}).items()):
        who = "PostgreSQL 15" if name == "pgvector" else name
        lines.append(f"| {who} | {w['qps']:,.0f} | {w['mean_us']:.0f} | {w['p99_us']:.0f} |")
    if res.get("wire_error"):
        lines.append(f"| PostgreSQL 15 | error: {res['wire_error'][:200]} | | |")
    return "\n".join(lines)


def ceiling_table(res, key="quiver_vs_ceiling", knob="ef"):
    qc = res.get(key)
    if not qc:
        return ""
    if "points" not in qc:
        return qc.get("note", "")
    whos = list(qc["rtt_us"])
    head = [knob, "recall", "quiver QPS", "faiss ms at that recall"] + [
        f"ceiling with {w} RTT ({qc['rtt_us'][w]:.0f} µs)" for w in whos] + [
        f"fraction ({w})" for w in whos]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in qc["points"]:
        row = ["exact" if p[knob] is None else str(p[knob]), f"{p['recall']:.3f}",
               f"{p['qps']:,.0f}", f"{p['faiss_ms_at_recall']:.3f}"]
        row += [f"{p[f'ceiling_qps_{w}_rtt']:,.0f}" for w in whos]
        row += [f"{p[f'fraction_of_{w}_ceiling']:.2f}" for w in whos]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def busy_warning(res):
    m = res["machine"]
    worst = max(m["loadavg_start"][0], m["loadavg_end"][0])
    if m.get("cores") and worst > 0.5 * m["cores"]:
        return (f"**The machine was busy** (load average up to {worst:.1f} on {m['cores']} "
                f"cores, other work running beside the benchmark): absolute numbers are low "
                f"and noisy; compare systems within this run only, and rerun on an idle "
                f"machine for figures to quote.")
    return ""


def graph_note(res):
    """How the HNSW graphs' level-0 neighbour lists were built in this run."""
    if "keep_pruned=true" in json.dumps(res.get("systems", res)):
        return (", level-0 neighbour lists kept full (quiver keep_pruned = true, faiss "
                "keep_max_size_level0 with prune_headroom 0, pgvector always)")
    return (", level-0 neighbour lists as faiss's heuristic leaves them (quiver's default "
            "keep_pruned = false, and faiss; pgvector keeps them full)")


RECALL_FLOOR = 0.95


def best_at_floor(r, floor=RECALL_FLOOR, filt=None):
    """A system's HNSW point (unfiltered, or with filter `filt`) with the
    most QPS among those at recall >= floor, or None."""
    pts = [p for p in r.get("points") or []
           if (p.get("filter") or None) == filt and p["recall"] >= floor]
    return max(pts, key=lambda p: p["qps"]) if pts else None


def filtered_targets_lines(res):
    """The filtered-search targets, per filter: quiver's best QPS at recall
    >= 0.95 against its unfiltered best (>= 0.5 at 10 % and 50 % of rows
    passing) and against pgvector's (>= 5×)."""
    by = {r["system"]: r for r in res["systems"]}
    q, pg = by.get("quiver"), by.get("pgvector")
    if not q or not q.get("points"):
        return []
    base = best_at_floor(q)
    out = []
    seg = (q.get("load") or {}).get("segment_rows")
    if seg:
        out.append(f"- quiver's sealed segments: {len(seg)} ({', '.join(f'{r:,}' for r in seg)} "
                   f"rows)" + (", after COMPACT" if (q.get("load") or {}).get("compact")
                               else ", as loading sealed them"))
    if base:
        out.append(f"- quiver unfiltered: {base['qps']:,.0f} QPS (ef {base['ef']}, "
                   f"recall {base['recall']:.3f})")
    mode = res["params"].get("pg_iterative_scan")
    for fname, f in (res["params"].get("filters") or {}).items():
        qb = best_at_floor(q, filt=fname)
        sel = f.get("selectivity", 0)
        head = f"- `{fname}` ({sel:.1%} of rows): "
        if qb is None:
            best = max((p for p in q["points"] if p.get("filter") == fname),
                       key=lambda p: p["recall"], default=None)
            out.append(head + "quiver reached no recall ≥ 0.95"
                       + (f" (best {best['recall']:.3f} at ef {best['ef']})" if best else ""))
            continue
        parts = [f"quiver {qb['qps']:,.0f} QPS (ef {qb['ef']}, recall {qb['recall']:.3f})"]
        if base:
            frac = qb["qps"] / base["qps"]
            need = sel >= 0.1
            parts.append(f"{frac:.2f} of unfiltered"
                         + (f" (target ≥ 0.5: {'met' if frac >= 0.5 else 'not met'})"
                            if need else ""))
        pb = best_at_floor(pg, filt=fname) if pg else None
        if pb:
            ratio = qb["qps"] / pb["qps"]
            parts.append(f"pgvector ({mode or 'iterative scan'}) {pb['qps']:,.0f} QPS "
                         f"(ef {pb['ef']}, recall {pb['recall']:.3f}): **{ratio:.2f}×** "
                         f"(target ≥ 5×: {'met' if ratio >= 5 else 'not met'})")
        elif pg:
            parts.append("pgvector reached no recall ≥ 0.95")
        short = sum(1 for p in q["points"] if p.get("filter") == fname and p.get("short"))
        if short:
            parts.append(f"{short} quiver points came back short")
        out.append(head + "; ".join(parts))
    return out


def round_ratios(a, b):
    """QPS ratios of two points measured in the same rounds, round by round."""
    ra, rb = a.get("qps_rounds"), b.get("qps_rounds")
    if not ra or not rb or len(ra) != len(rb) or len(ra) < 2:
        return []
    return [x / y for x, y in zip(ra, rb) if x and y]


def rounds_note(res):
    """How the points were measured: rounds, the systems alternating."""
    n = res["params"].get("rounds")
    if not n:
        return ("- the systems were measured one after another (results from before the "
                "harness alternated them)")
    if n == 1:
        return "- each point measured once, the systems alternating point by point"
    return (f"- each point measured in {n} rounds, the systems alternating point by point "
            f"(so a drifting machine slows them alike); each figure is the median of its "
            f"rounds")


def targets_lines(res):
    """The issue's HNSW targets, as measured in this run: QPS at recall >=
    0.95 against pgvector (>= 3x), against the pgwire ceiling (>= 0.8), and
    build time against in-process faiss (<= 1.2x)."""
    by = {r["system"]: r for r in res["systems"]}
    q = by.get("quiver")
    if not q or not q.get("points"):
        return []
    out = []
    qb = best_at_floor(q)
    if qb is None:
        return [f"- quiver reached no recall ≥ {RECALL_FLOOR} in this run"]
    pg = by.get("pgvector")
    pb = best_at_floor(pg) if pg else None
    if pb:
        ratio = qb["qps"] / pb["qps"]
        out.append(f"- best QPS at recall@10 ≥ {RECALL_FLOOR}, one client: quiver {qb['qps']:,.0f} "
                   f"(ef {qb['ef']}, recall {qb['recall']:.3f}), pgvector {pb['qps']:,.0f} "
                   f"(ef {pb['ef']}, recall {pb['recall']:.3f}): **{ratio:.2f}×** "
                   f"(target ≥ 3×: {'met' if ratio >= 3 else 'not met'})")
        per = round_ratios(qb, pb)
        if per:
            out.append(f"- the same two points round by round (measured side by side): "
                       + ", ".join(f"{x:.2f}×" for x in per))
        if qb.get("qps_2c") and pb.get("qps_2c"):
            out.append(f"- the same points with 2 clients: quiver {qb['qps_2c']:,.0f}, pgvector "
                       f"{pb['qps_2c']:,.0f} ({qb['qps_2c'] / pb['qps_2c']:.2f}×)")
    qc = res.get("quiver_vs_ceiling") or {}
    for c in qc.get("points") or []:
        if c["ef"] == qb["ef"] and "fraction_of_quiver_ceiling" in c:
            f = c["fraction_of_quiver_ceiling"]
            extra = (f"; {c['fraction_of_postgres_ceiling']:.2f} with PostgreSQL's round trip"
                     if "fraction_of_postgres_ceiling" in c else "")
            out.append(f"- that quiver point against 1 / (quiver's `SELECT $1::int` round trip + "
                       f"faiss's search time at its recall): **{f:.2f}** (target ≥ 0.8: "
                       f"{'met' if f >= 0.8 else 'not met'}){extra}")
    fa = by.get("faiss")
    qs, fs = (q.get("build") or {}).get("seconds"), ((fa or {}).get("build") or {}).get("seconds")
    if qs and fs:
        b = qs / fs
        qr = (q.get("build") or {}).get("seconds_rounds")
        fr = ((fa or {}).get("build") or {}).get("seconds_rounds")
        rounds = (f" (means of builds alternating A B B A: quiver "
                  f"{', '.join(f'{x:.1f}' for x in qr)} s, faiss {', '.join(f'{x:.1f}' for x in fr)} s)"
                  if qr and fr else "")
        out.append(f"- HNSW build: quiver {qs:.1f} s, faiss in-process {fs:.1f} s{rounds}: "
                   f"**{b:.2f}×** (target ≤ 1.2×: {'met' if b <= 1.2 else 'not met'})")
    return out


def markdown(res, png_name):
    p, m = res["params"], res["machine"]
    parts = [
        f"# {res['suite']} / {res['dataset']}" + (" (quick)" if res["quick"] else ""),
        "",
        f"- command: `{res['command']}`",
        f"- date: {res['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; "
        f"load average {m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end",
        f"- data: {p['n']:,} × {p['dim']} base vectors, {p['queries']:,} queries, k={p['k']}, "
        f"HNSW M={p['m']} efConstruction={p['ef_construction']}{graph_note(res)}; one client, one query at a "
        f"time (2 clients: two processes, aggregated QPS)",
        rounds_note(res),
    ]
    if busy_warning(res):
        parts += ["", busy_warning(res)]
    if p.get("filters"):
        parts.append("- filters: " + ", ".join(
            f"`{k}` keeps {v['selectivity']:.0%}" for k, v in p["filters"].items()))
    ivf = has_ivf(res)
    tl = (targets_lines(res) if res["suite"] == "ann"
          else filtered_targets_lines(res) if res["suite"] == "filtered" else [])
    if tl:
        parts += ["", "## Targets (HNSW)", ""] + tl
    parts += ["", f"![recall vs QPS]({png_name})", "",
              "## Recall / throughput" + (" (HNSW)" if ivf else ""), "", sweep_table(res), ""]
    if ivf:
        parts += ["## Recall / throughput (IVF)", "", ivf_intro(res), "", ivf_table(res), "",
                  ivf_build_table(res), ""]
    parts += ["## Load, build, memory" + (" (HNSW)" if ivf else ""), "", summary_table(res),
              "", "## Wire ceiling (same psycopg client, prepared, TCP loopback)", "",
              wire_table(res), ""]
    ct = ceiling_table(res)
    if ct:
        parts += ["## quiver vs the pgwire ceiling" + (" (HNSW)" if ivf else ""), "",
                  "1 / (round trip of `SELECT $1::int` + in-process faiss search time at "
                  "quiver's recall), and quiver's QPS as a fraction of it.", "", ct, ""]
    ct = ceiling_table(res, "quiver_vs_ceiling_ivf", "probes") if ivf else ""
    if ct:
        parts += ["## quiver vs the pgwire ceiling (IVF)", "",
                  "The same with quiver's and faiss's IVF points: faiss IndexIVFFlat's "
                  "search time at quiver's recall (interpolated over its probes).", "", ct, ""]
    return "\n".join(parts)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    filters = sorted({p.get("filter") or "" for r in res["systems"] for p in r.get("points", [])})
    filters = filters or [""]
    from matplotlib.ticker import FuncFormatter, LogLocator
    fig, axes = plt.subplots(1, len(filters), figsize=(10.5 * len(filters), 5.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, fname in zip(axes[0], filters):
        for i, r in enumerate(_sorted(res["systems"])):
            pts = [p for p in r.get("points", []) if (p.get("filter") or "") == fname]
            if not pts:
                continue
            pts.sort(key=lambda p: p["recall"])
            c = colors[ORDER.index(r["system"]) % len(colors)] if r["system"] in ORDER else None
            ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker="o",
                    color=c, label=LABEL.get(r["system"], r["system"]))
            for p in pts:
                ax.annotate("exact" if p["ef"] is None else str(p["ef"]),
                            (p["recall"], p["qps"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3), color=c)
            two = [p for p in pts if p.get("qps_2c")]
            if two:
                ax.plot([p["recall"] for p in two], [p["qps_2c"] for p in two], marker=".",
                        linestyle="--", color=c, alpha=0.6,
                        label=f"{r['system']} (2 clients)")
        for r in _sorted(res["systems"]):
            ivf = r.get("ivf") or {}
            pts = sorted((p for p in ivf.get("points", []) if not fname),
                         key=lambda p: p["recall"])
            if not pts:
                continue
            c = colors[ORDER.index(r["system"]) % len(colors)] if r["system"] in ORDER else None
            ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker="s",
                    markersize=4, linestyle="-.", color=c,
                    label=f"{r['system']} IVF (lists={ivf.get('lists')})")
            for p in pts:
                ax.annotate(f"p{p['probes']}", (p["recall"], p["qps"]), fontsize=7,
                            textcoords="offset points", xytext=(3, -9), color=c)
        for name, w in sorted((res.get("wire") or {}).items()):
            who = "PostgreSQL" if name == "pgvector" else name
            ax.axhline(w["qps"], linestyle=":", linewidth=1, color="gray")
            ax.annotate(f"{who} SELECT $1 round trips", (0.0, w["qps"]), fontsize=7,
                        color="gray", xycoords=("axes fraction", "data"),
                        textcoords="offset points", xytext=(4, 2))
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel(f"recall@{res['params']['k']}")
        ax.set_ylabel("queries per second (log)")
        title = f"{res['dataset']}" + (" (quick)" if res["quick"] else "")
        if has_ivf(res):
            title += ": HNSW (ef) and IVF (probes)"
        if fname:
            title += f", filter {fname}"
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def results_md(all_results):
    """bench/RESULTS.md: the latest full runs (quick runs only when there is none),
    then the Ingest section."""
    ingest = [r for r in all_results if r.get("suite") == "ingest"]
    scale = [r for r in all_results if r.get("suite") == "scale"]
    all_results = [r for r in all_results if r.get("suite") not in ("ingest", "scale")]
    full = [r for r in all_results if not r["quick"]]
    shown = full or all_results
    parts = ["# Benchmark results", "",
             "Rebuilt by `bench/run` from `bench/results/*.json` (see `bench/README.md`). "
             "Each section is the latest run of one suite and dataset, with the command that "
             "produced it." + ("" if full else " Only quick smoke runs exist so far: their "
                               "numbers are not benchmarks."), ""]
    for r in sorted(shown, key=lambda r: (r["suite"], r["dataset"], r["quick"])):
        s = stem(r)
        m = r["machine"]
        parts += [f"## {r['suite']} / {r['dataset']}" + (" (quick)" if r["quick"] else ""), "",
                  f"- command: `{r['command']}`",
                  f"- date: {r['date']}",
                  f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM "
                  f"(load average {m['loadavg_start'][0]:.2f} at start)",
                  rounds_note(r),
                  f"- full tables: [results/{s}.md](results/{s}.md)", ""]
        if busy_warning(r):
            parts += [busy_warning(r), ""]
        tl = (targets_lines(r) if r["suite"] == "ann"
              else filtered_targets_lines(r) if r["suite"] == "filtered" else [])
        if tl:
            parts += tl + [""]
        ivf = has_ivf(r)
        parts += [f"![recall vs QPS](results/{s}.png)", ""]
        if ivf:
            parts += [f"HNSW (M={r['params']['m']}, efConstruction="
                      f"{r['params']['ef_construction']}{graph_note(r)}), ef swept:", ""]
        parts += [sweep_table(r), ""]
        if ivf:
            parts += [ivf_intro(r), "", ivf_table(r), "", ivf_build_table(r), "",
                      "Load and HNSW index:", ""]
        parts += [summary_table(r), "", wire_table(r), ""]
        ct = ceiling_table(r)
        if ct:
            parts += [ct, ""]
        ct = ceiling_table(r, "quiver_vs_ceiling_ivf", "probes") if ivf else ""
        if ct:
            parts += ["quiver's IVF points against the same ceiling (faiss IndexIVFFlat):", "",
                      ct, ""]
    if ingest:
        parts += ingest_section(ingest)
    if scale:
        parts += scale_section(scale)
    return "\n".join(parts)


def scale_section(results):
    """The scale suite's latest full runs (quick ones only when there is
    none), one per dataset and index: their report without its title."""
    from .scale import report
    full = [r for r in results if not r.get("quick")]
    shown = {}
    for r in sorted(full or results, key=lambda r: r["date"]):
        shown[(r["dataset"], r["params"]["index"])] = r
    parts = []
    for (dataset, index), r in sorted(shown.items()):
        body = report(r).split("\n", 1)[1].lstrip("\n")
        parts += [f"## scale / {dataset} / {index}" + (" (quick)" if r.get("quick") else ""),
                  "", f"- full tables: [results/scale-{dataset}-{index}.md]"
                  f"(results/scale-{dataset}-{index}.md)", body]
    return parts


# --- ingest suite ---------------------------------------------------------------------

def _mb(b):
    return None if b is None else b / 2**20


def _cell(text):
    return " ".join(str(text).replace("|", "/").split())


def _first_line(text, n=100):
    lines = [x for x in str(text).splitlines() if x.strip()]
    return (lines[0] if lines else "")[:n]


def _ingest_cell(r, key):
    """One cell of the ingest table for result r; 'n/a (why)' where a step failed."""
    load, flush = r.get("load") or {}, r.get("flush") or {}
    rst, dd = r.get("restart") or {}, r.get("data_dir") or {}
    if key == "rows":
        return _f(load.get("rows"), "{:,}")
    if key == "seconds":
        return _f(load.get("seconds"), "{:,.1f}")
    if key == "rows_per_s":
        return _f(load.get("rows_per_s"), "{:,.0f}")
    if key == "mb_per_s":
        return _f(load.get("text_mb_per_s"), "{:,.1f}")
    if key == "cpu":
        return _f(load.get("server_cpu_s"), "{:,.1f}")
    if key == "flush":
        if not flush:
            return "–"
        if flush.get("seconds") is None:
            return f"n/a ({_first_line(flush.get('error', ''), 80)})"
        return f"{flush['seconds']:,.2f} (`{flush['statement']}`)"
    if key == "written":
        return _f(_mb((r.get("bytes_written") or {}).get("bytes")), "{:,.0f}")
    if key == "walgen":
        return _f(_mb(r.get("wal_bytes")), "{:,.0f}")
    if key == "datadir":
        if not dd:
            return "–"
        out = f"{_mb(dd['bytes']):,.0f}"
        if dd.get("allocated_bytes") is not None:
            out += f" ({_mb(dd['allocated_bytes']):,.0f} allocated)"
        return out
    if key == "waldisk":
        return _f(_mb(dd.get("wal_bytes")), "{:,.0f}")
    if key == "table":
        if r.get("table_bytes") is not None:
            return _f(_mb(r["table_bytes"]), "{:,.0f}")
        if dd.get("bytes") is not None:
            return _f(_mb(dd["bytes"] - (dd.get("wal_bytes") or 0)), "{:,.0f}")
        return "–"
    if key == "rss":
        return _f((r.get("memory") or {}).get("peak_rss_mb"), "{:,.0f}")
    if key == "connect":
        return _f(rst.get("connect_s"), "{:.2f}")
    if key == "restart":
        if not rst:
            return "–"
        if rst.get("full_count_s") is not None:
            return f"{rst['full_count_s']:.2f}"
        why = _first_line(rst.get("error") or "")
        if rst.get("first_answer_s") is not None:
            why = f"first answer at {rst['first_answer_s']:.2f} s said {rst.get('count')}"
        return f"n/a ({why})"
    if key == "status":
        st = "ok" if not r.get("error") else f"**error**: {r['error'][:200]}"
        notes = "; ".join(_first_line(n, 150) for n in r.get("notes") or [])
        if notes:
            st += f" ({notes[:300]})"
        return st
    raise KeyError(key)


INGEST_ROWS = [
    ("rows", "rows loaded"),
    ("seconds", "COPY wall time, s"),
    ("rows_per_s", "**rows/s**"),
    ("mb_per_s", "COPY text MiB/s"),
    ("cpu", "server CPU s during COPY"),
    ("flush", "flush to disk, s"),
    ("written", "bytes written, MiB (/proc/<pid>/io write_bytes)"),
    ("walgen", "WAL written by the load, MiB"),
    ("datadir", "data-dir size after flush, MiB"),
    ("waldisk", "of which WAL, MiB"),
    ("table", "table files (heap + index / segments), MiB"),
    ("rss", "peak RSS, MiB"),
    ("connect", "restart: to first connection, s"),
    ("restart", "**restart: to first count(*) answered, s**"),
    ("status", "status"),
]


def ingest_table(res):
    by = {r["system"]: r for r in res["systems"]}
    names = [n for n in ("quiver", "pgvector") if n in by]
    head = ["metric"] + [LABEL.get(n, n).split(" (")[0] for n in names]
    if len(names) == 2:
        head.append("quiver / PostgreSQL")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in INGEST_ROWS:
        row = [label] + [_cell(_ingest_cell(by[n], key)) for n in names]
        if len(names) == 2:
            row.append(_ingest_ratio(by["quiver"], by["pgvector"], key))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _ingest_value(r, key):
    load, dd = r.get("load") or {}, r.get("data_dir") or {}
    return {"rows_per_s": load.get("rows_per_s"), "seconds": load.get("seconds"),
            "cpu": load.get("server_cpu_s"),
            "written": (r.get("bytes_written") or {}).get("bytes"),
            "walgen": r.get("wal_bytes"),
            "datadir": dd.get("bytes"),
            "rss": (r.get("memory") or {}).get("peak_rss_mb"),
            "restart": (r.get("restart") or {}).get("full_count_s")}.get(key)


def _ingest_ratio(q, p, key):
    a, b = _ingest_value(q, key), _ingest_value(p, key)
    if not a or not b:
        return ""
    v = a / b
    return f"**{v:.2f}×**" if key == "rows_per_s" else f"{v:.2f}×"


def ingest_verdict(res):
    t = res["params"]["targets"]
    by = {r["system"]: r for r in res["systems"]}
    out = []
    ratio = res.get("ratio_rows_per_s")
    if ratio is not None:
        out.append(f"- ingest rows/s, quiver / PostgreSQL: **{ratio:.2f}×** (target ≥ "
                   f"{t['ingest_ratio_min']:.0f}×: {'met' if ratio >= t['ingest_ratio_min'] else 'not met'})")
    rst = (by.get("quiver") or {}).get("restart") or {}
    full = res["params"]["rows"] >= t["restart_target_rows"]
    if rst.get("full_count_s") is not None:
        ok = rst["full_count_s"] < t["restart_s_max"]
        out.append(f"- quiver restart to first answer: **{rst['full_count_s']:.2f} s** (target < "
                   f"{t['restart_s_max']:.0f} s for {t['restart_target_rows']:,} rows: "
                   + (("met" if ok else "not met") if full else
                      f"not applicable, {res['params']['rows']:,} rows") + ")")
    elif "quiver" in by:
        out.append("- quiver restart to first answer: n/a (" +
                   ((rst.get("error") or by["quiver"].get("error") or "not measured")[:200]
                    .replace("\n", " ")) + ")")
    return out


def ingest_body(res):
    p, m = res["params"], res["machine"]
    binary = p.get("format") == "binary"
    fmt_name = "binary" if binary else "text"
    fmt_option = " (FORMAT binary)" if binary else ""
    parts = [f"- command: `{res['command']}`",
             f"- date: {res['date']}",
             f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; "
             f"load average {m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end",
             f"- data: {p['rows']:,} rows (id bigint, category int, price double precision, "
             f"embedding vector({p['dim']})), numpy seed {p['seed']}, "
             f"{p['text_bytes'] / 2**20:,.0f} MiB of COPY {fmt_name} data (sha256 {p['data_sha256'][:12]}…); "
             f"`COPY items FROM STDIN{fmt_option}` in statements of {p['batch_rows']:,} rows, one "
             f"psycopg client over TCP loopback, the data read from a pre-generated file",
             "- quiver: `FLUSH items` after the load; bytes written and peak RSS of its process; "
             "data dir = its `--data-dir`; restart = SIGKILL, then the same command on the "
             "same data dir",
             "- PostgreSQL: a fresh cluster (settings of the ann suite's); `CHECKPOINT` after "
             "the load; bytes written summed over its processes; peak RSS of the COPY backend "
             "(counts the shared buffers it touched); data dir = the database's directory + "
             "`pg_wal/`; restart = `pg_ctl stop -m immediate`, `pg_ctl start` (crash recovery)",
             "- restart times: from spawning the server to the first `SELECT count(*) FROM items` "
             "that returns all the rows (OS page cache warm). PostgreSQL's crash recovery "
             "first fsyncs every file of the data directory (`recovery_init_sync_method = "
             "fsync`), about 1,000 files even for an empty cluster: on a slow-fsync disk "
             "that dominates its restart at small sizes",
             "- WAL written by the load: PostgreSQL, `pg_current_wal_lsn()` difference; "
             "quiver, the size of its `wal/` directory after the load, before `FLUSH`"]
    rounds = p.get("rounds", 1)
    if rounds > 1:
        names = {"quiver": "quiver", "pgvector": "PostgreSQL"}
        each = "; ".join(
            f"{names.get(r['system'], r['system'])} "
            + ", ".join(f"{v:,.0f}" if v else "error" for v in r.get("rounds_rows_per_s") or [])
            for r in res["systems"])
        parts.append(f"- rounds: {rounds}, the systems alternating (A B, B A, ...); each "
                     f"system's figures below are from its median round by rows/s. rows/s of "
                     f"every round: {each}")
    parts += [""]
    v = ingest_verdict(res)
    if v:
        parts += v + [""]
    if busy_warning(res):
        parts += [busy_warning(res), ""]
    if res["quick"]:
        parts += ["Quick smoke run: not a benchmark figure.", ""]
    parts += [ingest_table(res), ""]
    return parts


def ingest_markdown(res):
    return "\n".join([f"# ingest / {res['params']['rows']:,} rows"
                      + (" (quick)" if res["quick"] else ""), ""] + ingest_body(res))


def ingest_section(results):
    """The Ingest section of RESULTS.md: the latest full run, else the latest quick one."""
    full = [r for r in results if not r["quick"]]
    r = max(full or results, key=lambda r: r["date"])
    s = stem_ingest(r)
    return ["## Ingest" + (" (quick)" if r["quick"] else ""), "",
            f"- full table: [results/{s}.md](results/{s}.md)"] + ingest_body(r)


def stem_ingest(res):
    fmt = "-binary" if res.get("format") == "binary" else ""
    return "ingest" + fmt + ("-quick" if res["quick"] else "")


def rebuild_results_md():
    all_results = []
    for p in sorted(glob.glob(os.path.join(RESULTS_DIR, "*.json"))):
        try:
            with open(p) as f:
                all_results.append(json.load(f))
        except (OSError, ValueError):
            pass
    rpath = os.path.join(BENCH_DIR, "RESULTS.md")
    with open(rpath, "w") as f:
        f.write(results_md(all_results))
    return rpath


def write_ingest(res):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    s = stem_ingest(res)
    paths = {ext: os.path.join(RESULTS_DIR, f"{s}.{ext}") for ext in ("json", "md")}
    with open(paths["json"], "w") as f:
        json.dump(res, f, indent=1, default=str)
        f.write("\n")
    with open(paths["md"], "w") as f:
        f.write(ingest_markdown(res))
    return list(paths.values()) + [rebuild_results_md()]


def write(res):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    s = stem(res)
    paths = {ext: os.path.join(RESULTS_DIR, f"{s}.{ext}") for ext in ("json", "md", "png")}
    with open(paths["json"], "w") as f:
        json.dump(res, f, indent=1, default=str)
        f.write("\n")
    with open(paths["md"], "w") as f:
        f.write(markdown(res, f"{s}.png"))
    plot(res, paths["png"])
    return list(paths.values()) + [rebuild_results_md()]
