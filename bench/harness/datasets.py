"""Datasets: produce float32 .npy files under bench/data/<name>/, checksum
them in manifest.json, verify on reuse, and compute exact ground truth.

- fashion-mnist: the IDX files of Debian's dataset-fashion-mnist package
  (train 60,000 x 784 as the base set, t10k 10,000 x 784 as queries).
- synthetic-<n>-<d>: a Gaussian mixture with a fixed seed, plus an int
  column `sel` uniform over 0..99, so `sel < 1`, `sel < 10` and `sel < 50`
  keep about 1 %, 10 % and 50 % of the rows.
"""

import gzip
import hashlib
import json
import os
import re
import struct
import subprocess

import numpy as np

from .common import DATA_DIR, log

SEED = 20240521
# Filters of the `filtered` suite: name -> keep rows with sel < threshold.
FILTERS = {"sel<1": 1, "sel<10": 10, "sel<50": 50}
QUICK_BASE = 10_000
GT_K = 100


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Store:
    """A dataset directory whose .npy files are listed with their sha256."""

    def __init__(self, name):
        self.dir = os.path.join(DATA_DIR, name)
        self.manifest_path = os.path.join(self.dir, "manifest.json")
        os.makedirs(self.dir, exist_ok=True)
        try:
            with open(self.manifest_path) as f:
                self.manifest = json.load(f)
        except (OSError, ValueError):
            self.manifest = {"files": {}}
        self._verified = set()

    def path(self, fn):
        return os.path.join(self.dir, fn)

    def valid(self, fn):
        """True when fn exists and matches its recorded checksum."""
        if fn in self._verified:
            return True
        want = self.manifest["files"].get(fn)
        p = self.path(fn)
        if not want or not os.path.exists(p):
            return False
        if sha256_file(p) != want:
            log(f"dataset: checksum mismatch for {p}: regenerating")
            return False
        self._verified.add(fn)
        return True

    def save(self, fn, arr):
        p = self.path(fn)
        tmp = p + ".tmp.npy"
        np.save(tmp, arr)
        os.replace(tmp, p)
        self.manifest["files"][fn] = sha256_file(p)
        self._verified.add(fn)
        with open(self.manifest_path + ".tmp", "w") as f:
            json.dump(self.manifest, f, indent=1, sort_keys=True)
        os.replace(self.manifest_path + ".tmp", self.manifest_path)

    def forget_ground_truth(self):
        """The source arrays were (re)made: ground truth must be recomputed."""
        for fn in [f for f in self.manifest["files"] if f.startswith("gt-")]:
            del self.manifest["files"][fn]
            self._verified.discard(fn)

    def load(self, fn, mmap=True):
        return np.load(self.path(fn), mmap_mode="r" if mmap else None)


# --- fashion-mnist -------------------------------------------------------------

def _read_idx_images(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"{path}: not an IDX image file (magic {magic})")
    data = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if data.size != count * rows * cols:
        raise ValueError(f"{path}: {data.size} bytes, header says {count}x{rows}x{cols}")
    return data.reshape(count, rows * cols).astype(np.float32)


def _fashion_files():
    out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError("Debian package dataset-fashion-mnist is not installed "
                           "(bench/run installs it)")
    files = {os.path.basename(p): p for p in out.stdout.split()}
    return files["train-images-idx3-ubyte.gz"], files["t10k-images-idx3-ubyte.gz"]


def _make_fashion(store):
    if store.valid("base.npy") and store.valid("queries.npy"):
        return
    train, test = _fashion_files()
    store.forget_ground_truth()
    log(f"dataset: converting {train} and {test} to float32")
    store.save("base.npy", _read_idx_images(train))
    store.save("queries.npy", _read_idx_images(test))


# --- synthetic -------------------------------------------------------------------

def _make_synthetic(store, n, d):
    if store.valid("base.npy") and store.valid("queries.npy") and store.valid("sel.npy"):
        return
    log(f"dataset: generating synthetic mixture n={n} d={d}")
    store.forget_ground_truth()
    rng = np.random.default_rng(SEED)
    clusters = int(max(8, min(1024, n // 1000)))
    centers = rng.normal(0.0, 1.0, (clusters, d)).astype(np.float32)
    weights = rng.dirichlet(np.full(clusters, 2.0))
    sigma = 0.35

    def draw(rng, count):
        out = np.empty((count, d), dtype=np.float32)
        step = 100_000
        for start in range(0, count, step):
            m = min(step, count - start)
            a = rng.choice(clusters, size=m, p=weights)
            out[start:start + m] = centers[a] + rng.normal(0.0, sigma, (m, d)).astype(np.float32)
        return out

    store.save("base.npy", draw(np.random.default_rng(SEED + 1), n))
    store.save("queries.npy", draw(np.random.default_rng(SEED + 2), 10_000))
    sel = (np.random.default_rng(SEED + 3).permutation(n) % 100).astype(np.int32)
    store.save("sel.npy", sel)


# --- ground truth ------------------------------------------------------------------

def _exact_topk(base, queries, k):
    import faiss
    faiss.omp_set_num_threads(2)
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base))
    dists = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    step = 1000
    for s in range(0, len(queries), step):
        dists[s:s + step], ids[s:s + step] = index.search(
            np.ascontiguousarray(queries[s:s + step]), k)
    return ids, dists


def _ground_truth(store, tag, base, queries, mask=None):
    fi, fd = f"gt-{tag}-ids.npy", f"gt-{tag}-dists.npy"
    if store.valid(fi) and store.valid(fd):
        return store.path(fi), store.path(fd)
    log(f"dataset: exact top-{GT_K} ground truth ({tag}) with faiss IndexFlatL2")
    if mask is None:
        ids, dists = _exact_topk(base, queries, min(GT_K, len(base)))
    else:
        rows = np.nonzero(mask)[0]
        ids, dists = _exact_topk(base[rows], queries, min(GT_K, len(rows)))
        ids = np.where(ids >= 0, rows[np.clip(ids, 0, None)], -1)
    store.save(fi, ids)
    store.save(fd, dists)
    return store.path(fi), store.path(fd)


def prepare(name, quick, nqueries, suite):
    """Make sure the files exist; returns a JSON-able description that the
    per-system workers load with `load()`."""
    store = Store(name)
    m = re.fullmatch(r"synthetic-(\d+)-(\d+)", name)
    if name == "fashion-mnist":
        _make_fashion(store)
    elif m:
        _make_synthetic(store, int(m.group(1)), int(m.group(2)))
    else:
        raise SystemExit(f"unknown dataset {name!r} (fashion-mnist or synthetic-<n>-<d>)")
    base_all = store.load("base.npy")
    queries_all = store.load("queries.npy")
    n = min(len(base_all), QUICK_BASE) if quick else len(base_all)
    nq = min(nqueries, len(queries_all))
    base = np.ascontiguousarray(base_all[:n])
    queries = np.ascontiguousarray(queries_all[:nq])
    desc = {
        "name": name, "dir": store.dir, "n": n, "nq": nq, "dim": int(base.shape[1]),
        "n_total": int(len(base_all)), "checksums": dict(store.manifest["files"]),
        "base": store.path("base.npy"), "queries": store.path("queries.npy"),
        "sel": None, "gt": {}, "filters": {},
    }
    ids, dists = _ground_truth(store, f"n{n}-q{nq}", base, queries)
    desc["gt"][""] = {"ids": ids, "dists": dists}
    if suite == "filtered":
        if not store.valid("sel.npy"):
            raise SystemExit("the filtered suite needs a dataset with scalar columns "
                             "(synthetic-<n>-<d>)")
        desc["sel"] = store.path("sel.npy")
        sel = store.load("sel.npy")[:n]
        for fname, thr in FILTERS.items():
            mask = sel < thr
            ids, dists = _ground_truth(store, f"n{n}-q{nq}-sel{thr}", base, queries, mask)
            desc["gt"][fname] = {"ids": ids, "dists": dists}
            desc["filters"][fname] = {"threshold": thr,
                                      "selectivity": round(float(mask.mean()), 4)}
    elif store.valid("sel.npy"):
        desc["sel"] = store.path("sel.npy")
    return desc


def _head(path, n):
    arr = np.load(path, mmap_mode="r")
    if len(arr) == n:
        return np.load(path)
    return np.array(arr[:n])  # reads only the first n rows


class Loaded:
    """The arrays a worker needs, loaded from a `prepare()` description."""

    def __init__(self, desc):
        self.desc = desc
        n, nq = desc["n"], desc["nq"]
        self.name = desc["name"]
        self.dim = desc["dim"]
        # Plain reads (no mmap): the arrays are then anonymous memory, counted
        # once in this process's RSS before any index is built.
        self.base = _head(desc["base"], n)
        self.queries = _head(desc["queries"], nq)
        self.sel = _head(desc["sel"], n) if desc.get("sel") else None
        self.ids = np.arange(n, dtype=np.int64)
        self.gt = {k: (np.load(v["ids"]), np.load(v["dists"])) for k, v in desc["gt"].items()}
        self.filters = desc["filters"]


def recall_at_k(loaded, results, k=10, filter_name=""):
    """Recall@k with distance ties counted as hits: a returned id counts when
    it is a valid row (passing the filter) whose exact distance to the query
    is within the k-th true distance."""
    _gt_ids, gt_d = loaded.gt[filter_name]
    thr = (loaded.filters[filter_name]["threshold"] if filter_name else None)
    n = len(loaded.base)
    total = 0
    for i, res in enumerate(results):
        ids = np.unique(np.asarray([r for r in list(res)[:k] if r is not None], dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < n)]
        if thr is not None and len(ids):
            ids = ids[loaded.sel[ids] < thr]
        if not len(ids):
            continue
        q = loaded.queries[i].astype(np.float64)
        d = ((loaded.base[ids].astype(np.float64) - q) ** 2).sum(axis=1)
        kth = float(gt_d[i, min(k, gt_d.shape[1]) - 1])
        total += int(np.count_nonzero(d <= kth * (1 + 1e-5) + 1e-6))
    return total / (k * len(results))
