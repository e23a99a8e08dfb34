"""Benchmark driver: prepares the dataset, starts each system in its own
worker process (same data and queries), loads and builds them one after the
other, then measures their points in rounds, alternating the systems point by
point, and writes bench/results/<suite>-<dataset>[-quick].{json,md,png} and
bench/RESULTS.md.

Why alternate: on a shared machine the speed drifts by 2x within minutes. When
each system is measured in its own stretch of time, that drift lands on one
system and not another and moves their ratio; alternating short points, in
several rounds, lets it fall on all of them alike. Each point reported is the
median of its rounds, and the per-round values are kept."""

import argparse
import datetime
import json
import os
import shlex
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from . import datasets, ingest, report, systems
from .common import (CACHE_DIR, cleanup_registered, loadavg, log, lscpu_model,
                     mem_total_gib, settle)

EFS_FULL = [10, 12, 16, 24, 32, 64, 128]
EFS_QUICK = [16, 64]
PROBES_FULL = [1, 4, 16, 32]
PROBES_QUICK = [1, 16]


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    ap.add_argument("--suite", choices=["ann", "filtered", "ingest", "scale"], default="ann")
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
    ap.add_argument("--format", choices=["text", "binary"], default="text",
                    help="ingest: COPY data format (binary: PostgreSQL's, vectors in pgvector's)")
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
    ap.add_argument("--rounds", type=int, default=None,
                    help="ann/filtered: times every point is measured, the systems "
                         "alternating point by point (default 3, quick 1); each point "
                         "reports the median. ingest: loads per system, alternating; "
                         "each system reports its median round")
    ap.add_argument("--build-rounds", type=int, default=None,
                    help="ann/filtered: HNSW builds of quiver and faiss (the build target's "
                         "pair), alternating in the order A B B A ... (default 2, quick 1); "
                         "each reports the mean")
    ap.add_argument("--filters", default=None,
                    help="filtered suite: comma list of filter names (default all that the "
                         "dataset has: " + ", ".join(datasets.FILTERS) + ")")
    ap.add_argument("--pg-iterative-scan", choices=["strict_order", "relaxed_order"],
                    default="relaxed_order",
                    help="filtered suite: pgvector's hnsw.iterative_scan")
    ap.add_argument("--compact", action="store_true",
                    help="ann/filtered: quiver runs COMPACT after loading (one segment "
                         "instead of one per 64 MiB of writes)")
    ap.add_argument("--index", choices=["ivf_rabitq", "hnsw_sq"], default=None,
                    help="scale suite: the quantised index (default ivf_rabitq)")
    ap.add_argument("--refine-k", default=None,
                    help="scale suite: comma list of quiver.refine_k values (default 10)")
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
    a.filters = ([f.strip() for f in a.filters.split(",") if f.strip()] if a.filters
                 else None)
    bad = [f for f in a.filters or [] if f not in datasets.FILTERS]
    if bad:
        ap.error(f"unknown filter(s) {bad}; choose from {list(datasets.FILTERS)}")
    if a.rows is not None and a.rows < 1:
        ap.error("--rows must be positive")
    if a.batch_rows < 1000 or a.batch_rows % 1000:
        ap.error("--batch-rows must be a positive multiple of 1,000")
    if a.queries is None:
        a.queries = 100 if a.quick else 1000
    a.efs = [int(x) for x in a.ef.split(",")] if a.ef else (EFS_QUICK if a.quick else EFS_FULL)
    a.probes_given = a.probes is not None
    a.probes = ([int(x) for x in a.probes.split(",")] if a.probes
                else (PROBES_QUICK if a.quick else PROBES_FULL))
    if any(p < 1 for p in a.probes) or (a.ivf_lists is not None and a.ivf_lists < 1):
        ap.error("--probes and --ivf-lists must be positive")
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    if a.rounds < 1:
        ap.error("--rounds must be positive")
    if a.build_rounds is None:
        a.build_rounds = 1 if a.quick else 2
    if a.build_rounds < 1:
        ap.error("--build-rounds must be positive")
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


def run_worker(spec, timeout, module="harness.ingest"):
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


class WorkerLost(RuntimeError):
    """A worker went over its time limit or died; it has been stopped."""


class Worker:
    """A system's worker process (harness.worker), answering one command at a
    time: a JSON object per line each way."""

    def __init__(self, spec):
        self.name = spec["system"]
        tmp = os.path.join(CACHE_DIR, "tmp")
        os.makedirs(tmp, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=tmp, delete=False) as f:
            json.dump(spec, f)
            self.spec_path = f.name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.worker", "--spec", self.spec_path],
            cwd=os.path.dirname(os.path.dirname(__file__)), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.lost = None

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _reply(self, timeout, what):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            self.lost = f"{what}: over its {timeout} s limit"
            raise WorkerLost(self.lost) from None
        if line is None:
            self.kill()
            self.lost = f"{what}: the worker exited with {self.proc.returncode}"
            raise WorkerLost(self.lost)
        return json.loads(line)

    def ready(self, timeout):
        return self._reply(timeout, "start")

    def call(self, cmd, timeout, **args):
        """Send a command; its reply ({"ok"|"skipped"|"error": ...}).
        Raises WorkerLost when the worker does not answer in time."""
        if self.lost:
            raise WorkerLost(self.lost)
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass    # it exited: _reply says so
        return self._reply(timeout, cmd)

    def kill(self):
        _stop_group(self.proc)

    def close(self, timeout=120):
        """Stop the system (if still running) and the worker."""
        try:
            if not self.lost:
                try:
                    self.proc.stdin.close()   # end of input: the worker stops its system
                except OSError:
                    pass
                self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.proc.poll() is None:
                self.kill()
            try:
                os.remove(self.spec_path)
            except OSError:
                pass


def combine(pts):
    """One point from the same point measured in several rounds: the median
    QPS and latencies, the per-round QPS kept."""
    if len(pts) == 1:
        return pts[0]

    def med(key, of=pts):
        vals = [p[key] for p in of if p.get(key) is not None]
        return round(statistics.median(vals), 3) if vals else None

    out = dict(pts[0])
    recalls = [p["recall"] for p in pts]
    out["recall"] = round(statistics.mean(recalls), 4)
    if len(set(recalls)) > 1:
        out["recall_rounds"] = recalls
    for key in ("qps", "mean_ms", "p50_ms", "p99_ms"):
        out[key] = med(key)
    out["qps"] = round(out["qps"], 1)
    out["qps_rounds"] = [p["qps"] for p in pts]
    two = [p["two_clients"] for p in pts if p.get("two_clients")]
    if two:
        ok = [t for t in two if t.get("qps")]
        out["two_clients"] = {"clients": two[0]["clients"],
                              "qps": round(statistics.median([t["qps"] for t in ok]), 1)
                              if ok else None,
                              "qps_rounds": [t.get("qps") for t in two]}
        errs = [t["error"] for t in two if t.get("error")]
        if errs:
            out["two_clients"]["error"] = errs[0]
        out["qps_2c"] = out["two_clients"]["qps"]
    return out


def combine_wire(ws):
    if len(ws) == 1:
        return ws[0]
    out = {"queries": sum(w["queries"] for w in ws)}
    for key in ("qps", "mean_us", "p50_us", "p99_us"):
        out[key] = round(statistics.median(w[key] for w in ws), 1)
    out["mean_us_rounds"] = [w["mean_us"] for w in ws]
    return out


def _fail(res, reply, what):
    """Record a failed reply (or a lost worker) in a system's results."""
    if "skipped" in reply:
        res["skipped"] = reply["skipped"]
        return
    res["error"] = f"{what}: {reply['error']}" if what else reply["error"]
    if reply.get("traceback"):
        res["traceback"] = reply["traceback"]


class Run:
    """The systems of one run, each in its worker, measured alternately."""

    def __init__(self, spec, names, rounds, timeout):
        self.spec, self.rounds, self.timeout = spec, rounds, timeout
        self.point_timeout = max(120, timeout // 4)
        self.res = {n: {"system": n, "points": []} for n in names}
        self.workers = {}
        self.caps = {}          # what each system's setup said it can do
        self.measuring = []     # systems with a client, in run order

    def _call(self, name, cmd, timeout, into=None, **args):
        """A command's result, or None after recording in `into` (default:
        the system's results) why it failed."""
        into = self.res[name] if into is None else into
        try:
            reply = self.workers[name].call(cmd, timeout, **args)
        except WorkerLost as e:
            into["error"] = str(e)
            log(f"{name}: {e}")
            return None
        if "ok" in reply:
            return reply["ok"]
        _fail(into, reply, "" if cmd in ("setup", "ivf_setup") else cmd)
        return None

    def _alive(self, name):
        r = self.res[name]
        return not r.get("error") and not r.get("skipped") and not self.workers[name].lost

    def setup(self):
        """Start, load and build every system, one after the other."""
        for name, res in self.res.items():
            log(f"=== {name}")
            t0 = time.time()
            w = self.workers[name] = Worker({**self.spec, "system": name})
            try:
                reply = w.ready(300)
            except WorkerLost as e:
                res["error"] = str(e)
                continue
            if "ok" not in reply:
                _fail(res, reply, "start")
                continue
            out = self._call(name, "setup", self.timeout)
            res["setup_s"] = round(time.time() - t0, 1)
            if out is None:
                log(f"{name}: {res.get('error') or 'skipped: ' + str(res.get('skipped'))}")
                continue
            self.caps[name] = out
            for key in ("baseline_rss_mb", "load", "build", "client"):
                if out.get(key) is not None:
                    res[key] = out[key]
            if out["measures"]:
                self.measuring.append(name)

    def rebuild_rounds(self, rounds):
        """Build the HNSW index of each system that can (quiver, faiss) again,
        `rounds` - 1 times, reversing the order each time (A B, B A, A B,
        ...) so that a drifting machine slows their builds alike; each
        system's build reports the mean of its builds."""
        names = [n for n in self.res if self._alive(n) and self.caps[n].get("rebuilds")]
        if rounds < 2 or not names:
            return
        times = {n: [self.res[n]["build"]["seconds"]] for n in names}
        for r in range(1, rounds):
            for name in (names[::-1] if r % 2 else names):
                if not self._alive(name):
                    continue
                log(f"=== {name}: build {r + 1} of {rounds}")
                build = self._call(name, "rebuild", self.timeout)
                if build and build.get("seconds") is not None:
                    times[name].append(build["seconds"])
                    self.res[name]["build"] = build
        for name, ts in times.items():
            if self._alive(name):
                self.res[name]["build"]["seconds"] = round(statistics.mean(ts), 2)
                self.res[name]["build"]["seconds_rounds"] = ts

    @staticmethod
    def _order(names, turn):
        """`names` rotated by `turn`: the systems take turns going first."""
        if not names:
            return []
        t = turn % len(names)
        return names[t:] + names[:t]

    def sweep(self, names, keys_of, knob, into_of):
        """Measure each system's points (keys_of(name): [(filter, value)])
        `rounds` times, the systems alternating point by point. Returns
        {name: [combined point]}; a system whose point fails is measured no
        further, the failure recorded in into_of(name)."""
        got = {n: {} for n in names}
        live = list(names)
        steps = max((len(keys_of(n)) for n in names), default=0)
        waited, busy = settle()
        log(f"settled before measuring: {waited} s (sync, then CPUs {busy:.0%} busy)")
        for r in range(self.rounds):
            if self.rounds > 1:
                log(f"--- round {r + 1} of {self.rounds}")
            for i in range(steps):
                for name in self._order(live, r + i):
                    keys = keys_of(name)
                    if i >= len(keys):
                        continue
                    fname, value = keys[i]
                    pt = self._call(name, "point", self.point_timeout, into=into_of(name),
                                    knob=knob, value=value, filter=fname)
                    if pt is None:
                        live.remove(name)
                    else:
                        got[name].setdefault(keys[i], []).append(pt)
        return {n: [combine(got[n][key]) for key in keys_of(n) if key in got[n]]
                for n in names}

    def wire_rounds(self):
        """The `SELECT $1::int` round trip of every server, once a round,
        the servers taking turns to go first."""
        names = [n for n in self.res if self._alive(n)]
        got = {}
        for r in range(self.rounds):
            for name in self._order(names, r):
                w = self._call(name, "wire", self.point_timeout)
                if w:
                    got.setdefault(name, []).append(w)
        for name, ws in got.items():
            self.res[name]["wire"] = combine_wire(ws)

    def hnsw(self, filters, efs):
        """The HNSW points, the wire round trips, then memory and disk."""
        def keys_of(name):
            vals = efs if self.caps[name]["uses_ef"] else [None]
            return [(f, v) for f in filters for v in vals]

        names = [n for n in self.measuring if self._alive(n)]
        for name, pts in self.sweep(names, keys_of, "ef", lambda n: self.res[n]).items():
            self.res[name]["points"] = pts
        self.wire_rounds()
        for name in self.res:
            if self._alive(name):
                out = self._call(name, "end_hnsw", self.point_timeout)
                if out:
                    self.res[name].update(out)

    def ivf(self, ivf):
        """Replace each system's HNSW index by an IVF-flat one (one after the
        other), then measure the probes alternately. An IVF failure is
        recorded with the IVF results and does not undo the HNSW ones."""
        names = [n for n in self.measuring if self._alive(n) and self.caps[n]["supports_ivf"]]
        out = {n: {"lists": ivf["lists"], "points": []} for n in names}
        for name in names:
            built = self._call(name, "ivf_setup", self.timeout, into=out[name],
                               lists=ivf["lists"])
            if built:
                out[name].update(built)
        ok = [n for n in names if not out[n].get("error") and not out[n].get("skipped")]
        keys = [("", p) for p in ivf["probes"]]
        for name, pts in self.sweep(ok, lambda n: keys, "probes", lambda n: out[n]).items():
            out[name]["points"] = pts
        for name in names:
            if not self.workers[name].lost:
                end = self._call(name, "ivf_end", self.point_timeout, into=out[name])
                if end:
                    out[name]["notes"] = end["notes"]
            self.res[name]["ivf"] = out[name]

    def stop(self):
        """Stop every system (its worker reports info and notes) and worker."""
        for name, w in self.workers.items():
            if not w.lost and w.proc.poll() is None:
                out = self._call(name, "stop", self.point_timeout)
                if out:
                    self.res[name].update(out)
            w.close()


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
    if a.suite == "scale":
        from . import scale
        return scale.run_suite(a, command)
    log(f"{command}: suite={a.suite} dataset={a.dataset} systems={a.systems} "
        f"queries={a.queries} ef={a.efs}")
    load_start = loadavg()
    desc = datasets.prepare(a.dataset, a.quick, a.queries, a.suite, a.filters)
    log(f"dataset {a.dataset}: {desc['n']} x {desc['dim']} base, {desc['nq']} queries")
    ivf = None
    if a.suite == "ann" and not a.no_ivf:
        lists, rule = ivf_lists(desc["n"], a.ivf_lists)
        ivf = {"lists": lists, "lists_rule": rule, "probes": a.probes}
        log(f"IVF (ivf_flat) after the HNSW points: lists={lists} ({rule}), "
            f"probes={a.probes}")
    spec = {"suite": a.suite, "dataset": desc, "k": a.k, "m": a.m,
            "ef_construction": a.ef_construction, "efs": a.efs, "quick": a.quick,
            "ivf": ivf, "pg_iterative_scan": a.pg_iterative_scan, "compact": a.compact,
            "clients": [1, 2], "warmup": 20 if a.quick else 200, "rounds": a.rounds,
            "wire_queries": 500 if a.quick else 5000,
            "system_timeout_s": a.system_timeout,
            "build_timeout_s": max(60, a.system_timeout // 2)}
    to_run = list(a.systems)
    # The PostgreSQL wire ceiling is measured in every run.
    if "pgvector" not in to_run:
        to_run.append("pgwire")
    log(f"{a.rounds} round(s) of every point, the systems alternating point by point")
    run = Run(spec, to_run, a.rounds, a.system_timeout)
    try:
        run.setup()
        run.rebuild_rounds(a.build_rounds)
        # The filtered suite measures the unfiltered search too: filtered
        # QPS is judged against it.
        filters = [""] + list(desc["filters"]) if a.suite == "filtered" else [""]
        run.hnsw(filters, a.efs)
        if ivf:
            run.ivf(ivf)
    finally:
        try:
            run.stop()
        finally:
            cleanup_registered()
    results = list(run.res.values())
    for r in results:
        if r.get("error"):
            log(f"{r['system']}: error: {r['error']}")
    out = {
        "suite": a.suite, "dataset": a.dataset, "quick": a.quick, "command": command,
        "date": started.isoformat(timespec="seconds"),
        "machine": {"cpu": lscpu_model(), "cores": os.cpu_count(),
                    "ram_gib": mem_total_gib(), "loadavg_start": load_start,
                    "loadavg_end": loadavg()},
        "params": {"n": desc["n"], "dim": desc["dim"], "queries": desc["nq"], "k": a.k,
                   "m": a.m, "ef_construction": a.ef_construction, "efs": a.efs,
                   "filters": desc["filters"], "dataset_sha256": desc["checksums"],
                   **({"pg_iterative_scan": a.pg_iterative_scan}
                      if a.suite == "filtered" else {}),
                   "rounds": a.rounds, "build_rounds": a.build_rounds,
                   **({"quiver_compact": True} if a.compact else {}),
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
