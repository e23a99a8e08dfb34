"""PostgreSQL 15 + pgvector in a private cluster under bench/.cache/pg."""

import os
import shutil
import subprocess
import threading
import time

from ..common import (CACHE_DIR, free_port, log, register_pid, run_as_db_user_argv,
                      tree_hwm_mb, unregister_pid, alive)
from .base import System
from .pgwire import PgClient

PG_BIN = os.environ.get("QUIVER_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin")
PG_DIR = os.path.join(CACHE_DIR, "pg")
PG_DATA = os.path.join(PG_DIR, "data")
PG_LOG = os.path.join(PG_DIR, "server.log")
# Memory for the index build (pgvector builds in memory when the graph fits)
# and the buffer cache; 2 processes build, as faiss and hnswlib use 2 threads.
PG_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": PG_DIR,
    "shared_buffers": "1GB",
    "maintenance_work_mem": "2GB",
    "max_parallel_maintenance_workers": "1",
    "jit": "off",
}


def _run(argv, timeout, check=True):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p


class PgCluster:
    """initdb once, start on a free loopback port, stop (fast, then immediate).
    `root` holds data/, server.log and the socket (default bench/.cache/pg)."""

    def __init__(self, root=PG_DIR):
        self.port = None
        self.pid = None
        self.root = root
        self.data = os.path.join(root, "data")
        self.logpath = os.path.join(root, "server.log")
        self.settings = {**PG_SETTINGS, "unix_socket_directories": root}
        self.reg_name = "postgres" if root == PG_DIR else f"postgres-{os.path.basename(root)}"

    def _ctl(self, *args):
        return run_as_db_user_argv([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, *args])

    def start_opts(self):
        return " ".join(f"-c {k}={v}" for k, v in {**self.settings, "port": self.port}.items())

    def register(self, pid):
        self.pid = pid
        register_pid(self.reg_name, pid, stop=self._ctl("stop", "-m", "immediate", "-t", "30"))

    def start(self, fresh=False):
        """fresh: remove the data directory (stopping a leftover server) and initdb."""
        if not os.path.exists(os.path.join(PG_BIN, "postgres")):
            raise RuntimeError(f"PostgreSQL 15 not found in {PG_BIN}")
        os.makedirs(self.root, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        pidfile = os.path.join(self.data, "postmaster.pid")
        if os.path.exists(pidfile):
            log("pg: a previous cluster did not stop; stopping it")
            _run(self._ctl("stop", "-m", "immediate", "-t", "30"), timeout=60, check=False)
        if fresh:
            shutil.rmtree(self.data, ignore_errors=True)
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            shutil.rmtree(self.data, ignore_errors=True)
            log(f"pg: initdb {self.data}")
            _run(run_as_db_user_argv([os.path.join(PG_BIN, "initdb"), "-D", self.data,
                                      "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                      "--no-sync"]), timeout=120)
        self.port = free_port(55432)
        log(f"pg: starting on 127.0.0.1:{self.port}")
        _run(self._ctl("start", "-w", "-t", "60", "-l", self.logpath, "-o", self.start_opts()),
             timeout=90)
        with open(pidfile) as f:
            self.register(int(f.readline()))

    def conninfo(self, dbname="postgres"):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def stop(self):
        if self.pid is None:
            return
        p = _run(self._ctl("stop", "-m", "fast", "-t", "60"), timeout=90, check=False)
        if p.returncode != 0 and alive(self.pid):
            _run(self._ctl("stop", "-m", "immediate", "-t", "30"), timeout=60, check=False)
        log("pg: stopped")
        unregister_pid(self.reg_name)
        self.pid = None


class PgVector(System):
    name = "pgvector"
    multi_client = True
    supports_ivf = True

    def start(self):
        import psycopg
        self.cluster = PgCluster()
        self.cluster.start()
        with psycopg.connect(self.cluster.conninfo(), autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS bench")
            c.execute("CREATE DATABASE bench")
        self.conninfo = self.cluster.conninfo("bench")
        self.admin = psycopg.connect(self.conninfo, autocommit=True)
        self.admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
        self.info["postgres"] = self.admin.execute("SHOW server_version").fetchone()[0]
        self.info["pgvector"] = self.admin.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        self.info["settings"] = dict(PG_SETTINGS)
        from pgvector.psycopg import register_vector
        register_vector(self.admin)

    def load(self):
        d, base = self.data.dim, self.data.base
        columns = list(self.data.columns.values())
        cols = "id bigint PRIMARY KEY, embedding vector(%d)" % d
        for c in self.data.columns:
            cols += f", {c} int NOT NULL"
        self.admin.execute(f"CREATE TABLE items ({cols})")
        names = ", ".join(["id", "embedding", *self.data.columns])
        types = ["int8", "vector"] + ["int4"] * len(columns)
        t0 = time.perf_counter()
        with self.admin.cursor() as cur:
            with cur.copy(f"COPY items ({names}) FROM STDIN WITH (FORMAT BINARY)") as cp:
                cp.set_types(types)
                for i in range(len(base)):
                    row = (i, base[i], *(int(c[i]) for c in columns))
                    cp.write_row(row)
                    if (i + 1) % 20_000 == 0:
                        log(f"pgvector: COPY {i + 1}/{len(base)}")
        secs = time.perf_counter() - t0
        self.admin.execute("VACUUM ANALYZE items")
        return {"seconds": round(secs, 2), "rows_per_s": round(len(base) / secs, 1),
                "method": "COPY binary"}

    def build(self):
        stop = threading.Event()

        def progress():
            import psycopg
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as c:
                    while not stop.wait(15):
                        row = c.execute("SELECT phase, tuples_done, tuples_total "
                                        "FROM pg_stat_progress_create_index").fetchone()
                        if row:
                            log(f"pgvector: index build {row[0]} {row[1]}/{row[2]}")
            except Exception as e:  # noqa: BLE001 - progress is cosmetic
                log(f"pgvector: progress monitor stopped: {e}")

        th = threading.Thread(target=progress, daemon=True)
        th.start()
        t0 = time.perf_counter()
        try:
            self.admin.execute(
                f"CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_l2_ops) "
                f"WITH (m = {self.m}, ef_construction = {self.ef_construction})")
        finally:
            stop.set()
        secs = time.perf_counter() - t0
        th.join(timeout=20)
        plan = self.admin.execute(
            "EXPLAIN SELECT id FROM items ORDER BY embedding <-> %s LIMIT 10",
            (self.data.queries[0],)).fetchall()
        self.info["plan"] = [r[0][:300] for r in plan]
        if not any("items_hnsw" in r[0] for r in plan):
            self.notes.append("planner did not pick the HNSW index")
        size = self.admin.execute("SELECT pg_relation_size('items_hnsw')").fetchone()[0]
        return {"seconds": round(secs, 2), "threads": 2, "index_mb": round(size / 2**20, 1)}

    def build_ivf(self, lists):
        """DROP the HNSW index (else the planner chooses between the two), then
        CREATE INDEX ... USING ivfflat ... WITH (lists): pgvector's (Elkan)
        k-means in one process on a sample of 50 rows per list (at least
        10,000), then every row assigned to its list (the same settings as
        the HNSW build)."""
        self.admin.execute("DROP INDEX IF EXISTS items_hnsw")
        t0 = time.perf_counter()
        self.admin.execute(
            f"CREATE INDEX items_ivf ON items USING ivfflat (embedding vector_l2_ops) "
            f"WITH (lists = {int(lists)})")
        secs = time.perf_counter() - t0
        self.admin.execute("SET ivfflat.probes = 1")
        plan = self.admin.execute(
            "EXPLAIN SELECT id FROM items ORDER BY embedding <-> %s LIMIT 10",
            (self.data.queries[0],)).fetchall()
        self.info["ivf_plan"] = [r[0][:300] for r in plan]
        if not any("items_ivf" in r[0] for r in plan):
            self.notes.append("planner did not pick the IVF index")
        size = self.admin.execute("SELECT pg_relation_size('items_ivf')").fetchone()[0]
        return {"seconds": round(secs, 2), "threads": 2, "lists": int(lists),
                "index_mb": round(size / 2**20, 1)}

    def ivf_client(self):
        return PgClient(self.conninfo, k=self.k, ef_setting="ivfflat.probes")

    def ivf_client_spec(self):
        return ("harness.systems.pgwire", "PgClient",
                {"conninfo": self.conninfo, "k": self.k, "ef_setting": "ivfflat.probes"})

    def _session_sql(self):
        # pgvector >= 0.8 can widen a filtered scan until LIMIT rows pass
        # (--pg-iterative-scan: relaxed_order, the faster, by default).
        if self.data.filters and tuple(map(int, self.info["pgvector"].split(".")[:2])) >= (0, 8):
            mode = self.spec.get("pg_iterative_scan") or "relaxed_order"
            self.info["iterative_scan"] = mode
            return (f"SET hnsw.iterative_scan = {mode}",)
        return ()

    def client(self):
        c = PgClient(self.conninfo, k=self.k, session_sql=self._session_sql())
        self.info["client_mode"] = c.mode
        return c

    def client_spec(self):
        return ("harness.systems.pgwire", "PgClient",
                {"conninfo": self.conninfo, "k": self.k, "session_sql": self._session_sql()})

    def wire_ceiling(self, n):
        c = PgClient(self.conninfo, mode="text")
        try:
            return c.wire_ceiling(n)
        finally:
            c.close()

    def memory(self):
        m = tree_hwm_mb(self.cluster.pid)
        m["scope"] = "PostgreSQL processes (max VmHWM of one; sum counts shared buffers per process)"
        return m

    def disk_mb(self):
        size = self.admin.execute("SELECT pg_database_size('bench')").fetchone()[0]
        return round(size / 2**20, 1)

    def stop(self):
        try:
            if getattr(self, "admin", None) is not None:
                self.admin.close()
        finally:
            if getattr(self, "cluster", None) is not None:
                self.cluster.stop()


class PgWireOnly(System):
    """Only the wire ceiling of PostgreSQL (when pgvector itself is not run)."""
    name = "pgwire"
    uses_ef = False

    def start(self):
        self.cluster = PgCluster()
        self.cluster.start()
        self.info["postgres"] = "15"

    def load(self):
        return None

    def build(self):
        return None

    def client(self):
        return None

    def wire_ceiling(self, n):
        c = PgClient(self.cluster.conninfo(), mode="text")
        try:
            return c.wire_ceiling(n)
        finally:
            c.close()

    def memory(self):
        return None

    def stop(self):
        if getattr(self, "cluster", None) is not None:
            self.cluster.stop()
