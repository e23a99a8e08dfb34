"""Datasets: produce float32 .npy files under bench/data/<name>/, checksum
them in manifest.json, verify on reuse, and compute exact ground truth.

- fashion-mnist: the IDX files of Debian's dataset-fashion-mnist package
  (train 60,000 x 784 as the base set, t10k 10,000 x 784 as queries).
- synthetic-<n>-<d>: a Gaussian mixture with a fixed seed.

Both get int columns independent of the vectors: `sel`, uniform over 0..99,
and `sel1000`, uniform over 0..999; fashion-mnist also `label`, the class of
each image (0..9), a filter that follows the vectors (a category). The
`filtered` suite's filters (FILTERS) use them with equality, ranges and IN
lists, from 0.1 % to 50 % of the rows.
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
# Filters of the `filtered` suite: name -> (column, op, value); op is one of
# "<", "=", "in". `label` exists for fashion-mnist only.
FILTERS = {
    "sel1000=7": ("sel1000", "=", 7),                                  # 0.1 %
    "sel1000<10": ("sel1000", "<", 10),                                # 1 %
    "sel in 10": ("sel", "in", [3, 14, 15, 26, 35, 53, 58, 79, 89, 97]),  # 10 %
    "sel<10": ("sel", "<", 10),                                        # 10 %
    "label=3": ("label", "=", 3),                                      # 10 %, a category
    "sel<50": ("sel", "<", 50),                                        # 50 %
}
SCALAR_COLUMNS = ("sel", "sel1000", "label")


def filter_spec(name):
    column, op, value = FILTERS[name]
    return {"name": name, "column": column, "op": op, "value": value}


def filter_mask(columns, f):
    """Which rows pass filter spec `f` (a FILTERS entry as filter_spec gives)."""
    c = columns[f["column"]]
    if f["op"] == "<":
        return c < f["value"]
    if f["op"] == "=":
        return c == f["value"]
    return np.isin(c, f["value"])


def filter_sql(f):
    """The WHERE condition of `f` for SQL, with %s for its one parameter
    (IN lists are written out), and the parameters."""
    col, op, v = f["column"], f["op"], f["value"]
    if op == "in":
        return f"{col} IN ({', '.join(str(int(x)) for x in v)})", ()
    return f"{col} {op} %s", (int(v),)


def filter_literal(f, eq="="):
    """The condition of `f` with its values written out (Milvus: eq="==")."""
    col, op, v = f["column"], f["op"], f["value"]
    if op == "in":
        return f"{col} in [{', '.join(str(int(x)) for x in v)}]" if eq == "==" else \
            f"{col} IN ({', '.join(str(int(x)) for x in v)})"
    return f"{col} {eq if op == '=' else op} {int(v)}"
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


def _read_idx_labels(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count = struct.unpack(">II", raw[:8])
    if magic != 2049:
        raise ValueError(f"{path}: not an IDX label file (magic {magic})")
    return np.frombuffer(raw, dtype=np.uint8, offset=8)[:count].astype(np.int32)


def _fashion_files():
    out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError("Debian package dataset-fashion-mnist is not installed "
                           "(bench/run installs it)")
    files = {os.path.basename(p): p for p in out.stdout.split()}
    return (files["train-images-idx3-ubyte.gz"], files["t10k-images-idx3-ubyte.gz"],
            files["train-labels-idx1-ubyte.gz"])


def _make_fashion(store):
    train, test, labels = _fashion_files()
    if not (store.valid("base.npy") and store.valid("queries.npy")):
        store.forget_ground_truth()
        log(f"dataset: converting {train} and {test} to float32")
        store.save("base.npy", _read_idx_images(train))
        store.save("queries.npy", _read_idx_images(test))
    if not store.valid("label.npy"):
        store.save("label.npy", _read_idx_labels(labels))
    _make_selectors(store, len(store.load("base.npy")))


def _make_selectors(store, n):
    """The columns independent of the vectors: a seeded permutation of the
    rows, modulo 100 and 1000."""
    for fn, mod, seed in (("sel.npy", 100, SEED + 3), ("sel1000.npy", 1000, SEED + 4)):
        if not store.valid(fn):
            store.save(fn, (np.random.default_rng(seed).permutation(n) % mod).astype(np.int32))


# --- synthetic -------------------------------------------------------------------

def _make_synthetic(store, n, d):
    if store.valid("base.npy") and store.valid("queries.npy"):
        _make_selectors(store, n)
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
    _make_selectors(store, n)


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


def prepare(name, quick, nqueries, suite, filters=None):
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
        "columns": {}, "gt": {}, "filters": {},
    }
    ids, dists = _ground_truth(store, f"n{n}-q{nq}", base, queries)
    desc["gt"][""] = {"ids": ids, "dists": dists}
    if suite == "filtered":
        for col in SCALAR_COLUMNS:
            if store.valid(f"{col}.npy"):
                desc["columns"][col] = store.path(f"{col}.npy")
        columns = {c: store.load(f"{c}.npy")[:n] for c in desc["columns"]}
        for fname in filters or FILTERS:
            f = filter_spec(fname)
            if f["column"] not in columns:
                continue
            mask = filter_mask(columns, f)
            tag = fname.replace(" ", "").replace("<", "lt").replace("=", "eq")
            ids, dists = _ground_truth(store, f"n{n}-q{nq}-{tag}", base, queries, mask)
            desc["gt"][fname] = {"ids": ids, "dists": dists}
            desc["filters"][fname] = {**f, "selectivity": round(float(mask.mean()), 4)}
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
        self.columns = {c: _head(p, n) for c, p in desc.get("columns", {}).items()}
        self.sel = self.columns.get("sel")
        self.ids = np.arange(n, dtype=np.int64)
        self.gt = {k: (np.load(v["ids"]), np.load(v["dists"])) for k, v in desc["gt"].items()}
        self.filters = desc["filters"]


def recall_at_k(loaded, results, k=10, filter_name=""):
    """Recall@k with distance ties counted as hits: a returned id counts when
    it is a valid row (passing the filter) whose exact distance to the query
    is within the k-th true distance."""
    _gt_ids, gt_d = loaded.gt[filter_name]
    passes = (filter_mask(loaded.columns, loaded.filters[filter_name])
              if filter_name else None)
    n = len(loaded.base)
    total = 0
    for i, res in enumerate(results):
        ids = np.unique(np.asarray([r for r in list(res)[:k] if r is not None], dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < n)]
        if passes is not None and len(ids):
            ids = ids[passes[ids]]
        if not len(ids):
            continue
        q = loaded.queries[i].astype(np.float64)
        d = ((loaded.base[ids].astype(np.float64) - q) ** 2).sum(axis=1)
        kth = float(gt_d[i, min(k, gt_d.shape[1]) - 1])
        total += int(np.count_nonzero(d <= kth * (1 + 1e-5) + 1e-6))
    return total / (k * len(results))
