"""Systems under test. Each module is imported only when its system runs, so
an optional one that did not install (LanceDB) does not break the others."""

import importlib

REGISTRY = {
    "faiss": ("harness.systems.inproc", "Faiss"),
    "hnswlib": ("harness.systems.inproc", "Hnswlib"),
    "lancedb": ("harness.systems.lance", "LanceDB"),
    "pgvector": ("harness.systems.pgvector", "PgVector"),
    "pgwire": ("harness.systems.pgvector", "PgWireOnly"),
    "milvus": ("harness.systems.milvus", "Milvus"),
    "quiver": ("harness.systems.quiver", "Quiver"),
}
ALL = ["quiver", "faiss", "hnswlib", "pgvector", "milvus", "lancedb"]


def get(name):
    mod, cls = REGISTRY[name]
    return getattr(importlib.import_module(mod), cls)
