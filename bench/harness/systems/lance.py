"""LanceDB (embedded, in-process) with an IVF_HNSW_FLAT index of one
partition, so the graph is an HNSW over all rows like the others."""

import os
import shutil
import time

import numpy as np

from ..common import CACHE_DIR, dir_size_mb, log
from ..datasets import filter_literal
from .base import Client, SkipSystem, System


class LanceDB(System, Client):
    name = "lancedb"

    def start(self):
        try:
            import lancedb
            import pyarrow
        except ImportError as e:
            raise SkipSystem(f"lancedb is not installed ({e})") from e
        self.lancedb, self.pa = lancedb, pyarrow
        self.info["version"] = lancedb.__version__
        self.dir = os.path.join(CACHE_DIR, "lancedb", f"run-{os.getpid()}")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.db = lancedb.connect(self.dir)

    def load(self):
        pa = self.pa
        d, base = self.data.dim, self.data.base
        vec = pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1), pa.float32()), d)
        cols = {"id": pa.array(self.data.ids), "vector": vec}
        for c, values in self.data.columns.items():
            cols[c] = pa.array(values)
        t0 = time.perf_counter()
        self.tbl = self.db.create_table("items", data=pa.table(cols))
        secs = time.perf_counter() - t0
        return {"seconds": round(secs, 2), "rows_per_s": round(len(base) / secs, 1),
                "method": "create_table(arrow)"}

    def build(self):
        t0 = time.perf_counter()
        self.tbl.create_index(metric="l2", index_type="IVF_HNSW_FLAT", num_partitions=1,
                              m=self.m, ef_construction=self.ef_construction)
        secs = time.perf_counter() - t0
        log(f"lancedb: index built in {secs:.1f} s")
        self.info["index"] = f"IVF_HNSW_FLAT(partitions=1, m={self.m}, ef_construction={self.ef_construction})"
        return {"seconds": round(secs, 2)}

    def client(self):
        return self

    def set_ef(self, ef):
        self.ef = int(ef)

    def prepare(self, queries):
        return [np.ascontiguousarray(q) for q in queries]

    def search(self, q, k, filt=None):
        qb = self.tbl.search(q).limit(k).ef(self.ef).select(["id", "_distance"])
        if filt is not None:
            qb = qb.where(filter_literal(filt), prefilter=True)
        return qb.to_arrow().column("id").to_pylist()

    def disk_mb(self):
        return dir_size_mb(self.dir)

    def stop(self):
        if getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)
