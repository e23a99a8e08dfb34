"""Runs one system in its own process: start, load, build, sweep ef, measure,
stop. Writes one JSON object to --out. Invoked by main.py."""

import argparse
import importlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from queue import Empty

import numpy as np

from . import systems
from .systems.base import SkipSystem
from .common import log, vm_hwm_mb
from .datasets import Loaded, recall_at_k


def timed_pass(client, params, k, filt):
    n = len(params)
    lat = np.empty(n)
    out = [None] * n
    t0 = time.perf_counter()
    for i, p in enumerate(params):
        s = time.perf_counter()
        out[i] = client.search(p, k, filt)
        lat[i] = time.perf_counter() - s
    wall = time.perf_counter() - t0
    return out, lat, wall


def _client_proc(spec, queries_path, nq, ef, k, filt, warmup, barrier, queue):
    """One of the concurrent clients (its own process and connection)."""
    try:
        mod, cls, kwargs = spec
        client = getattr(importlib.import_module(mod), cls)(**kwargs)
        client.set_ef(ef)
        params = client.prepare(np.load(queries_path, mmap_mode="r")[:nq])
        for p in params[:warmup]:
            client.search(p, k, filt)
        barrier.wait(timeout=120)
        t0 = time.monotonic()
        for p in params:
            client.search(p, k, filt)
        t1 = time.monotonic()
        client.close()
        queue.put(("ok", len(params), t0, t1))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        queue.put(("error", f"{type(e).__name__}: {e}", 0, 0))


def multi_client(spec, data, ef, k, filt, nclients, warmup, timeout):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(nclients)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_client_proc,
                         args=(spec, data.desc["queries"], len(data.queries), ef, k, filt,
                               warmup, barrier, queue), daemon=True)
             for _ in range(nclients)]
    for p in procs:
        p.start()
    results = []
    deadline = time.time() + timeout
    try:
        while len(results) < nclients and time.time() < deadline:
            try:
                results.append(queue.get(timeout=1))
            except Empty:
                if not any(p.is_alive() for p in procs):
                    try:
                        results.append(queue.get(timeout=1))
                    except Empty:
                        break
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    errors = [r[1] for r in results if r[0] != "ok"]
    if len(results) < nclients:
        errors.append(f"{nclients - len(results)} client process(es) gave no result "
                      f"(exit codes {[p.exitcode for p in procs]})")
    if errors:
        return {"clients": nclients, "error": errors[0]}
    total = sum(r[1] for r in results)
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    return {"clients": nclients, "qps": round(total / wall, 1), "queries": total}


def measure_point(sysobj, client, params, spec, data, knob, value, fname, filt, client_spec):
    """One point of a sweep: warm-up, one timed pass of every query (one
    client), recall; then, for servers, the same with 2 concurrent clients.
    knob: "ef" (HNSW) or "probes" (IVF), the value set with client.set_ef."""
    k = spec["k"]
    client.set_ef(value)
    timed_pass(client, params[:spec["warmup"]], k, filt)
    out, lat, wall = timed_pass(client, params, k, filt)
    pt = {knob: value, "filter": fname or None,
          "recall": round(recall_at_k(data, out, k, fname), 4),
          "qps": round(len(params) / wall, 1),
          "mean_ms": round(wall / len(params) * 1e3, 3),
          "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
          "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
          "queries": len(params)}
    if sysobj.multi_client and 2 in spec["clients"]:
        pt["two_clients"] = multi_client(
            client_spec(), data, value, k, filt, 2, spec["warmup"],
            timeout=max(120, spec["system_timeout_s"] // 4))
        pt["qps_2c"] = pt["two_clients"].get("qps")
        err = pt["two_clients"].get("error")
        if err and not any(n.startswith("2 clients:") for n in sysobj.notes):
            sysobj.notes.append(f"2 clients: {err[:300]}")
    log(f"{sysobj.name}: {('filter ' + fname + ' ') if fname else ''}"
        f"{knob}={value} recall@{k}={pt['recall']} qps={pt['qps']} "
        f"p50={pt['p50_ms']}ms p99={pt['p99_ms']}ms"
        + (f" 2-client qps={pt.get('qps_2c')}" if "two_clients" in pt else ""))
    return pt


def run_ivf(sysobj, spec, data, out):
    """Replace the HNSW index by an IVF-flat one and sweep the probes, measured
    as the HNSW points are, into `out` (kept when a time limit stops the
    worker midway). A failure is recorded there and does not undo the HNSW
    results."""
    lists, probes = spec["ivf"]["lists"], spec["ivf"]["probes"]
    out.update({"lists": lists, "points": []})
    client = None
    # Notes the system adds from here on are about the IVF index: they go
    # with its results, not into the HNSW row's status.
    hnsw_notes, sysobj.notes = sysobj.notes, []
    try:
        log(f"{sysobj.name}: IVF index, lists={lists}")
        out["build"] = sysobj.build_ivf(lists)
        log(f"{sysobj.name}: IVF build: {out['build']}")
        client = sysobj.ivf_client()
        params = client.prepare(data.queries)
        for p in probes:
            out["points"].append(measure_point(sysobj, client, params, spec, data, "probes",
                                               p, "", None, sysobj.ivf_client_spec))
    except Exception as e:  # noqa: BLE001 - the error goes into the results
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()[-4000:]
        log(f"{sysobj.name}: IVF FAILED: {out['error']}")
    finally:
        if client is not None and client is not sysobj:
            client.close()
        out["notes"], sysobj.notes = sysobj.notes, hnsw_notes


def run(spec):
    data = Loaded(spec["dataset"])
    cls = systems.get(spec["system"])
    sysobj = cls(spec, data)
    res = {"system": spec["system"], "points": []}
    res["baseline_rss_mb"] = round(vm_hwm_mb(os.getpid()) or 0, 1)
    t_start = time.perf_counter()
    try:
        sysobj.start()
        res["load"] = sysobj.load()
        if res["load"]:
            log(f"{sysobj.name}: loaded {len(data.base)} rows: {res['load']}")
        res["build"] = sysobj.build()
        if res["build"]:
            log(f"{sysobj.name}: build: {res['build']}")
        client = sysobj.client()
        if client is not None:
            efs = spec["efs"] if sysobj.uses_ef else [None]
            filters = list(data.filters) if spec["suite"] == "filtered" else [""]
            params = client.prepare(data.queries)
            for fname in filters:
                filt = data.filters[fname]["threshold"] if fname else None
                for ef in efs:
                    pt = measure_point(sysobj, client, params, spec, data, "ef", ef,
                                       fname, filt, sysobj.client_spec)
                    res["points"].append(pt)
            client_info = {"mode": getattr(client, "mode", None)}
            res["client"] = {k_: v for k_, v in client_info.items() if v}
            if client is not sysobj:
                client.close()
        wire = sysobj.wire_ceiling(spec["wire_queries"])
        if wire:
            res["wire"] = wire
            log(f"{sysobj.name}: wire ceiling SELECT $1::int: {wire['qps']} qps, "
                f"{wire['mean_us']} us per round trip")
        res["memory"] = sysobj.memory()
        res["disk_mb"] = sysobj.disk_mb()
        # IVF after everything the HNSW columns report (peak RSS, disk), so
        # those stay the HNSW index's.
        if spec.get("ivf") and sysobj.supports_ivf:
            res["ivf"] = {}
            run_ivf(sysobj, spec, data, res["ivf"])
    except SystemExit:
        res["error"] = "stopped by SIGTERM (time limit or interrupt); partial results"
        log(f"{sysobj.name}: stopped by SIGTERM")
    except SkipSystem as e:
        res["skipped"] = str(e)
        log(f"{sysobj.name}: skipped: {e}")
    except Exception as e:  # noqa: BLE001 - the error goes into the results
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-4000:]
        log(f"{sysobj.name}: FAILED: {res['error']}")
    finally:
        try:
            sysobj.stop()
        except Exception as e:  # noqa: BLE001
            res.setdefault("stop_error", f"{type(e).__name__}: {e}")
        res["info"] = sysobj.info
        res["notes"] = sysobj.notes
        res["wall_s"] = round(time.perf_counter() - t_start, 1)
    return res


def main():
    # SIGTERM (time limit, interrupt) unwinds through the finally blocks that
    # stop this worker's servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.spec) as f:
        spec = json.load(f)
    res = run(spec)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
