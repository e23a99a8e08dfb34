"""A psycopg client for anything that speaks the PostgreSQL wire protocol
(PostgreSQL + pgvector, quiver): prepared statements, one query at a time."""

import time

import numpy as np

from ..datasets import filter_sql
from .base import Client

# How the query vector travels: pgvector-python's binary adapter, the text
# form '[1,2,...]' as an untyped parameter, or the text form with a cast.
MODES = ("binary", "text", "text-cast")


_FMT = {}


def vec_text(v):
    """pgvector text form '[x1,x2,...]' (9 significant digits: float32 round-trips)."""
    d = len(v)
    fmt = _FMT.get(d)
    if fmt is None:
        fmt = _FMT[d] = "[" + ",".join(["%.9g"] * d) + "]"
    return fmt % tuple(np.asarray(v, dtype=np.float32).tolist())


class PgClient(Client):
    def __init__(self, conninfo, k=10, mode="binary", ef_setting="hnsw.ef_search",
                 table="items", connect_timeout=10, session_sql=()):
        import psycopg
        self.conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=connect_timeout)
        self.table = table
        self.ef_setting = ef_setting
        self.k = int(k)
        self.adapter_error = None
        for stmt in session_sql:
            self.conn.execute(stmt)
        if mode == "binary":
            try:
                from pgvector.psycopg import register_vector
                register_vector(self.conn)
            except Exception as e:  # noqa: BLE001 - any failure means: use text
                self.adapter_error = f"{type(e).__name__}: {e}".strip()
                mode = "text"
        self.mode = mode
        ph = {"binary": "%b", "text": "%s", "text-cast": "%s::vector"}[mode]
        self.sql = f"SELECT id FROM {table} ORDER BY embedding <-> {ph} LIMIT {self.k}"
        self.ph = ph
        self.sql_filtered = {}
        self.cur = self.conn.cursor()

    def set_ef(self, ef):
        if ef is not None:
            self.conn.execute(f"SET {self.ef_setting} = {int(ef)}")

    def prepare(self, queries):
        if self.mode == "binary":
            return [np.ascontiguousarray(q, dtype=np.float32) for q in queries]
        return [vec_text(q) for q in queries]

    def search(self, q, k=None, filt=None):
        cur = self.cur
        if filt is None:
            cur.execute(self.sql, (q,), prepare=True)
        else:
            if filt["name"] not in self.sql_filtered:
                cond, params = filter_sql(filt)
                self.sql_filtered[filt["name"]] = (
                    f"SELECT id FROM {self.table} WHERE {cond} "
                    f"ORDER BY embedding <-> {self.ph} LIMIT {self.k}", params)
            sql, params = self.sql_filtered[filt["name"]]
            cur.execute(sql, (*params, q), prepare=True)
        return [r[0] for r in cur.fetchall()]

    def wire_ceiling(self, n):
        """Round trips of a trivial prepared statement from this client."""
        cur = self.conn.cursor()
        for i in range(min(50, n)):
            cur.execute("SELECT %s::int", (i,), prepare=True)
            cur.fetchone()
        lat = np.empty(n)
        t0 = time.perf_counter()
        for i in range(n):
            s = time.perf_counter()
            cur.execute("SELECT %s::int", (i,), prepare=True)
            row = cur.fetchone()
            lat[i] = time.perf_counter() - s
            if row is None or int(row[0]) != i:
                raise RuntimeError(f"SELECT $1::int returned {row!r} for {i}")
        wall = time.perf_counter() - t0
        return {"queries": n, "qps": round(n / wall, 1),
                "mean_us": round(wall / n * 1e6, 1),
                "p50_us": round(float(np.percentile(lat, 50)) * 1e6, 1),
                "p99_us": round(float(np.percentile(lat, 99)) * 1e6, 1)}

    def close(self):
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass
