"""Benchmark driver: prepares the dataset, runs each system in its own worker
process (one after the other, same data and queries), then writes
bench/results/<suite>-<dataset>[-quick].{json,md,png} and bench/RESULTS.md."""

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

from . import datasets, ingest, report, systems
from .common import (CACHE_DIR, cleanup_registered, loadavg, log, lscpu_model,
                     mem_total_gib)

EFS_FULL = [10, 12, 16, 24, 32, 64, 128]
EFS_QUICK = [16, 64]
PROBES_FULL = [1, 4, 16, 32]
PROBES_QUICK = [1, 16]


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    ap.add_argument("--suite", choices=["ann", "filtered", "ingest"], default="ann")
    ap.add_argument("--dataset", default="fashion-mnist",
                    help="fashion-mnist or synthetic-<n>-<d>")
    ap.add_argument("--quick", action="store_true",
                    help="10,000 base rows, 100 queries, 2 ef values (a smoke test); "
                         "ingest: 100,000 rows")
    ap.add_argument("--systems", default=None,
                    help="comma list of " + ",".join(systems.ALL) + " (ingest: "
                         + ",".join(ingest.SYSTEMS) + ")")
    ap.add_argument("--rows", type=int, default=None,
                    help="ingest: rows to load (default 1,000,000; quick 100,000)")
    ap.add_argument("--batch-rows", type=int, default=50_000,
                    help="ingest: rows per COPY statement (a multiple of 1,000)")
    ap.add_argument("--queries", type=int, default=None,
                    help="number of queries (default 1000, quick 100)")
    ap.add_argument("--ef", default=None, help="comma list of ef values to sweep")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ivf-lists", type=int, default=None,
                    help="ann suite: lists of the IVF (ivf_flat) indexes (default "
                         "round(4 * sqrt(rows)), at most rows / 39)")
    ap.add_argument("--probes", default=None,
                    help="ann suite: comma list of IVF probes to sweep (default 1,4,16,32; "
                         "quick 1,16)")
    ap.add_argument("--no-ivf", action="store_true",
                    help="ann suite: HNSW only, no IVF index")
    ap.add_argument("--system-timeout", type=int, default=None,
                    help="seconds one system may take in all (default 3600, quick 240)")
    a = ap.parse_args(argv)
    known = ingest.SYSTEMS if a.suite == "ingest" else systems.ALL
    if a.systems is None:
        a.systems = ",".join(known)
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    bad = [s for s in a.systems if s not in known]
    if bad:
        ap.error(f"unknown system(s) {bad} for suite {a.suite}; choose from {known}")
    if a.rows is not None and a.rows < 1:
        ap.error("--rows must be positive")
    if a.batch_rows < 1000 or a.batch_rows % 1000:
        ap.error("--batch-rows must be a positive multiple of 1,000")
    if a.queries is None:
        a.queries = 100 if a.quick else 1000
    a.efs = [int(x) for x in a.ef.split(",")] if a.ef else (EFS_QUICK if a.quick else EFS_FULL)
    a.probes = ([int(x) for x in a.probes.split(",")] if a.probes
                else (PROBES_QUICK if a.quick else PROBES_FULL))
    if any(p < 1 for p in a.probes) or (a.ivf_lists is not None and a.ivf_lists < 1):
        ap.error("--probes and --ivf-lists must be positive")
    if a.system_timeout is None:
        if a.suite == "ingest":
            a.system_timeout = 600 if a.quick else 3600
        else:
            a.system_timeout = 240 if a.quick else 3600
    return a


def _stop_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run_worker(spec, timeout, module="harness.worker"):
    """Run one system in a subprocess (`python -m module --spec --out`) with a
    hard time limit."""
    tmp = os.path.join(CACHE_DIR, "tmp")
    os.makedirs(tmp, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=tmp, delete=False) as f:
        json.dump(spec, f)
        spec_path = f.name
    out_path = spec_path[:-5] + "-out.json"
    argv = [sys.executable, "-m", module, "--spec", spec_path, "--out", out_path]
    proc = subprocess.Popen(argv, cwd=os.path.dirname(os.path.dirname(__file__)),
                            start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{spec['system']}: over its {timeout} s limit: stopping it")
        _stop_group(proc)
        rc = "timeout"
    except BaseException:
        _stop_group(proc)      # interrupted: the worker is in its own session
        raise
    finally:
        cleanup_registered()   # servers a dead worker left behind
    try:
        with open(out_path) as f:
            res = json.load(f)
    except (OSError, ValueError):
        res = {"system": spec["system"], "points": [], "info": {}, "notes": [],
               "error": f"worker ended with {rc} and no results"}
    if rc == "timeout":
        res["error"] = f"timed out after {timeout} s" + (
            f" ({res['error']})" if res.get("error") else "")
    for p in (spec_path, out_path):
        try:
            os.remove(p)
        except OSError:
            pass
    return res


def interp_latency(points, recall):
    """Mean latency (s) of a recall/latency curve at `recall` (linear
    interpolation; clamped to the ends)."""
    pts = sorted((p["recall"], p["mean_ms"] / 1e3) for p in points if p.get("qps"))
    if not pts:
        return None
    if recall <= pts[0][0]:
        return pts[0][1]
    for (r0, l0), (r1, l1) in zip(pts, pts[1:]):
        if r0 <= recall <= r1:
            return l0 if r1 == r0 else l0 + (l1 - l0) * (recall - r0) / (r1 - r0)
    return pts[-1][1]


def ivf_lists(n, requested=None):
    """IVF lists: the requested number, else round(4 * sqrt(rows)) (faiss's
    rule of thumb is 4 to 16 * sqrt(rows)), at most rows / 39 (faiss trains on
    at least 39 rows per list). Returns (lists, how it was chosen)."""
    if requested:
        return requested, "--ivf-lists"
    lists = max(1, min(round(4 * n ** 0.5), n // 39))
    return lists, "round(4 * sqrt(rows)), at most rows / 39"


def _points(r, kind):
    """A result's HNSW points (kind "hnsw") or IVF points (kind "ivf")."""
    if kind == "ivf":
        return (r.get("ivf") or {}).get("points") or []
    return r.get("points") or []


def quiver_vs_ceiling(results, kind="hnsw"):
    """quiver's QPS as a fraction of 1 / (wire round trip + faiss search time
    at the same recall), for PostgreSQL's round trip and quiver's own; kind
    "ivf": quiver's and faiss's IVF points."""
    by = {r["system"]: r for r in results}
    q, fa = by.get("quiver"), by.get("faiss")
    knob = "probes" if kind == "ivf" else "ef"
    if not q or not _points(q, kind):
        return None
    if not fa or not _points(fa, kind):
        return {"note": "faiss was not in this run: no ceiling computed"}
    rtts = {}
    for name in ("quiver", "pgvector", "pgwire"):
        w = by.get(name, {}).get("wire")
        if w:
            rtts["quiver" if name == "quiver" else "postgres"] = w["mean_us"] / 1e6
    rows = []
    for p in _points(q, kind):
        if p.get("filter"):
            continue
        lat = interp_latency([x for x in _points(fa, kind) if not x.get("filter")],
                             p["recall"])
        row = {knob: p[knob], "recall": p["recall"], "qps": p["qps"],
               "faiss_ms_at_recall": round(lat * 1e3, 3)}
        for who, rtt in rtts.items():
            ceil = 1.0 / (rtt + lat)
            row[f"ceiling_qps_{who}_rtt"] = round(ceil, 1)
            row[f"fraction_of_{who}_ceiling"] = round(p["qps"] / ceil, 3)
        rows.append(row)
    return {"rtt_us": {k: round(v * 1e6, 1) for k, v in rtts.items()}, "points": rows}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    started = datetime.datetime.now().astimezone()
    command = "bench/run " + " ".join(shlex.quote(x) for x in argv)
    if a.suite == "ingest":
        return ingest.run_suite(a, command, run_worker)
    log(f"{command}: suite={a.suite} dataset={a.dataset} systems={a.systems} "
        f"queries={a.queries} ef={a.efs}")
    load_start = loadavg()
    desc = datasets.prepare(a.dataset, a.quick, a.queries, a.suite)
    log(f"dataset {a.dataset}: {desc['n']} x {desc['dim']} base, {desc['nq']} queries")
    ivf = None
    if a.suite == "ann" and not a.no_ivf:
        lists, rule = ivf_lists(desc["n"], a.ivf_lists)
        ivf = {"lists": lists, "lists_rule": rule, "probes": a.probes}
        log(f"IVF (ivf_flat) after the HNSW points: lists={lists} ({rule}), "
            f"probes={a.probes}")
    spec = {"suite": a.suite, "dataset": desc, "k": a.k, "m": a.m,
            "ef_construction": a.ef_construction, "efs": a.efs, "quick": a.quick,
            "ivf": ivf,
            "clients": [1, 2], "warmup": 20 if a.quick else 200,
            "wire_queries": 500 if a.quick else 5000,
            "system_timeout_s": a.system_timeout,
            "build_timeout_s": max(60, a.system_timeout // 2)}
    to_run = list(a.systems)
    # The PostgreSQL wire ceiling is measured in every run.
    if "pgvector" not in to_run:
        to_run.append("pgwire")
    results = []
    try:
        for name in to_run:
            log(f"=== {name}")
            t0 = time.time()
            res = run_worker({**spec, "system": name}, a.system_timeout)
            res["elapsed_s"] = round(time.time() - t0, 1)
            if res.get("error"):
                log(f"{name}: error: {res['error']}")
            results.append(res)
    finally:
        cleanup_registered()
    out = {
        "suite": a.suite, "dataset": a.dataset, "quick": a.quick, "command": command,
        "date": started.isoformat(timespec="seconds"),
        "machine": {"cpu": lscpu_model(), "cores": os.cpu_count(),
                    "ram_gib": mem_total_gib(), "loadavg_start": load_start,
                    "loadavg_end": loadavg()},
        "params": {"n": desc["n"], "dim": desc["dim"], "queries": desc["nq"], "k": a.k,
                   "m": a.m, "ef_construction": a.ef_construction, "efs": a.efs,
                   "filters": desc["filters"], "dataset_sha256": desc["checksums"],
                   **({"ivf": ivf} if ivf else {})},
        "systems": [r for r in results if r["system"] != "pgwire"],
        "wire": {r["system"] if r["system"] != "pgwire" else "pgvector": r.get("wire")
                 for r in results if r.get("wire")},
    }
    pgw = [r for r in results if r["system"] == "pgwire"]
    if pgw and pgw[0].get("error"):
        out["wire_error"] = pgw[0]["error"]
    out["quiver_vs_ceiling"] = quiver_vs_ceiling(results)
    if ivf:
        out["quiver_vs_ceiling_ivf"] = quiver_vs_ceiling(results, "ivf")
    paths = report.write(out)
    for p in paths:
        log(f"wrote {p}")
    failed = [r["system"] for r in out["systems"] if r.get("error")]
    failed += [f"{r['system']} (IVF)" for r in out["systems"]
               if (r.get("ivf") or {}).get("error")]
    if failed:
        log(f"systems with errors: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: servers stopped, no results written")
        sys.exit(130)
