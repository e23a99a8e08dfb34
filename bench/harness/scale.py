"""The scale suite: many vectors on one machine with a memory-lean index.

    bench/run --suite scale [--rows 10000000] [--index ivf_rabitq|hnsw_sq]
                            [--ivf-lists N] [--probes 4,8,16,32] [--queries 500]

A generated Gaussian mixture (`synthetic-<rows>-128`, the ann suite's
generator and its exact ground truth) is loaded into one quiver server
through binary COPY (PostgreSQL's format, vectors in pgvector's binary
form, built with numpy), compacted into large segments, indexed with a
quantised index that re-ranks its candidates by exact distance
(`ivf_rabitq`, Milvus's IVF_RABITQ, by default; `hnsw_sq`, Milvus's
HNSW_SQ), and searched with prepared statements and binary vector
parameters by 1, 2 and 4 clients (processes). Reported: load time, compaction
and build times, the server's RSS and disk, and QPS and latency by probes (or
ef) and refine_k, with the best QPS at recall 0.90 / 0.95 / 0.99.

pgvector is not run at this size: at 1,000,000 x 128 its HNSW build took
471 s on this machine (bench/RESULTS.md); ten times the rows is past the
suite's bound.

Bounded: every server is stopped at the end or on error; a point stops after
`--queries` queries (at most 500) or 60 s; the whole run of quiver after
--system-timeout seconds (default 3,600; quick 240).
"""

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import time

import numpy as np

from . import datasets
from .common import (BENCH_PASSWORD, CACHE_DIR, REPO_DIR, RESULTS_DIR, cleanup_registered, dir_size_mb,
                     free_port, log, loadavg, lscpu_model, mem_total_gib, register_pid, terminate_tree,
                     unregister_pid, wait_port)

DIM = 128
FULL_ROWS = 10_000_000
QUICK_ROWS = 200_000
COPY_ROWS = 500_000          # rows per COPY statement
POINT_SECONDS = 60.0         # at most this long per measured point
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"


def _row_dtype(dim):
    # One binary COPY row: field count, then (length, value) per field; a
    # vector is pgvector's binary form (int16 dim, int16 unused, float4s).
    return np.dtype([("nf", ">i2"), ("l1", ">i4"), ("id", ">i8"), ("l2", ">i4"),
                     ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (dim,))])


def copy_binary(conn, base, step=COPY_ROWS):
    """COPY items (id, embedding) FROM STDIN (FORMAT binary), in statements
    of `step` rows; returns seconds."""
    n, dim = base.shape
    dt = _row_dtype(dim)
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        for s in range(0, n, step):
            e = min(s + step, n)
            with cur.copy("COPY items (id, embedding) FROM STDIN (FORMAT binary)") as cp:
                cp.write(HEADER)
                for a in range(s, e, 50_000):
                    b = min(a + 50_000, e)
                    rows = np.empty(b - a, dtype=dt)
                    rows["nf"], rows["l1"], rows["l2"] = 2, 8, 4 + 4 * dim
                    rows["id"] = np.arange(a, b)
                    rows["dim"], rows["unused"] = dim, 0
                    rows["v"] = base[a:b]
                    cp.write(rows.tobytes())
                cp.write(TRAILER)
            log(f"scale: COPY {e:,}/{n:,} rows, {e / (time.perf_counter() - t0):,.0f} rows/s")
    return time.perf_counter() - t0


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024),
                "peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024)}
    except (OSError, KeyError, ValueError):
        return {}


def _files_mb(path, suffix):
    total = 0
    for root, _dirs, files in os.walk(path):
        for fn in files:
            if fn.endswith(suffix):
                try:
                    total += os.path.getsize(os.path.join(root, fn))
                except OSError:
                    pass
    return round(total / 2**20, 1)


def _client_loop(conninfo, setting_sql, queries, deadline_s, out):
    """One client process: run `queries` (binary vectors) until done or the
    deadline; put (ids per query, latencies, wall)."""
    from .systems.pgwire import PgClient
    c = PgClient(conninfo, mode="binary", session_sql=setting_sql)
    qs = c.prepare(queries)
    for q in qs[:5]:
        c.search(q)
    res, lat = [], []
    t0 = time.perf_counter()
    for q in qs:
        s = time.perf_counter()
        res.append(c.search(q))
        lat.append(time.perf_counter() - s)
        if s - t0 > deadline_s:
            break
    wall = time.perf_counter() - t0
    c.close()
    out.put((res, lat, wall))


def measure(conninfo, setting_sql, queries, clients):
    """QPS of `clients` processes, each over all of `queries`; returns the
    first client's answers for recall."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_client_loop,
                         args=(conninfo, setting_sql, queries, POINT_SECONDS, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    got = [out.get(timeout=POINT_SECONDS * 3 + 120) for _ in procs]
    for p in procs:
        p.join(30)
    answered = sum(len(r) for r, _, _ in got)
    wall = max(w for _, _, w in got)
    lat = np.concatenate([np.asarray(l_) for _, l_, _ in got])
    return got[0][0], {"clients": clients, "queries": answered,
                       "qps": round(answered / wall, 1),
                       "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 2),
                       "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 2)}


class _Truth:
    """What `datasets.recall_at_k` reads."""

    def __init__(self, desc):
        self.base = np.load(desc["base"], mmap_mode="r")[:desc["n"]]
        self.queries = np.load(desc["queries"])[:desc["nq"]]
        self.columns, self.filters = {}, {}
        self.gt = {"": (np.load(desc["gt"][""]["ids"]), np.load(desc["gt"][""]["dists"]))}


class QuiverServer:
    def __init__(self):
        from .systems.quiver import quiver_bin
        self.binary = quiver_bin()
        self.workdir = os.path.join(CACHE_DIR, "scale", f"quiver-{os.getpid()}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.datadir = os.path.join(self.workdir, "data")
        os.makedirs(self.datadir)
        self.port = free_port()
        self.logf = open(os.path.join(self.workdir, "server.log"), "wb")
        argv = [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", self.datadir]
        log(f"scale: {' '.join(argv)}")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir,
                                     env={**os.environ, "QUIVER_PASSWORD": BENCH_PASSWORD,
                                          "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        register_pid("quiver-scale", self.proc.pid)
        if not wait_port(self.port, 60, proc=self.proc):
            raise RuntimeError("quiver did not accept connections within 60 s")
        self.conninfo = (f"host=127.0.0.1 port={self.port} user=quiver dbname=default "
                         f"password={BENCH_PASSWORD}")

    def stop(self):
        terminate_tree(self.proc.pid)
        unregister_pid("quiver-scale")
        self.logf.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _best(points, recall):
    ok = [p for p in points if p["recall"] >= recall and p["clients"] == 1]
    return max(ok, key=lambda p: p["qps"]) if ok else None


def run_quiver(a, desc, truth):
    import psycopg
    res = {"system": "quiver", "index": a.index, "points": [], "notes": []}
    srv = QuiverServer()
    try:
        git = subprocess.run(["git", "-C", REPO_DIR, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()
        res["info"] = {"binary": srv.binary, "git": git}
        conn = psycopg.connect(srv.conninfo, autocommit=True)
        conn.execute(f"CREATE COLLECTION items (id BIGINT PRIMARY KEY, embedding VECTOR({DIM}))")
        base = np.load(desc["base"], mmap_mode="r")[:desc["n"]]
        secs = copy_binary(conn, base)
        res["load"] = {"seconds": round(secs, 1), "rows_per_s": round(len(base) / secs),
                       "method": f"COPY binary, statements of {COPY_ROWS:,} rows"}
        t0 = time.perf_counter()
        conn.execute("FLUSH items")
        conn.execute("COMPACT items")
        res["compact_s"] = round(time.perf_counter() - t0, 1)
        segs = conn.execute("SHOW SEGMENTS FROM items").fetchall()
        res["segments"] = len(segs)
        res["after_load"] = {**_rss_mb(srv.proc.pid), "disk_mb": dir_size_mb(srv.datadir)}
        log(f"scale: loaded {len(base):,} rows in {secs:.1f} s; {len(segs)} segments after "
            f"COMPACT ({res['compact_s']} s); {res['after_load']}")
        if a.index == "hnsw_sq":
            with_ = f"m = {a.m}, ef_construction = {a.ef_construction}, sq_type = sq8"
        else:
            with_ = f"lists = {a.lists}"
        stmt = (f"CREATE INDEX items_q ON items USING {a.index} (embedding vector_l2_ops) "
                f"WITH ({with_}, wait = true)")
        res["create_index"] = stmt
        t0 = time.perf_counter()
        conn.execute(stmt)
        res["build_s"] = round(time.perf_counter() - t0, 1)
        res["after_index"] = {**_rss_mb(srv.proc.pid), "disk_mb": dir_size_mb(srv.datadir),
                              "index_files_mb": _files_mb(srv.datadir, ".faiss")}
        log(f"scale: index built in {res['build_s']} s; {res['after_index']}")
        q0 = truth.queries[0]
        res["explain"] = [r[-1] for r in conn.execute(
            "EXPLAIN ANALYZE SELECT id FROM items ORDER BY embedding <-> %s::vector LIMIT 10",
            ("[" + ",".join(f"{x:.9g}" for x in q0) + "]",)).fetchall()]
        conn.close()
        knob = "hnsw.ef_search" if a.index == "hnsw_sq" else "ivfflat.probes"
        settings = lambda value, refine: [f"SET {knob} = {value}",  # noqa: E731
                                          f"SET quiver.refine_k = {refine}"]
        # One client over the grid; then 2 and 4 clients at the fastest
        # setting that reaches each target recall.
        for refine in a.refines:
            for value in a.sweep:
                answers, m = measure(srv.conninfo, settings(value, refine), truth.queries, 1)
                point = {knob: value, "refine_k": refine, **m,
                         "recall": round(datasets.recall_at_k(truth, answers), 4)}
                res["points"].append(point)
                log(f"scale: {point}")
                if point["recall"] >= 0.995:
                    break
        chosen = []
        for target in (0.90, 0.95, 0.99):
            b = _best(res["points"], target)
            if b and b not in chosen:
                chosen.append(b)
        for b in chosen:
            for clients in a.clients[1:]:
                _answers, m = measure(srv.conninfo, settings(b[knob], b["refine_k"]),
                                      truth.queries, clients)
                point = {knob: b[knob], "refine_k": b["refine_k"], **m, "recall": b["recall"]}
                res["points"].append(point)
                log(f"scale: {point}")
        res["final"] = _rss_mb(srv.proc.pid)
    finally:
        srv.stop()
    return res


def report(out):
    q = next((s for s in out["systems"] if s["system"] == "quiver"), {})
    lines = [f"# scale / {out['dataset']}", "",
             f"- command: `{out['command']}`",
             f"- date: {out['date']}",
             f"- machine: {out['machine']['cpu']}, {out['machine']['cores']} cores, "
             f"{out['machine']['ram_gib']} GiB RAM; load average {out['machine']['loadavg_start']} "
             f"at start, {out['machine']['loadavg_end']} at end",
             f"- data: {out['params']['rows']:,} x {DIM} float32 (Gaussian mixture, the ann suite's "
             f"generator), {out['params']['queries']} queries, recall@10 against exact search "
             f"(faiss IndexFlatL2), distance ties counted as hits",
             "- quiver: one server, `COPY ... (FORMAT binary)`, `FLUSH`, `COMPACT`, then "
             f"`{q.get('create_index', '')}`; prepared `SELECT id FROM items ORDER BY embedding "
             "<-> $1 LIMIT 10` with binary vectors; N clients = N processes, each over all queries "
             "(at most 60 s), QPS summed", ""]
    if q.get("error"):
        lines += [f"quiver failed: {q['error']}", ""]
    if q.get("load"):
        knob = "hnsw.ef_search" if q["index"] == "hnsw_sq" else "ivfflat.probes"
        lines += ["| metric | quiver |", "|---|---|",
                  f"| rows | {out['params']['rows']:,} |",
                  f"| binary COPY, s | {q['load']['seconds']} ({q['load']['rows_per_s']:,} rows/s) |",
                  f"| FLUSH + COMPACT, s | {q.get('compact_s')} ({q.get('segments')} segments) |",
                  f"| index build ({q['index']}), s | {q.get('build_s')} |",
                  f"| RSS after load / after index / at the end, MiB | "
                  f"{q.get('after_load', {}).get('rss_mb')} / {q.get('after_index', {}).get('rss_mb')}"
                  f" / {q.get('final', {}).get('rss_mb')} |",
                  f"| peak RSS, MiB | {q.get('final', {}).get('peak_rss_mb')} |",
                  f"| data dir after index, MiB | {q.get('after_index', {}).get('disk_mb')} |",
                  f"| index files, MiB | {q.get('after_index', {}).get('index_files_mb')} |", ""]
        lines += ["| target recall | best QPS (1 client) | setting | recall | p50 ms | p99 ms |",
                  "|---|---|---|---|---|---|"]
        for r in (0.90, 0.95, 0.99):
            b = _best(q["points"], r)
            if b:
                lines.append(f"| {r:.2f} | {b['qps']:,} | {knob} {b[knob]}, refine_k {b['refine_k']} | "
                             f"{b['recall']:.3f} | {b['p50_ms']} | {b['p99_ms']} |")
            else:
                lines.append(f"| {r:.2f} | not reached | | | | |")
        lines += ["", f"| {knob} | refine_k | clients | recall@10 | QPS | p50 ms | p99 ms |",
                  "|---|---|---|---|---|---|---|"]
        for p in q["points"]:
            lines.append(f"| {p[knob]} | {p['refine_k']} | {p['clients']} | {p['recall']} | "
                         f"{p['qps']:,} | {p['p50_ms']} | {p['p99_ms']} |")
        lines += ["", "EXPLAIN ANALYZE of one query:", "", "```", *q.get("explain", []), "```"]
    for n in out.get("notes", []):
        lines += ["", f"- {n}"]
    return "\n".join(lines) + "\n"


def run_suite(a, command):
    import datetime
    started = datetime.datetime.now().astimezone()
    rows = a.rows or (QUICK_ROWS if a.quick else FULL_ROWS)
    a.index = a.index or "ivf_rabitq"
    # Lists: about sqrt of a compacted segment's rows (1 GiB, about 2M rows
    # of 128 dimensions), within the rows faiss trains on in a minute here.
    a.lists = a.ivf_lists or (256 if rows <= 1_000_000 else 2048)
    if a.index == "hnsw_sq":
        a.sweep = a.efs if a.ef else [16, 32, 64, 128]
    else:
        a.sweep = a.probes if a.probes_given else [4, 8, 16, 32]
    # 1-bit codes on this generator's data (128 dimensions, little
    # structure) need more candidates than on clustered data.
    a.refines = [int(x) for x in (a.refine_k or ("2,4" if a.index == "hnsw_sq"
                                                 else "10,20,50")).split(",")]
    a.clients = [1, 2, 4]
    nq = min(a.queries, 500)
    name = f"synthetic-{rows}-{DIM}"
    log(f"{command}: suite=scale dataset={name} index={a.index} sweep={a.sweep}")
    load_start = loadavg()
    desc = datasets.prepare(name, False, nq, "ann")
    truth = _Truth(desc)
    out = {"suite": "scale", "dataset": name, "command": command, "quick": bool(a.quick),
           "date": started.isoformat(timespec="seconds"),
           "machine": {"cpu": lscpu_model(), "cores": os.cpu_count(), "ram_gib": mem_total_gib(),
                       "loadavg_start": load_start},
           "params": {"rows": rows, "dim": DIM, "queries": nq, "index": a.index,
                      "lists": a.lists, "sweep": a.sweep, "refine_k": a.refines},
           "systems": [],
           "notes": ["pgvector not run at this size (its HNSW build took 471 s at 1,000,000 "
                     "x 128 on this machine; see the ann suite's synthetic-1000000-128 "
                     "run)",
                     "not memory-mapped: quiver reads each sealed segment's columns and "
                     "its index file into memory when the collection loads, so the "
                     "collection must fit in RAM (RSS above)"]}
    def out_of_time(_signum, _frame):
        raise TimeoutError(f"the suite passed --system-timeout ({a.system_timeout} s)")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(a.system_timeout))
    try:
        try:
            out["systems"].append(run_quiver(a, desc, truth))
        except Exception as e:  # noqa: BLE001 - reported
            log(f"scale: quiver failed: {e}")
            out["systems"].append({"system": "quiver", "index": a.index, "error": str(e),
                                   "points": []})
    finally:
        signal.alarm(0)
        cleanup_registered()
    out["machine"]["loadavg_end"] = loadavg()
    out["notes"] = [n for n in out["notes"] if n]
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stem = os.path.join(RESULTS_DIR, f"scale-{name}-{a.index}")
    with open(stem + ".json", "w") as f:
        json.dump(out, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(report(out))
    from .report import rebuild_results_md
    rebuild_results_md()
    log(f"scale: wrote {stem}.md and bench/RESULTS.md")
    return 0 if not any(s.get("error") for s in out["systems"]) else 1
