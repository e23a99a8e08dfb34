"""Milvus 2.3.5 standalone, embedded from PyPI `milvus`, through pymilvus."""

import os
import shutil
import time

import numpy as np

from ..common import (CACHE_DIR, free_port, log, proc_tree, register_pid, terminate_tree,
                      tree_hwm_mb, unregister_pid, alive, dir_size_mb)
from ..datasets import filter_literal
from .base import Client, System

MILVUS_DIR = os.path.join(CACHE_DIR, "milvus")
COLLECTION = "items"
START_TIMEOUT_S = 180
MILVUS_ROLES = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord",
                "dataNode")


class MilvusClient_(Client):
    def __init__(self, port, k=10, alias=None):
        from pymilvus import Collection, connections
        self.alias = alias or f"bench-{os.getpid()}"
        connections.connect(alias=self.alias, host="127.0.0.1", port=str(port), timeout=30)
        self.coll = Collection(COLLECTION, using=self.alias)
        self.k = k
        self.params = {"metric_type": "L2", "params": {}}

    def set_ef(self, ef):
        self.params = {"metric_type": "L2", "params": {"ef": int(ef)}}

    def prepare(self, queries):
        return [[q.tolist()] for q in queries]

    def search(self, q, k=None, filt=None):
        res = self.coll.search(data=q, anns_field="embedding", param=self.params,
                               limit=k or self.k,
                               expr=None if filt is None else filter_literal(filt, "=="))
        return list(res[0].ids)

    def close(self):
        from pymilvus import connections
        connections.disconnect(self.alias)


class Milvus(System):
    name = "milvus"
    multi_client = True

    def start(self):
        from milvus import MilvusServer, __version__ as mv
        import pymilvus
        self.info["milvus"] = mv
        self.info["pymilvus"] = pymilvus.__version__
        os.makedirs(MILVUS_DIR, exist_ok=True)
        # A fresh server each run: its on-disk size is then this run's data.
        for sub in ("data", "logs"):
            shutil.rmtree(os.path.join(MILVUS_DIR, sub), ignore_errors=True)
        self.server = MilvusServer(wait_for_started=False)
        self.server.set_base_dir(MILVUS_DIR)
        # Components advertise the first non-loopback address unless told:
        # keep all of Milvus's internal gRPC on loopback.
        for role in MILVUS_ROLES:
            self.server.config.set(f"{role}.ip", "127.0.0.1")
        self.port = free_port(19530)
        self.server.listen_port = self.port
        log(f"milvus: starting embedded server on 127.0.0.1:{self.port} (base {MILVUS_DIR})")
        t0 = time.perf_counter()
        self.server.start()
        self.pid = self.server.server_proc.pid
        register_pid("milvus", self.pid)
        self.server.wait_started(timeout=START_TIMEOUT_S * 1000)
        self.info["startup_s"] = round(time.perf_counter() - t0, 1)
        log(f"milvus: up after {self.info['startup_s']} s (pid {self.pid})")
        from pymilvus import connections, utility
        connections.connect(alias="admin", host="127.0.0.1", port=str(self.port), timeout=60)
        self.info["server_version"] = utility.get_server_version(using="admin")
        if utility.has_collection(COLLECTION, using="admin"):
            utility.drop_collection(COLLECTION, using="admin")

    def load(self):
        from pymilvus import Collection, CollectionSchema, DataType, FieldSchema
        d, base = self.data.dim, self.data.base
        fields = [FieldSchema("id", DataType.INT64, is_primary=True, auto_id=False),
                  FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=d)]
        for c in self.data.columns:
            fields.append(FieldSchema(c, DataType.INT64))
        self.coll = Collection(COLLECTION, CollectionSchema(fields), using="admin")
        step = max(1000, min(10_000, (16 << 20) // (4 * d)))
        t0 = time.perf_counter()
        for s in range(0, len(base), step):
            e = min(s + step, len(base))
            cols = [self.data.ids[s:e].tolist(), base[s:e]]
            for c in self.data.columns.values():
                cols.append(c[s:e].astype(np.int64).tolist())
            self.coll.insert(cols, timeout=120)
            log(f"milvus: inserted {e}/{len(base)}")
        ins = time.perf_counter() - t0
        self.coll.flush(timeout=300)
        secs = time.perf_counter() - t0
        return {"seconds": round(secs, 2), "insert_s": round(ins, 2),
                "rows_per_s": round(len(base) / secs, 1), "method": "insert batches + flush"}

    def build(self):
        from pymilvus import utility
        t0 = time.perf_counter()
        self.coll.create_index("embedding", {
            "index_type": "HNSW", "metric_type": "L2",
            "params": {"M": self.m, "efConstruction": self.ef_construction}}, timeout=60)
        utility.wait_for_index_building_complete(COLLECTION, using="admin", timeout=3600)
        secs = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.coll.load(timeout=600)
        utility.wait_for_loading_complete(COLLECTION, using="admin", timeout=600)
        load_s = time.perf_counter() - t1
        log(f"milvus: index built in {secs:.1f} s, loaded in {load_s:.1f} s")
        return {"seconds": round(secs, 2), "load_collection_s": round(load_s, 2)}

    def client(self):
        return MilvusClient_(self.port, self.k)

    def client_spec(self):
        return ("harness.systems.milvus", "MilvusClient_", {"port": self.port, "k": self.k})

    def memory(self):
        m = tree_hwm_mb(self.pid)
        m["scope"] = "milvus standalone process tree"
        return m

    def disk_mb(self):
        return dir_size_mb(os.path.join(MILVUS_DIR, "data"))

    def stop(self):
        try:
            from pymilvus import connections, utility
            if getattr(self, "coll", None) is not None:
                try:
                    utility.drop_collection(COLLECTION, using="admin")
                except Exception as e:  # noqa: BLE001
                    log(f"milvus: drop collection failed: {e}")
            connections.disconnect("admin")
        except Exception:  # noqa: BLE001
            pass
        pid = getattr(self, "pid", None)
        tree = proc_tree(pid) if pid and alive(pid) else []
        if getattr(self, "server", None) is not None:
            try:
                self.server.stop()
            except Exception as e:  # noqa: BLE001
                log(f"milvus: stop() failed: {e}")
        # default_server.stop() can leave the `milvus run standalone` child: by PID.
        for p in tree:
            if alive(p):
                log(f"milvus: killing leftover pid {p}")
                terminate_tree(p, grace=10)
        if pid:
            unregister_pid("milvus")
            log("milvus: stopped")
