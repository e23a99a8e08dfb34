"""Ingest suite: bulk-load N rows (id bigint, category int, price double
precision, embedding vector(128)) with COPY ... FROM STDIN (text format, or
PostgreSQL's binary format with --format binary) over
pgwire into quiver and into PostgreSQL 15 + pgvector, one client, and measure
rows/s, bytes written, data-dir size, peak RSS and the time from a restart
(after a hard kill) to the first answered `SELECT count(*) FROM items`.

The rows are generated once per (rows, seed) with numpy into a text spool
under bench/data/ingest-<rows>-128-s<seed>/ (1,000 rows at a time, never all in
memory; byte offsets every 1,000 rows, sha256 in manifest.json, verified on
reuse). Both systems are sent the same bytes from that file, so formatting
floats in Python is not part of either system's time.

Per system, in a worker process with a time limit (harness.main.run_worker):
  quiver:   quiver serve --listen 127.0.0.1:<free port> --data-dir <scratch>
            CREATE COLLECTION items (id BIGINT PRIMARY KEY, category INT,
                price DOUBLE PRECISION, embedding VECTOR(128))
            COPY items FROM STDIN   x ceil(rows / batch)       (timed)
            SELECT count(*) FROM items
            FLUSH items                                        (timed; n/a if refused)
            du of the data dir, /proc/<pid>/io write_bytes, VmHWM
            SIGKILL; spawn again on the same data dir; time until the first
            SELECT count(*) FROM items answers (and whether it says rows)
  pgvector: the private cluster of harness.systems.pgvector, database bench_ingest,
            the same table and COPY statements, CHECKPOINT in place of FLUSH,
            growth of the cluster directory, write_bytes of its processes,
            pg_ctl stop -m immediate, pg_ctl start, time to the first count(*).
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

import numpy as np

from .common import (BENCH_PASSWORD, CACHE_DIR, DATA_DIR, REPO_DIR, alive, cleanup_registered, free_port,
                     loadavg, log, lscpu_model, mem_total_gib, proc_tree, register_pid,
                     terminate_tree, unregister_pid, vm_hwm_mb, wait_port)

DIM = 128
SEED = 20241121
GROUP = 1000             # rows per generation step and per offset record
SPOOL_VERSION = 1        # bump when the text format changes
FULL_ROWS = 1_000_000
QUICK_ROWS = 100_000
SYSTEMS = ["quiver", "pgvector"]
TABLE_COLS = ("id bigint PRIMARY KEY, category int, price double precision, "
              "embedding vector(%d)" % DIM)
QUIVER_COLS = ("id BIGINT PRIMARY KEY, category INT, price DOUBLE PRECISION, "
               "embedding VECTOR(%d)" % DIM)
# After a restart, errors from a server that already accepts connections are
# retried this long (a server may answer before it has reopened its tables).
QUERY_ERROR_GRACE_S = 10.0


# --- data ----------------------------------------------------------------------

def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _group_draws(g, seed, rows):
    """Group g's first row, row count, embeddings, categories and prices:
    its own generator (seed, g), so the first N rows are the same for any
    total and in either format."""
    r0 = g * GROUP
    m = min(GROUP, rows - r0)
    rng = np.random.default_rng([seed, g])
    emb = rng.standard_normal((m, DIM), dtype=np.float32)
    cat = rng.integers(0, 100, m)
    price = rng.uniform(1.0, 1000.0, m)
    return r0, m, emb, cat, price


def _group_text(g, seed, rows):
    """Rows g*GROUP .. min((g+1)*GROUP, rows) as COPY text. Each group has its
    own generator (seed, g): the first N rows are the same for any total."""
    r0, m, emb, cat, price = _group_draws(g, seed, rows)
    fmt = "%d\t%d\t%.2f\t[" + ",".join(["%.9g"] * DIM) + "]\n"
    return "".join(fmt % (r0 + j, c, p, *e)
                   for j, (c, p, e) in enumerate(zip(cat.tolist(), price.tolist(),
                                                     emb.tolist()))).encode()


# PostgreSQL's binary COPY format: signature, flags, header extension;
# the trailer is a field count of -1.
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
BINARY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def _group_binary(g, seed, rows):
    """The rows of _group_text(g, ...) in PostgreSQL's binary COPY format
    (without header or trailer): int8, int4, float8 (the text's price,
    rounded to 2 decimals) and pgvector's binary vector (dim, unused,
    float4 values, big-endian). The same generator draws, so the same rows."""
    r0, m, emb, cat, price = _group_draws(g, seed, rows)
    row = np.dtype([("n", ">i2"), ("l_id", ">i4"), ("id", ">i8"), ("l_cat", ">i4"),
                    ("cat", ">i4"), ("l_price", ">i4"), ("price", ">f8"), ("l_v", ">i4"),
                    ("dim", ">u2"), ("unused", ">u2"), ("v", ">f4", (DIM,))])
    out = np.zeros(m, dtype=row)
    out["n"], out["l_id"], out["l_cat"], out["l_price"] = 4, 8, 4, 8
    out["l_v"], out["dim"] = 4 + 4 * DIM, DIM
    out["id"] = np.arange(r0, r0 + m)
    out["cat"] = cat
    out["price"] = [float("%.2f" % p) for p in price.tolist()]
    out["v"] = emb
    return out.tobytes()


def prepare_spool(rows, seed=SEED, fmt="text"):
    """The COPY data (text or binary) of `rows` rows in a file, generated once
    and verified on reuse."""
    d = os.path.join(DATA_DIR, f"ingest-{rows}-{DIM}-s{seed}")
    os.makedirs(d, exist_ok=True)
    name = "items.tsv" if fmt == "text" else "items.bin"
    offs_name = "offsets.npy" if fmt == "text" else "offsets-binary.npy"
    path, offs_path = os.path.join(d, name), os.path.join(d, offs_name)
    man_path = os.path.join(d, "manifest.json" if fmt == "text" else "manifest-binary.json")
    group = _group_text if fmt == "text" else _group_binary
    try:
        with open(man_path) as f:
            man = json.load(f)
    except (OSError, ValueError):
        man = None
    want = {"rows": rows, "dim": DIM, "seed": seed, "version": SPOOL_VERSION, "format": fmt}
    if man and all(man.get(k) == v for k, v in want.items()) and os.path.exists(path) \
            and os.path.exists(offs_path) and os.path.getsize(path) == man.get("bytes"):
        t0 = time.perf_counter()
        if _sha256(path) == man.get("sha256") and _sha256(offs_path) == man.get("offsets_sha256"):
            log(f"ingest data: reusing {path} ({man['bytes'] / 2**20:,.0f} MiB, "
                f"checksum verified in {time.perf_counter() - t0:.1f} s)")
            return {**man, "path": path, "offsets": offs_path}
        log(f"ingest data: checksum mismatch in {d}: regenerating")
    ngroups = (rows + GROUP - 1) // GROUP
    log(f"ingest data: generating {rows:,} rows x {DIM} dims (seed {seed}) into {path}")
    offs = np.zeros(ngroups + 1, dtype=np.int64)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pos = 0
        for g in range(ngroups):
            b = group(g, seed, rows)
            f.write(b)
            h.update(b)
            pos += len(b)
            offs[g + 1] = pos
            if (g + 1) % 100 == 0 or g + 1 == ngroups:
                log(f"ingest data: {min((g + 1) * GROUP, rows):,}/{rows:,} rows, "
                    f"{pos / 2**20:,.0f} MiB, {time.perf_counter() - t0:.0f} s")
    np.save(offs_path, offs)
    os.replace(tmp, path)
    man = {**want, "bytes": int(pos), "sha256": h.hexdigest(),
           "offsets_sha256": _sha256(offs_path),
           "columns": "id bigint (0..rows-1), category int (uniform 0..99), "
                      "price double precision (uniform 1..1000, 2 decimals), "
                      f"embedding vector({DIM}) (standard normal float32, %.9g)",
           "generated_s": round(time.perf_counter() - t0, 1)}
    with open(man_path + ".tmp", "w") as f:
        json.dump(man, f, indent=1, sort_keys=True)
    os.replace(man_path + ".tmp", man_path)
    return {**man, "path": path, "offsets": offs_path}


class Spool:
    """Reads the spool back one 1,000-row group at a time."""

    def __init__(self, desc):
        self.desc = desc
        self.rows = desc["rows"]
        self.offs = np.load(desc["offsets"])
        self.f = open(desc["path"], "rb")

    def groups(self, r0, r1):
        """The text of rows r0..r1 (multiples of GROUP, or r1 = rows), by group."""
        g0, g1 = r0 // GROUP, (r1 + GROUP - 1) // GROUP
        self.f.seek(int(self.offs[g0]))
        for g in range(g0, g1):
            yield self.f.read(int(self.offs[g + 1] - self.offs[g]))

    def nbytes(self, r0, r1):
        return int(self.offs[(r1 + GROUP - 1) // GROUP] - self.offs[r0 // GROUP])

    def close(self):
        self.f.close()


# --- measurements ----------------------------------------------------------------

def proc_io(pid):
    """/proc/<pid>/io as a dict of ints (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k.strip(): int(v) for k, v in (line.split(":") for line in f)}
    except (OSError, ValueError):
        return None


def proc_cpu_s(pid):
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def tree_snapshot(pid):
    """{pid: (write_bytes - cancelled_write_bytes, cpu_s)} over a process tree."""
    snap = {}
    for p in proc_tree(pid):
        io = proc_io(p)
        snap[p] = (None if io is None else io["write_bytes"] - io["cancelled_write_bytes"],
                   proc_cpu_s(p))
    return snap


def snapshot_delta(before, after):
    """Bytes written and CPU seconds between two snapshots (processes that
    appeared in between count from zero; ones that exited are not counted)."""
    wb = [a[0] - (before.get(p, (0, 0))[0] or 0) for p, a in after.items() if a[0] is not None]
    cpu = [a[1] - (before.get(p, (0, 0))[1] or 0) for p, a in after.items() if a[1] is not None]
    return (sum(wb) if wb else None), (round(sum(cpu), 2) if cpu else None)


def du(path):
    """Apparent and allocated bytes under path, and per top-level entry."""
    out = {"bytes": 0, "allocated_bytes": 0, "files": 0, "parts": {}}
    if not os.path.isdir(path):
        return None
    for root, _dirs, files in os.walk(path):
        rel = os.path.relpath(root, path)
        top = rel.split(os.sep)[0] if rel != "." else None
        for fn in files:
            try:
                st = os.lstat(os.path.join(root, fn))
            except OSError:
                continue
            out["bytes"] += st.st_size
            out["allocated_bytes"] += st.st_blocks * 512
            out["files"] += 1
            key = top or fn
            out["parts"][key] = out["parts"].get(key, 0) + st.st_size
    return out


def du_delta(before, after):
    if not before or not after:
        return None
    parts = {k: v - before["parts"].get(k, 0) for k, v in after["parts"].items()}
    return {"bytes": after["bytes"] - before["bytes"],
            "allocated_bytes": after["allocated_bytes"] - before["allocated_bytes"],
            "files": after["files"] - before["files"],
            "parts": {k: v for k, v in parts.items() if v}}


def poll_first_answer(t0, conninfo, expect, deadline, dead):
    """From t0 (the spawn), connect and run SELECT count(*) FROM items until it
    answers. Returns seconds to the first TCP/pgwire connection, to the first
    answer, that answer, and seconds until the count equals `expect`. Errors
    after connecting are retried for QUERY_ERROR_GRACE_S, a wrong count while
    it keeps changing (and then QUERY_ERROR_GRACE_S more), all before `deadline`."""
    import psycopg
    out = {"connect_s": None, "first_answer_s": None, "count": None,
           "full_count_s": None, "error": None}
    conn, first_conn, last_err = None, None, None
    last_count, last_change = None, None
    try:
        while time.time() < deadline:
            if dead():
                out["error"] = f"server exited during restart ({last_err or 'no error seen'})"
                return out
            if conn is None or conn.closed:
                try:
                    conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=2)
                except Exception as e:  # noqa: BLE001 - not up yet
                    last_err = f"{type(e).__name__}: {str(e).strip()[:300]}"
                    time.sleep(0.01)
                    continue
                if first_conn is None:
                    first_conn = time.perf_counter()
                    out["connect_s"] = round(first_conn - t0, 3)
            try:
                n = conn.execute("SELECT count(*) FROM items").fetchone()[0]
            except Exception as e:  # noqa: BLE001 - table not reopened yet?
                last_err = f"{type(e).__name__}: {str(e).strip()[:300]}"
                if time.perf_counter() - first_conn > QUERY_ERROR_GRACE_S:
                    break
                time.sleep(0.05)
                continue
            now = time.perf_counter()
            if out["first_answer_s"] is None:
                out["first_answer_s"] = round(now - t0, 3)
                out["count"] = int(n)
            if int(n) == expect:
                out["full_count_s"] = round(now - t0, 3)
                out["error"] = None
                return out
            # A partial count may be a replay in progress: wait while it moves.
            if int(n) != last_count:
                last_count, last_change = int(n), now
            last_err = f"count(*) = {n}, expected {expect}"
            if now - last_change > QUERY_ERROR_GRACE_S:
                break
            time.sleep(0.05)
        out["error"] = last_err or "no answer before the deadline"
        return out
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def copy_load(conn, spool, rows, batch_rows, who, table="items", fmt="text"):
    """COPY <table> FROM STDIN, one statement per batch, in `fmt` (text, or
    PostgreSQL's binary format); returns the timing."""
    binary = fmt == "binary"
    statement = f"COPY {table} FROM STDIN" + (" (FORMAT binary)" if binary else "")
    nb = (rows + batch_rows - 1) // batch_rows
    batch_s = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    with conn.cursor() as cur:
        for b in range(nb):
            r0, r1 = b * batch_rows, min((b + 1) * batch_rows, rows)
            s = time.perf_counter()
            with cur.copy(statement) as cp:
                if binary:
                    cp.write(BINARY_HEADER)
                for chunk in spool.groups(r0, r1):
                    cp.write(chunk)
                if binary:
                    cp.write(BINARY_TRAILER)
            batch_s.append(round(time.perf_counter() - s, 3))
            if b == 0 or (b + 1) % max(1, nb // 10) == 0 or b + 1 == nb:
                log(f"{who}: COPY {r1:,}/{rows:,} rows, {r1 / (time.perf_counter() - t0):,.0f} rows/s")
    secs = time.perf_counter() - t0
    text = spool.nbytes(0, rows)
    return {"rows": rows, "statements": nb, "batch_rows": batch_rows,
            "seconds": round(secs, 3), "rows_per_s": round(rows / secs, 1),
            "text_bytes": text, "text_mb_per_s": round(text / secs / 2**20, 1),
            "client_cpu_s": round(time.process_time() - c0, 2),
            "batch_seconds": batch_s,
            "format": fmt,
            "method": f"COPY {fmt}, {nb} statements of up to {batch_rows:,} rows, one client"}


def _err(e):
    return f"{type(e).__name__}: {str(e).strip()[:500]}"


# --- quiver ------------------------------------------------------------------------

class QuiverIngest:
    name = "quiver"

    def __init__(self, spec, res):
        self.spec, self.res = spec, res
        self.info, self.notes = res["info"], res["notes"]
        self.proc = None
        self.logf = None

    def _spawn(self):
        self.logf = open(self.logpath, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir,
                                     env={**os.environ,
                                          "RUST_LOG": os.environ.get("RUST_LOG", "info"),
                                          "QUIVER_PASSWORD": BENCH_PASSWORD})
        register_pid("quiver-ingest", self.proc.pid)
        return t0

    def _kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                terminate_tree(self.proc.pid, grace=5)
                self.proc.wait(timeout=10)
        unregister_pid("quiver-ingest")
        if self.logf is not None:
            self.logf.close()
            self.logf = None

    def log_tail(self, n=2000):
        try:
            with open(self.logpath, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def run(self, spool):
        import psycopg
        from .systems.quiver import quiver_bin
        binary = quiver_bin()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"quiver binary not found at {binary} (set QUIVER_BIN)")
        self.info["binary"] = binary
        self.info["binary_mtime"] = time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(binary)))
        try:
            self.info["version"] = subprocess.run([binary, "--version"], capture_output=True,
                                                  text=True, timeout=10).stdout.strip()
            self.info["git"] = subprocess.run(
                ["git", "-C", REPO_DIR, "rev-parse", "--short", "HEAD"], capture_output=True,
                text=True, timeout=10, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.workdir = os.path.join(CACHE_DIR, "ingest", f"quiver-{os.getpid()}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.datadir = os.path.join(self.workdir, "data")
        os.makedirs(self.datadir)
        self.logpath = os.path.join(self.workdir, "server.log")
        self.port = free_port()
        self.argv = [binary, "serve", "--listen", f"127.0.0.1:{self.port}",
                     "--data-dir", self.datadir]
        conninfo = (f"host=127.0.0.1 port={self.port} user=quiver dbname=default "
                    f"password={BENCH_PASSWORD}")
        log(f"quiver: {' '.join(self.argv)}")
        try:
            self._run(spool, psycopg, conninfo)
        finally:
            if self.proc is not None:
                if self.proc.poll() is not None and "restart" not in self.res:
                    self.notes.append(f"quiver exited by itself with code {self.proc.returncode}")
                self._kill(signal.SIGTERM)
            self.info["server_log_tail"] = self.log_tail()
            if os.environ.get("QUIVER_BENCH_KEEP_DATA") != "1":
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self, spool, psycopg, conninfo):
        res, rows = self.res, self.spec["rows"]
        t0 = self._spawn()
        if not wait_port(self.port, 60, proc=self.proc):
            raise RuntimeError(f"quiver did not accept connections within 60 s "
                               f"(exit code {self.proc.poll()}); log:\n{self.log_tail()}")
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        res["startup_empty_s"] = round(time.perf_counter() - t0, 3)
        try:
            conn.execute(f"CREATE COLLECTION items ({QUIVER_COLS})")
            res["create"] = "CREATE COLLECTION"
        except psycopg.Error as e:
            self.notes.append(f"CREATE COLLECTION failed ({_err(e)[:150]}): CREATE TABLE")
            conn.execute(f"CREATE TABLE items ({QUIVER_COLS})")
            res["create"] = "CREATE TABLE"
        pid = self.proc.pid
        io0, cpu0 = proc_io(pid), proc_cpu_s(pid)
        res["load"] = copy_load(conn, spool, rows, self.spec["batch_rows"], "quiver",
                                fmt=self.spec.get("format", "text"))
        cpu1 = proc_cpu_s(pid)
        res["load"]["server_cpu_s"] = None if cpu0 is None else round(cpu1 - cpu0, 2)
        log(f"quiver: loaded {rows:,} rows in {res['load']['seconds']:.1f} s "
            f"({res['load']['rows_per_s']:,.0f} rows/s)")
        res["count"] = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        if res["count"] != rows:
            self.notes.append(f"count(*) = {res['count']} after loading {rows}")
        res["data_dir_after_load"] = du(self.datadir)
        t1 = time.perf_counter()
        try:
            conn.execute("FLUSH items")
            res["flush"] = {"statement": "FLUSH items", "seconds": round(time.perf_counter() - t1, 3)}
        except psycopg.Error as e:
            res["flush"] = {"statement": "FLUSH items", "seconds": None, "error": _err(e)}
            self.notes.append(f"FLUSH items failed: {_err(e)[:150]}")
            log(f"quiver: FLUSH items failed: {_err(e)}")
        io1 = proc_io(pid)
        if io0 and io1:
            res["bytes_written"] = {
                "bytes": (io1["write_bytes"] - io1["cancelled_write_bytes"])
                - (io0["write_bytes"] - io0["cancelled_write_bytes"]),
                "since_start_bytes": io1["write_bytes"] - io1["cancelled_write_bytes"],
                "wchar_bytes": io1["wchar"] - io0["wchar"],
                "scope": "quiver process, /proc/<pid>/io write_bytes - cancelled_write_bytes, "
                         "from after CREATE to after FLUSH"}
        res["data_dir"] = du(self.datadir)
        res["data_dir"]["wal_bytes"] = res["data_dir"]["parts"].get("wal", 0)
        res["data_dir"]["scope"] = "quiver --data-dir (after FLUSH)"
        res["wal_bytes"] = res["data_dir_after_load"]["parts"].get("wal", 0)
        hwm = vm_hwm_mb(pid)
        res["memory"] = {"peak_rss_mb": None if hwm is None else round(hwm, 1),
                         "scope": "quiver server process (VmHWM)"}
        conn.close()
        # Hard kill, then the same command on the same data dir.
        log("quiver: SIGKILL, restarting on the same data dir")
        self._kill(signal.SIGKILL)
        t0 = self._spawn()
        deadline = time.time() + self.spec["restart_timeout_s"]
        r = poll_first_answer(t0, conninfo, rows, deadline, lambda: self.proc.poll() is not None)
        r["method"] = "SIGKILL, then quiver serve on the same --data-dir"
        hwm = vm_hwm_mb(self.proc.pid)
        r["peak_rss_mb_after"] = None if hwm is None else round(hwm, 1)
        res["restart"] = r
        if r["error"]:
            self.notes.append(f"restart: {r['error'][:200]}")
        log(f"quiver: restart: {r}")


# --- PostgreSQL 15 + pgvector -----------------------------------------------------------

class PgIngest:
    """PostgreSQL 15 + pgvector in its own cluster (bench/.cache/pg-ingest), made
    fresh for each run so that crash recovery (which fsyncs the whole data
    directory) and the size of the directory are this load's alone."""
    name = "pgvector"
    DB = "bench_ingest"

    def __init__(self, spec, res):
        self.spec, self.res = spec, res
        self.info, self.notes = res["info"], res["notes"]
        self.cluster = None

    def run(self, spool):
        import psycopg
        from .systems import pgvector as pgv
        self.pgv = pgv
        self.cluster = pgv.PgCluster(os.path.join(CACHE_DIR, "pg-ingest"))
        self.cluster.start(fresh=True)
        try:
            self._run(spool, psycopg)
        finally:
            if self.cluster.pid is None:      # lost track during the restart
                try:
                    with open(os.path.join(self.cluster.data, "postmaster.pid")) as f:
                        self.cluster.pid = int(f.readline())
                except (OSError, ValueError):
                    pass
            self.cluster.stop()
            if os.environ.get("QUIVER_BENCH_KEEP_DATA") != "1" and not alive(self.cluster.pid or 0):
                shutil.rmtree(self.cluster.data, ignore_errors=True)

    def _pg_sizes(self, conn):
        """Sizes on disk: the database directory, pg_wal, the whole cluster."""
        db = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
        wal = du(os.path.join(self.cluster.data, "pg_wal"))
        cl = du(self.cluster.data)
        return {"database_bytes": db, "pg_wal_bytes": wal and wal["bytes"],
                "cluster_bytes": cl and cl["bytes"],
                "cluster_allocated_bytes": cl and cl["allocated_bytes"]}

    def _run(self, spool, psycopg):
        res, rows, pgv = self.res, self.spec["rows"], self.pgv
        with psycopg.connect(self.cluster.conninfo(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {self.DB}")
        conninfo = self.cluster.conninfo(self.DB)
        conn = psycopg.connect(conninfo, autocommit=True)
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        self.info["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
        self.info["pgvector"] = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        self.info["cluster"] = self.cluster.data
        self.info["settings"] = {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in
                                 ("shared_buffers", "synchronous_commit", "fsync", "wal_level",
                                  "max_wal_size", "full_page_writes",
                                  "recovery_init_sync_method")}
        conn.execute(f"CREATE TABLE items ({TABLE_COLS})")
        res["create"] = "CREATE TABLE"
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        conn.execute("CHECKPOINT")
        sizes0 = self._pg_sizes(conn)
        snap0 = tree_snapshot(self.cluster.pid)
        res["load"] = copy_load(conn, spool, rows, self.spec["batch_rows"], "pgvector",
                                fmt=self.spec.get("format", "text"))
        _, cpu = snapshot_delta(snap0, tree_snapshot(self.cluster.pid))
        res["load"]["server_cpu_s"] = cpu
        log(f"pgvector: loaded {rows:,} rows in {res['load']['seconds']:.1f} s "
            f"({res['load']['rows_per_s']:,.0f} rows/s)")
        res["count"] = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        if res["count"] != rows:
            self.notes.append(f"count(*) = {res['count']} after loading {rows}")
        res["wal_bytes"] = int(conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn0,)).fetchone()[0])
        res["sizes_after_load"] = self._pg_sizes(conn)
        t1 = time.perf_counter()
        conn.execute("CHECKPOINT")
        res["flush"] = {"statement": "CHECKPOINT", "seconds": round(time.perf_counter() - t1, 3)}
        wb, _ = snapshot_delta(snap0, tree_snapshot(self.cluster.pid))
        res["bytes_written"] = {
            "bytes": wb,
            "scope": "PostgreSQL processes (backend, checkpointer, WAL writer, ...), "
                     "/proc/<pid>/io write_bytes - cancelled_write_bytes, from after "
                     "CREATE TABLE to after CHECKPOINT; processes that exited in between "
                     "(autovacuum workers) are not counted"}
        res["table_bytes"] = int(conn.execute(
            "SELECT pg_total_relation_size('items')").fetchone()[0])
        sizes = self._pg_sizes(conn)
        res["sizes"] = {**sizes, "before_load": sizes0}
        res["data_dir"] = {
            "bytes": sizes["database_bytes"] + (sizes["pg_wal_bytes"] or 0),
            "wal_bytes": sizes["pg_wal_bytes"],
            "allocated_bytes": None,
            "scope": "pg_database_size(bench_ingest) + pg_wal/ on disk, after CHECKPOINT "
                     "(whole fresh cluster: sizes.cluster_bytes)"}
        hwm = vm_hwm_mb(backend)
        tree = [v for v in (vm_hwm_mb(p) for p in proc_tree(self.cluster.pid)) if v]
        res["memory"] = {"peak_rss_mb": None if hwm is None else round(hwm, 1),
                         "scope": "the COPY backend (VmHWM; includes the shared buffers it "
                                  "touched)",
                         "max_process_mb": round(max(tree), 1) if tree else None,
                         "sum_processes_mb": round(sum(tree), 1) if tree else None}
        conn.close()
        # Crash stop, then start again and time the first answer.
        log("pgvector: pg_ctl stop -m immediate, restarting")
        pgv._run(self.cluster._ctl("stop", "-m", "immediate", "-t", "60"), timeout=90)
        unregister_pid(self.cluster.reg_name)
        old_pid, self.cluster.pid = self.cluster.pid, None
        pidfile = os.path.join(self.cluster.data, "postmaster.pid")
        t0 = time.perf_counter()
        p = subprocess.run(self.cluster._ctl("start", "-W", "-l", self.cluster.logpath,
                                             "-o", self.cluster.start_opts()),
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {p.stderr.strip()[-500:]}")

        def dead():
            if self.cluster.pid is None:
                try:
                    with open(pidfile) as f:
                        pid = int(f.readline())
                    if pid != old_pid and alive(pid):
                        self.cluster.register(pid)
                except (OSError, ValueError):
                    pass
                return False
            return not alive(self.cluster.pid)

        deadline = time.time() + self.spec["restart_timeout_s"]
        r = poll_first_answer(t0, conninfo, rows, deadline, dead)
        dead()
        r["method"] = "pg_ctl stop -m immediate, then pg_ctl start -W (crash recovery)"
        res["restart"] = r
        if r["error"]:
            self.notes.append(f"restart: {r['error'][:200]}")
        log(f"pgvector: restart: {r}")
        if self.cluster.pid is None:
            raise RuntimeError("PostgreSQL did not come back after the restart")


# --- worker --------------------------------------------------------------------------

def run_one(spec):
    res = {"system": spec["system"], "info": {}, "notes": []}
    t = time.perf_counter()
    spool = Spool(spec["spool"])
    cls = {"quiver": QuiverIngest, "pgvector": PgIngest}[spec["system"]]
    try:
        cls(spec, res).run(spool)
    except SystemExit:
        res["error"] = "stopped by SIGTERM (time limit or interrupt); partial results"
    except Exception as e:  # noqa: BLE001 - the error goes into the results
        res["error"] = _err(e)
        res["traceback"] = traceback.format_exc()[-4000:]
        log(f"{spec['system']}: FAILED: {res['error']}")
    finally:
        spool.close()
        res["wall_s"] = round(time.perf_counter() - t, 1)
    return res


def worker_main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.spec) as f:
        spec = json.load(f)
    res = run_one(spec)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, default=str)
    return 0


# --- driver --------------------------------------------------------------------------

def ratio(a, b):
    return round(a / b, 2) if a and b else None


def run_suite(a, command, run_worker):
    from . import report
    started = datetime.datetime.now().astimezone()
    rows = a.rows or (QUICK_ROWS if a.quick else FULL_ROWS)
    if a.batch_rows % GROUP:
        raise SystemExit(f"--batch-rows must be a multiple of {GROUP}")
    systems = a.systems
    log(f"{command}: suite=ingest rows={rows:,} batch={a.batch_rows:,} systems={systems}"
        f" format={getattr(a, 'format', 'text')}")
    load_start = loadavg()
    fmt = getattr(a, "format", "text") or "text"
    spool = prepare_spool(rows, fmt=fmt)
    spec = {"suite": "ingest", "rows": rows, "batch_rows": a.batch_rows, "format": fmt,
            "spool": {k: spool[k] for k in ("path", "offsets", "rows", "bytes")},
            "restart_timeout_s": 60 if rows <= QUICK_ROWS else 180}
    # Rounds alternate the systems (A B, B A, ...): what the machine does
    # beside the benchmark, and PostgreSQL's checkpoints, which fall on some
    # loads and not others, then touch every system alike. Each system is
    # reported by its median round (by rows/s).
    rounds = max(1, getattr(a, "rounds", None) or 1)
    per = {name: [] for name in systems}
    try:
        for k in range(rounds):
            for name in (systems if k % 2 == 0 else list(reversed(systems))):
                log(f"=== {name} (round {k + 1}/{rounds})")
                t0 = time.time()
                r = run_worker({**spec, "system": name}, a.system_timeout)
                r["elapsed_s"] = round(time.time() - t0, 1)
                if r.get("error"):
                    log(f"{name}: error: {r['error']}")
                per[name].append(r)
    finally:
        cleanup_registered()
    results = []
    for name in systems:
        done = [r for r in per[name] if not r.get("error") and (r.get("load") or {}).get("rows_per_s")]
        if not done:
            results.append(per[name][-1])
            continue
        done.sort(key=lambda r: r["load"]["rows_per_s"])
        median = dict(done[(len(done) - 1) // 2])
        median["rounds_rows_per_s"] = [(r.get("load") or {}).get("rows_per_s") for r in per[name]]
        median["round_errors"] = [r["error"] for r in per[name] if r.get("error")]
        results.append(median)
    by = {r["system"]: r for r in results}
    q, p = by.get("quiver", {}), by.get("pgvector", {})
    out = {
        "suite": "ingest", "dataset": f"{rows}-rows", "quick": bool(a.quick), "format": fmt,
        "command": command, "date": started.isoformat(timespec="seconds"),
        "machine": {"cpu": lscpu_model(), "cores": os.cpu_count(), "ram_gib": mem_total_gib(),
                    "loadavg_start": load_start, "loadavg_end": loadavg()},
        "params": {"rows": rows, "dim": DIM, "batch_rows": a.batch_rows, "seed": SEED,
                   "rounds": rounds,
                   "format": fmt, "text_bytes": spool["bytes"], "data_sha256": spool["sha256"],
                   "columns": spool.get("columns"),
                   # Binary COPY: issue 23's target, 3x PostgreSQL's binary COPY.
                   "targets": {"ingest_ratio_min": 3.0 if fmt == "binary" else 2.0,
                               "restart_s_max": 5.0,
                               "restart_target_rows": FULL_ROWS}},
        "systems": results,
        "ratio_rows_per_s": ratio((q.get("load") or {}).get("rows_per_s"),
                                  (p.get("load") or {}).get("rows_per_s")),
    }
    paths = report.write_ingest(out)
    for path in paths:
        log(f"wrote {path}")
    if out["ratio_rows_per_s"] is not None:
        log(f"quiver / PostgreSQL rows/s: {out['ratio_rows_per_s']}")
    failed = [r["system"] for r in results if r.get("error") or r.get("round_errors")]
    if failed:
        log(f"systems with errors: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(worker_main())
