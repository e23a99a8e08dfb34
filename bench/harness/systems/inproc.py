"""In-process libraries: the ceiling a server built on them can approach.
Each runs in its own worker process, so VmHWM is this library's alone (plus
the dataset arrays, reported separately as the baseline)."""

import time

import numpy as np

from ..common import log
from ..datasets import filter_mask
from .base import Client, System


class Faiss(System, Client):
    name = "faiss"
    supports_ivf = True

    def load(self):
        import faiss
        self.faiss = faiss
        self.info["version"] = faiss.__version__
        self.info["index"] = (f"IndexHNSWFlat(M={self.m}, efConstruction={self.ef_construction}, "
                              "prune_headroom=0)")
        return {"seconds": 0.0, "method": "in-memory array"}

    def build(self):
        faiss = self.faiss
        faiss.omp_set_num_threads(2)
        self.index = faiss.IndexHNSWFlat(self.data.dim, self.m)
        self.index.hnsw.efConstruction = self.ef_construction
        # quiver's default graph (keep_pruned = false): faiss's own.
        self.index.keep_max_size_level0 = False
        # faiss-cpu >= 1.13 shrinks a full list to 80% (prune_headroom
        # 0.2), leaving room so the next links need no pruning; the faiss
        # quiver links (1.12) prunes to the full 2*M. Build the same graph.
        if hasattr(self.index.hnsw, "prune_headroom"):
            self.index.hnsw.prune_headroom = 0.0
        base = self.data.base
        t0 = time.perf_counter()
        step = 10_000
        for s in range(0, len(base), step):
            self.index.add(base[s:s + step])
            log(f"faiss: added {min(s + step, len(base))}/{len(base)}")
        secs = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        return {"seconds": round(secs, 2), "threads": 2}

    rebuilds = True

    def rebuild(self):
        return self.build()

    def build_ivf(self, lists):
        """IndexIVFFlat(IndexFlatL2 quantizer, lists): k-means on the base rows
        with faiss's IVF defaults (10 iterations, a sample of at most 256
        points per list), as quiver's "IVF<lists>,Flat" gets; 2 threads to
        train and add, 1 to search."""
        faiss = self.faiss
        self.index = None  # the HNSW graph is not needed any more
        faiss.omp_set_num_threads(2)
        quantizer = faiss.IndexFlatL2(self.data.dim)
        index = faiss.IndexIVFFlat(quantizer, self.data.dim, int(lists), faiss.METRIC_L2)
        base = self.data.base
        t0 = time.perf_counter()
        index.train(base)
        train_s = time.perf_counter() - t0
        log(f"faiss: IVF trained ({lists} lists) in {train_s:.1f} s")
        index.add(base)
        secs = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        self.ivf_quantizer = quantizer  # the index refers to it
        self.index = index
        self.info["ivf_index"] = f"IndexIVFFlat(IndexFlatL2, nlist={lists})"
        return {"seconds": round(secs, 2), "train_s": round(train_s, 2), "threads": 2,
                "lists": int(lists)}

    def ivf_client(self):
        return self

    def client(self):
        return self

    def set_ef(self, ef):
        if isinstance(self.index, self.faiss.IndexIVF):
            self.index.nprobe = int(ef)  # the IVF sweep: ef is the probes
        else:
            self.index.hnsw.efSearch = int(ef)
        self.ef = int(ef)

    def prepare(self, queries):
        return [np.ascontiguousarray(q.reshape(1, -1)) for q in queries]

    def search(self, q, k, filt=None):
        if filt is None:
            _d, ids = self.index.search(q, k)
        else:
            _d, ids = self.index.search(q, k, params=self._filter_params(filt))
        return ids[0]

    def _filter_params(self, filt):
        cache = getattr(self, "_sel_cache", {})
        self._sel_cache = cache
        key = (filt["name"], self.ef)
        if key not in cache:
            faiss = self.faiss
            mask = filter_mask(self.data.columns, filt)
            bits = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=self.ef)
            cache[key] = (params, selector, bits)  # keep bits and selector alive
        return cache[key][0]


class Hnswlib(System, Client):
    name = "hnswlib"

    def load(self):
        import hnswlib
        self.hnswlib = hnswlib
        try:
            from importlib.metadata import version
            self.info["version"] = version("hnswlib")
        except Exception:  # noqa: BLE001 - version is informative only
            pass
        return {"seconds": 0.0, "method": "in-memory array"}

    def build(self):
        base = self.data.base
        self.index = self.hnswlib.Index(space="l2", dim=self.data.dim)
        self.index.init_index(max_elements=len(base), ef_construction=self.ef_construction,
                              M=self.m, random_seed=100)
        self.index.set_num_threads(2)
        t0 = time.perf_counter()
        step = 10_000
        for s in range(0, len(base), step):
            self.index.add_items(base[s:s + step], self.data.ids[s:s + step])
            log(f"hnswlib: added {min(s + step, len(base))}/{len(base)}")
        secs = time.perf_counter() - t0
        self.index.set_num_threads(1)
        return {"seconds": round(secs, 2), "threads": 2}

    def client(self):
        return self

    def set_ef(self, ef):
        self.index.set_ef(int(ef))

    def prepare(self, queries):
        return [np.ascontiguousarray(q.reshape(1, -1)) for q in queries]

    def search(self, q, k, filt=None):
        if filt is None:
            labels, _d = self.index.knn_query(q, k=k)
        else:
            masks = self.__dict__.setdefault("_masks", {})
            mask = masks.get(filt["name"])
            if mask is None:
                mask = masks[filt["name"]] = filter_mask(self.data.columns, filt)
            labels, _d = self.index.knn_query(q, k=k, filter=lambda i: bool(mask[i]))
        return labels[0]
