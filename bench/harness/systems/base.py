"""The interface every system implements, and the client side of it.

A System owns what must be started, loaded and built once; a Client runs
queries and can be opened again in another process (for the 2-client runs)
from `System.client_spec()`.
"""

import os

from ..common import vm_hwm_mb


class SkipSystem(RuntimeError):
    """The system cannot run here (an optional package did not install)."""


class Client:
    def set_ef(self, ef):
        """Set the search-time ef (None = whatever exact/default path)."""

    def prepare(self, queries):
        """Turn query vectors into whatever `search` takes, outside the timing."""
        return list(queries)

    def search(self, q, k, filt=None):
        """Return the ids of the k nearest rows (filt: a filter spec of
        datasets.FILTERS, as datasets.filter_spec gives; None: no filter)."""
        raise NotImplementedError

    def close(self):
        pass


class System:
    name = "?"
    # Server systems are also measured with 2 concurrent clients.
    multi_client = False
    # True when the ef sweep applies (False: one exact point).
    uses_ef = True
    # True when the system can also be measured with an IVF (ivf_flat) index,
    # after the HNSW sweep: build_ivf, ivf_client, ivf_client_spec.
    supports_ivf = False
    # True when `rebuild` builds the HNSW index again (for build times taken
    # in rounds, as the build target compares them).
    rebuilds = False

    def __init__(self, spec, data):
        self.spec = spec
        self.data = data
        self.k = spec["k"]
        self.m = spec["m"]
        self.ef_construction = spec["ef_construction"]
        self.info = {}
        self.notes = []

    # lifecycle
    def start(self):
        pass

    def load(self):
        """Load data.base with ids 0..n-1 (and the int columns of
        data.columns). Returns a dict."""
        raise NotImplementedError

    def build(self):
        """Build the HNSW index. Returns a dict with at least 'seconds'."""
        raise NotImplementedError

    def rebuild(self):
        """Build the HNSW index again, replacing it. Returns what build does."""
        raise NotImplementedError

    def client(self):
        """The client used by this process."""
        raise NotImplementedError

    def client_spec(self):
        """(module, class, kwargs) to open an equivalent client elsewhere."""
        return None

    def build_ivf(self, lists):
        """Replace the HNSW index by an IVF-flat one with `lists` lists (L2).
        Returns a dict with at least 'seconds'."""
        raise NotImplementedError

    def ivf_client(self):
        """A client of the IVF index whose set_ef(p) sets the probes (nprobe)."""
        raise NotImplementedError

    def ivf_client_spec(self):
        """client_spec() of ivf_client() (for the 2-client runs)."""
        return None

    def wire_ceiling(self, n):
        return None

    def memory(self):
        """Peak RSS of whatever holds the index (this process by default)."""
        v = vm_hwm_mb(os.getpid())
        return {"peak_rss_mb": None if v is None else round(v, 1), "scope": "benchmark process"}

    def disk_mb(self):
        return None

    def stop(self):
        pass
