"""quiver over pgwire: start `quiver serve` on a free loopback port with a
scratch data dir, load, try to build an HNSW index, query through psycopg.

What it sends (in order; each optional step degrades to the next path):
  CREATE TABLE items (id BIGINT PRIMARY KEY, embedding VECTOR(d)[, sel INT, ...])
  COPY items (id, embedding[, sel, ...]) FROM STDIN       -- text format; else
  INSERT INTO items VALUES (0,'[...]'),(1,'[...]'),...   -- 500 rows a statement; else
  INSERT INTO items VALUES (0,'[...]'::vector),...
  SELECT count(*) FROM items
  FLUSH items                                        -- optional (seals the segment)
  COMPACT items                                      -- with --compact: one segment
  CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_l2_ops)
      WITH (m = 16, ef_construction = 200)           -- fails: exact search, one point
  SHOW INDEXES FROM items                            -- optional: polled until built
  EXPLAIN SELECT id FROM items ORDER BY embedding <-> '[...]' LIMIT 10   -- optional
  SET hnsw.ef_search = <ef>
  SELECT id FROM items ORDER BY embedding <-> $1 LIMIT 10   (prepared; $1 binary
      vector via pgvector-python, else text '[...]', else '[...]'::vector)
  SELECT $1::int                                     (the wire ceiling)
then, for the IVF points (ann suite):
  DROP INDEX IF EXISTS items_hnsw
  CREATE INDEX items_ivf ON items USING ivf_flat (embedding vector_l2_ops)
      WITH (lists = <lists>, wait = true)            -- fails: without wait, polled
  SHOW SEGMENTS FROM items                           -- optional: rows per segment
  SET ivfflat.probes = <probes>
  SELECT id FROM items ORDER BY embedding <-> $1 LIMIT 10   (prepared, as above)
"""

import os
import shutil
import subprocess
import time

from ..common import (BENCH_PASSWORD, CACHE_DIR, REPO_DIR, dir_size_mb, free_port, log, register_pid,
                      terminate_tree, tree_hwm_mb, unregister_pid, wait_port)
from .base import System
from .pgwire import MODES, PgClient, vec_text

INSERT_BATCH = 500
READY_WORDS = ("ready", "finished", "built", "done", "complete", "completed", "active", "valid")
BUSY_WORDS = ("building", "pending", "in progress", "in_progress", "queued", "running",
              "creating")


def quiver_bin():
    path = os.environ.get("QUIVER_BIN")
    if path:
        return path
    target = os.environ.get("CARGO_TARGET_DIR",
                            os.path.join(os.path.expanduser("~"), ".cache", "quiver-target"))
    return os.path.join(target, "release", "quiver")


class Quiver(System):
    name = "quiver"
    multi_client = True
    supports_ivf = True

    def start(self):
        import psycopg
        binary = quiver_bin()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"quiver binary not found at {binary} (bench/run builds it; "
                               f"or set QUIVER_BIN)")
        self.info["binary"] = binary
        self.info["binary_mtime"] = time.strftime("%Y-%m-%d %H:%M:%S",
                                                  time.localtime(os.path.getmtime(binary)))
        try:
            # Read-only, takes no lock (another git command may be running).
            self.info["git"] = subprocess.run(
                ["git", "-C", REPO_DIR, "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, timeout=10,
                env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.workdir = os.path.join(CACHE_DIR, "quiver", f"run-{os.getpid()}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.datadir = os.path.join(self.workdir, "data")
        os.makedirs(self.datadir)
        self.port = free_port()
        self.logpath = os.path.join(self.workdir, "server.log")
        argv = [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.datadir]
        log(f"quiver: {' '.join(argv)}")
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir,
                                     env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"),
                                          "QUIVER_PASSWORD": BENCH_PASSWORD})
        register_pid("quiver", self.proc.pid)
        t0 = time.perf_counter()
        if not wait_port(self.port, 60, proc=self.proc):
            why = ("did not accept connections within 60 s" if self.proc.poll() is None
                   else f"exited with code {self.proc.returncode} before accepting connections")
            raise RuntimeError(f"quiver {why}; log tail:\n{self.log_tail()}")
        self.conninfo = (f"host=127.0.0.1 port={self.port} user=quiver dbname=default "
                         f"password={BENCH_PASSWORD}")
        deadline = time.time() + 30
        while True:
            try:
                self.admin = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
                break
            except psycopg.OperationalError as e:
                if time.time() > deadline:
                    raise RuntimeError(f"psycopg could not connect: {e}\n{self.log_tail()}")
                time.sleep(0.5)
        self.info["startup_s"] = round(time.perf_counter() - t0, 2)
        try:
            self.info["server_version"] = self.admin.execute("SHOW server_version").fetchone()[0]
        except Exception:  # noqa: BLE001 - informative only
            pass

    def log_tail(self, n=3000):
        try:
            with open(self.logpath, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def _try(self, sql, params=None):
        """Run sql; return (ok, rows or error text). The session stays usable."""
        try:
            cur = self.admin.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
            return True, rows
        except Exception as e:  # noqa: BLE001 - we report what the server said
            return False, f"{type(e).__name__}: {str(e).strip()}"

    # -- load ---------------------------------------------------------------

    def _create_table(self):
        cols = f"id BIGINT PRIMARY KEY, embedding VECTOR({self.data.dim})"
        for c in self.data.columns:
            cols += f", {c} INT"
        self.admin.execute(f"CREATE TABLE items ({cols})")

    def _rows_text(self, s, e):
        columns = list(self.data.columns.values())
        for i in range(s, e):
            yield (i, vec_text(self.data.base[i]), *(int(c[i]) for c in columns))

    def _copy(self):
        names = ", ".join(["id", "embedding", *self.data.columns])
        n = len(self.data.base)
        with self.admin.cursor() as cur:
            with cur.copy(f"COPY items ({names}) FROM STDIN") as cp:
                step = 5000
                for s in range(0, n, step):
                    e = min(s + step, n)
                    buf = "".join("\t".join(map(str, r)) + "\n" for r in self._rows_text(s, e))
                    cp.write(buf.encode())
                    log(f"quiver: COPY {e}/{n}")

    def _insert(self, cast):
        """Multi-row INSERT; the vector as '[...]' or, with cast, '[...]'::vector."""
        n = len(self.data.base)
        vec = "'{}'::vector" if cast else "'{}'"
        last = 0
        for s in range(0, n, INSERT_BATCH):
            e = min(s + INSERT_BATCH, n)
            vals = ",".join("(" + ",".join(
                (vec.format(x) if isinstance(x, str) else str(x)) for x in r) + ")"
                for r in self._rows_text(s, e))
            self.admin.execute(f"INSERT INTO items VALUES {vals}")
            if e - last >= 10_000 or e == n:
                log(f"quiver: INSERT {e}/{n}")
                last = e

    def _recreate_table(self, why):
        ok, err = self._try("DROP TABLE items")
        if not ok:
            raise RuntimeError(f"DROP TABLE after {why}: {err}")
        self._create_table()

    def load(self):
        self._create_table()
        n = len(self.data.base)
        t0 = time.perf_counter()
        method = "COPY text"
        try:
            self._copy()
        except Exception as e:  # noqa: BLE001 - fall back to INSERT
            self.notes.append(f"COPY failed ({str(e).strip()[:120]}): multi-row INSERT")
            log(f"quiver: COPY failed ({e}); falling back to INSERT")
            self._recreate_table("failed COPY")
            method = f"INSERT, {INSERT_BATCH} rows a statement"
            t0 = time.perf_counter()
            try:
                self._insert(cast=False)
            except Exception as e2:  # noqa: BLE001 - try the explicit cast
                self.notes.append(f"INSERT with '[...]' failed ({str(e2).strip()[:120]}): "
                                  f"used '[...]'::vector")
                log(f"quiver: INSERT '[...]' failed ({e2}); retrying with '[...]'::vector")
                self._recreate_table("failed INSERT")
                method = f"INSERT '[...]'::vector, {INSERT_BATCH} rows a statement"
                t0 = time.perf_counter()
                self._insert(cast=True)
        secs = time.perf_counter() - t0
        out = {"seconds": round(secs, 2), "rows_per_s": round(n / secs, 1), "method": method}
        ok, rows = self._try("SELECT count(*) FROM items")
        out["count"] = rows[0][0] if ok and rows else f"count failed: {rows}"
        if ok and rows and rows[0][0] != n:
            self.notes.append(f"count(*) = {rows[0][0]} after loading {n} rows")
        t1 = time.perf_counter()
        ok, res = self._try("FLUSH items")
        out["flush"] = round(time.perf_counter() - t1, 2) if ok else f"not supported: {res[:200]}"
        if self.spec.get("compact"):
            # One segment, as a collection gets once compaction merges what
            # was sealed at every 64 MiB of writes (--compact).
            t1 = time.perf_counter()
            ok, res = self._try("COMPACT items")
            out["compact"] = (round(time.perf_counter() - t1, 2) if ok
                              else f"not supported: {res[:200]}")
        seg_rows = self._segments()
        if seg_rows:
            out["segment_rows"] = seg_rows
        return out

    # -- index ----------------------------------------------------------------

    def _index_state(self):
        """(done, rows) from SHOW INDEXES; done is None when it cannot tell.
        Reads a state/status column (ready/finished/... vs building/...) or,
        failing that, an indexed-rows column against a total-rows column."""
        try:
            cur = self.admin.execute("SHOW INDEXES FROM items")
            names = [d.name.lower() for d in cur.description or []]
            rows = cur.fetchall()
        except Exception as e:  # noqa: BLE001 - not supported: cannot tell
            return None, f"{type(e).__name__}: {str(e).strip()}"
        shown = [dict(zip(names, r)) for r in rows]
        state_cols = [n for n in names if "state" in n or "status" in n]
        idx_cols = [n for n in names if "indexed" in n and "un" not in n]
        tot_cols = [n for n in names if "total" in n]
        verdicts = []
        for r in shown:
            if state_cols:
                v = str(r[state_cols[0]]).lower()
                if any(w in v for w in BUSY_WORDS):
                    verdicts.append(False)
                elif any(w in v for w in READY_WORDS):
                    verdicts.append(True)
            elif idx_cols and tot_cols:
                try:
                    verdicts.append(int(r[idx_cols[0]]) >= int(r[tot_cols[0]]))
                except (TypeError, ValueError):
                    pass
        if not verdicts:
            return None, shown
        return all(verdicts), shown

    def build(self):
        t0 = time.perf_counter()
        ok, err = self._try(
            f"CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_l2_ops) "
            f"WITH (m = {self.m}, ef_construction = {self.ef_construction})")
        if not ok:
            self.uses_ef = False
            self.notes.append(f"CREATE INDEX failed ({err[:120]}): exact search only, one point")
            log(f"quiver: CREATE INDEX failed: {err}")
            self._explain()
            return {"seconds": None, "index": False, "error": err[:500]}
        out, _state = self._wait_built(t0)
        ok, _ = self._try("SET hnsw.ef_search = 16")
        if not ok:
            self.uses_ef = False
            self.notes.append("SET hnsw.ef_search failed: one point at the default ef")
        self._explain()
        return out

    rebuilds = True

    def rebuild(self):
        ok, err = self._try("DROP INDEX items_hnsw")
        if not ok:
            raise RuntimeError(f"DROP INDEX items_hnsw: {err}")
        return self.build()

    def _wait_built(self, t0, what="index"):
        """Poll SHOW INDEXES until every index is built (or the build time
        limit). Returns ({seconds since t0, ...}, state)."""
        timeout = self.spec["build_timeout_s"]
        state, rows = self._index_state()
        last_log = 0.0
        while state is False and time.perf_counter() - t0 < timeout:
            if time.perf_counter() - last_log > 15:
                log(f"quiver: {what} building: {rows}")
                last_log = time.perf_counter()
            # Often enough that the time is the build's to within 0.05 s
            # (a poll costs the server well under a millisecond).
            time.sleep(0.05)
            state, rows = self._index_state()
        secs = time.perf_counter() - t0
        out = {"seconds": round(secs, 2), "index": True, "show_indexes": str(rows)[:1000]}
        if state is False:
            self.notes.append(f"{what} still building after {timeout} s; measured anyway")
        elif state is None:
            self.notes.append("SHOW INDEXES did not tell whether the build finished; "
                              "build time is the CREATE INDEX statement's")
        return out, state

    def _explain(self, key="plan"):
        ok, plan = self._try("EXPLAIN SELECT id FROM items ORDER BY embedding <-> '"
                             + vec_text(self.data.queries[0]) + "' LIMIT 10")
        self.info[key] = ([str(r[-1])[:300] for r in plan][:40] if ok
                          else f"EXPLAIN failed: {plan[:500]}")

    # -- IVF (after the HNSW sweep) -----------------------------------------------

    def _segments(self):
        """Rows of each segment of items (SHOW SEGMENTS), or None."""
        try:
            cur = self.admin.execute("SHOW SEGMENTS FROM items")
            names = [d.name.lower() for d in cur.description or []]
            return [int(dict(zip(names, r))["rows"]) for r in cur.fetchall()]
        except Exception:  # noqa: BLE001 - informative only
            return None

    def _index_files_mb(self, name):
        """Size of the index's files (<segment>/index/<name>.faiss)."""
        total, found = 0, False
        for root, _dirs, files in os.walk(self.datadir):
            for fn in files:
                if fn == f"{name}.faiss":
                    found = True
                    try:
                        total += os.lstat(os.path.join(root, fn)).st_size
                    except OSError:
                        pass
        return round(total / 2**20, 1) if found else None

    def build_ivf(self, lists):
        """DROP the HNSW index (a search uses the index whose metric matches:
        two L2 indexes on the column would leave the choice to the server),
        then CREATE INDEX ... USING ivf_flat ... WITH (lists, wait = true).
        On a new admin connection that never prepares: psycopg follows a DROP
        on a connection where it has prepared statements (SHOW INDEXES, polled)
        with DEALLOCATE ALL, which quiver does not support."""
        import psycopg
        self.admin.close()
        self.admin = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10,
                                     prepare_threshold=None)
        ok, err = self._try("DROP INDEX IF EXISTS items_hnsw")
        if not ok:
            raise RuntimeError(f"DROP INDEX items_hnsw: {err}")
        sql = ("CREATE INDEX items_ivf ON items USING ivf_flat (embedding vector_l2_ops) "
               f"WITH (lists = {int(lists)}")
        t0 = time.perf_counter()
        ok, err = self._try(sql + ", wait = true)")
        if not ok:
            log(f"quiver: CREATE INDEX ... wait = true failed ({err}); without wait")
            self.notes.append(f"CREATE INDEX with wait = true failed ({err[:120]}): "
                              f"polled SHOW INDEXES")
            self._try("DROP INDEX IF EXISTS items_ivf")
            t0 = time.perf_counter()
            ok, err = self._try(sql + ")")
            if not ok:
                raise RuntimeError(f"CREATE INDEX ... USING ivf_flat: {err}")
        statement_s = time.perf_counter() - t0
        out, state = self._wait_built(t0, "IVF index")
        out["statement_s"] = round(statement_s, 2)
        out["lists"] = int(lists)
        if state is False:
            out["still_building"] = True
        seg_rows = self._segments()
        if seg_rows:
            # faiss needs 39 training rows per list: quiver caps the lists of
            # each segment's index at rows / 39 (src/vector/index.rs).
            out["segment_rows"] = seg_rows
            out["lists_per_segment"] = [min(int(lists), max(r // 39, 1)) for r in seg_rows]
        out["index_mb"] = self._index_files_mb("items_ivf")
        ok, err = self._try("SET ivfflat.probes = 1")
        if not ok:
            raise RuntimeError(f"SET ivfflat.probes: {err}")
        self._explain("ivf_plan")
        plan = self.info.get("ivf_plan")
        if isinstance(plan, list) and not any("items_ivf" in line for line in plan):
            self.notes.append("EXPLAIN does not name items_ivf")
        return out

    def ivf_client(self):
        c = PgClient(self.conninfo, k=self.k, mode=self.mode, ef_setting="ivfflat.probes")
        if c.mode != self.mode:
            c.close()
            raise RuntimeError(f"IVF client: wire mode {self.mode} not available")
        return c

    def ivf_client_spec(self):
        return ("harness.systems.pgwire", "PgClient",
                {"conninfo": self.conninfo, "k": self.k, "mode": self.mode,
                 "ef_setting": "ivfflat.probes"})

    # -- queries ----------------------------------------------------------------

    def client(self):
        """The first wire mode whose query returns k rows."""
        errors = {}
        q = self.data.queries[0]
        for mode in MODES:
            c = None
            try:
                c = PgClient(self.conninfo, k=self.k, mode=mode)
                if c.adapter_error:
                    errors["binary"] = f"register_vector: {c.adapter_error}"
                if c.mode != mode:
                    c.close()
                    continue
                rows = c.search(c.prepare([q])[0], self.k)
                if len(rows) != self.k:
                    raise RuntimeError(f"{len(rows)} rows")
                self.mode = mode
                self.info["client_mode"] = mode
                if errors:
                    self.info["client_mode_errors"] = errors
                return c
            except Exception as e:  # noqa: BLE001 - try the next mode
                errors[mode] = f"{type(e).__name__}: {str(e).strip()[:300]}"
                if c is not None:
                    c.close()
        raise RuntimeError(f"no way to run the ANN query worked: {errors}")

    def client_spec(self):
        return ("harness.systems.pgwire", "PgClient",
                {"conninfo": self.conninfo, "k": self.k, "mode": self.mode})

    def wire_ceiling(self, n):
        c = PgClient(self.conninfo, mode="text")
        try:
            return c.wire_ceiling(n)
        finally:
            c.close()

    def memory(self):
        m = tree_hwm_mb(self.proc.pid)
        m["scope"] = "quiver server process"
        return m

    def disk_mb(self):
        return dir_size_mb(self.datadir)

    def stop(self):
        if getattr(self, "admin", None) is not None:
            try:
                self.admin.close()
            except Exception:  # noqa: BLE001
                pass
        proc = getattr(self, "proc", None)
        if proc is not None:
            if proc.poll() is not None:
                self.notes.append(f"quiver exited by itself with code {proc.returncode}")
            terminate_tree(proc.pid, grace=30)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            unregister_pid("quiver")
            self.info["server_log_tail"] = self.log_tail(2000)
            self.logf.close()
            log(f"quiver: stopped (log {self.logpath})")
        if getattr(self, "datadir", None) and os.environ.get("QUIVER_BENCH_KEEP_DATA") != "1":
            shutil.rmtree(self.datadir, ignore_errors=True)
