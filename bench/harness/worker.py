"""Runs one system in its own process and measures it on the driver's
commands (start, load, build; one point; the wire round trip; IVF; stop),
so that main.py can alternate the systems' points."""

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
          # Answers with fewer than k rows (every filter passes more than k).
          "short": sum(1 for r in out
                       if len([x for x in list(r) if x is not None and x >= 0]) < k),
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


class Session:
    """One system held open in this worker between the driver's commands, so
    that the driver can alternate the systems' measurement points (a machine
    whose speed drifts then slows every system alike)."""

    def __init__(self, spec):
        self.spec = spec
        self.data = Loaded(spec["dataset"])
        self.sysobj = systems.get(spec["system"])(spec, self.data)
        self.baseline_rss_mb = round(vm_hwm_mb(os.getpid()) or 0, 1)
        self.t_start = time.perf_counter()
        self.client = self.params = self.client_spec = None
        self.hnsw_notes = None

    def _open(self, client, client_spec):
        self.client, self.client_spec = client, client_spec
        self.params = client.prepare(self.data.queries) if client is not None else None

    def _close(self):
        if self.client is not None and self.client is not self.sysobj:
            self.client.close()
        self.client = self.params = self.client_spec = None

    # commands ---------------------------------------------------------------

    def setup(self):
        """Start, load, build the HNSW index, open the client."""
        s = self.sysobj
        out = {"baseline_rss_mb": self.baseline_rss_mb}
        s.start()
        out["load"] = s.load()
        if out["load"]:
            log(f"{s.name}: loaded {len(self.data.base)} rows: {out['load']}")
        out["build"] = s.build()
        if out["build"]:
            log(f"{s.name}: build: {out['build']}")
        self._open(s.client(), s.client_spec)
        mode = getattr(self.client, "mode", None)
        if mode:
            out["client"] = {"mode": mode}
        out["measures"] = self.client is not None
        out["uses_ef"] = s.uses_ef
        out["supports_ivf"] = s.supports_ivf
        out["rebuilds"] = s.rebuilds and bool(out["build"]) and out["build"].get("seconds") is not None
        return out

    def rebuild(self):
        """Build the HNSW index again (its time, for builds taken in rounds)."""
        build = self.sysobj.rebuild()
        log(f"{self.sysobj.name}: build again: {build}")
        return build

    def point(self, knob, value, filter=""):
        """One measurement point of the open client (see measure_point)."""
        filt = self.data.filters[filter] if filter else None
        return measure_point(self.sysobj, self.client, self.params, self.spec, self.data,
                             knob, value, filter, filt, self.client_spec)

    def wire(self):
        """The round trip of `SELECT $1::int` (servers only; else None)."""
        w = self.sysobj.wire_ceiling(self.spec["wire_queries"])
        if w:
            log(f"{self.sysobj.name}: wire ceiling SELECT $1::int: {w['qps']} qps, "
                f"{w['mean_us']} us per round trip")
        return w

    def end_hnsw(self):
        """Peak RSS and disk with the HNSW index, before any IVF index."""
        self._close()
        return {"memory": self.sysobj.memory(), "disk_mb": self.sysobj.disk_mb()}

    def ivf_setup(self, lists):
        """Replace the HNSW index by an IVF-flat one and open its client."""
        s = self.sysobj
        # Notes the system adds from here on are about the IVF index: they go
        # with its results, not into the HNSW row's status.
        self.hnsw_notes, s.notes = s.notes, []
        log(f"{s.name}: IVF index, lists={lists}")
        build = s.build_ivf(lists)
        log(f"{s.name}: IVF build: {build}")
        self._open(s.ivf_client(), s.ivf_client_spec)
        return {"lists": lists, "build": build}

    def ivf_end(self):
        """Close the IVF client; the notes the IVF phase added."""
        self._close()
        s = self.sysobj
        notes = s.notes
        if self.hnsw_notes is not None:
            s.notes, self.hnsw_notes = self.hnsw_notes, None
        return {"notes": notes}

    def stop(self):
        s = self.sysobj
        out = {}
        try:
            self._close()
        except Exception as e:  # noqa: BLE001 - still stop the system
            out["stop_error"] = f"{type(e).__name__}: {e}"
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001
            out.setdefault("stop_error", f"{type(e).__name__}: {e}")
        if self.hnsw_notes is not None:     # stopped in the IVF phase
            s.notes, self.hnsw_notes = self.hnsw_notes, None
        out.update({"info": s.info, "notes": s.notes,
                    "wall_s": round(time.perf_counter() - self.t_start, 1)})
        return out


COMMANDS = {"setup", "rebuild", "point", "wire", "end_hnsw", "ivf_setup", "ivf_end", "stop"}


def serve(spec, commands, replies):
    """Answer the driver's commands, one JSON object per line each way:
    {"cmd": name, "args": {...}} -> {"ok": result} | {"skipped": why} |
    {"error": what, "traceback": ...}. Ends after "stop" or at the end of
    input; the system is stopped either way."""
    session = None
    stopped = False

    def reply(obj):
        replies.write(json.dumps(obj, default=str) + "\n")
        replies.flush()

    try:
        session = Session(spec)
        reply({"ok": {"ready": True}})
        for line in commands:
            msg = json.loads(line)
            cmd, args = msg.get("cmd"), msg.get("args") or {}
            if cmd not in COMMANDS:
                reply({"error": f"unknown command {cmd!r}"})
                continue
            try:
                result = getattr(session, cmd)(**args)
                stopped = cmd == "stop"
                reply({"ok": result})
            except SkipSystem as e:
                log(f"{spec['system']}: skipped: {e}")
                reply({"skipped": str(e)})
            except Exception as e:  # noqa: BLE001 - the error goes to the driver
                log(f"{spec['system']}: {cmd} FAILED: {type(e).__name__}: {e}")
                reply({"error": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()[-4000:]})
            if stopped:
                break
    except Exception as e:  # noqa: BLE001 - e.g. the dataset would not load
        reply({"error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc()[-4000:]})
    finally:
        if session is not None and not stopped:
            session.stop()


def main():
    # SIGTERM (time limit, interrupt) unwinds through the finally blocks that
    # stop this worker's servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    a = ap.parse_args()
    with open(a.spec) as f:
        spec = json.load(f)
    # Replies go to the original stdout; anything a library prints goes to
    # stderr with the logs.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(spec, sys.stdin, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
