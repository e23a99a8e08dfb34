"""Shared helpers: paths, logging, process bookkeeping, ports, memory readings."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(BENCH_DIR)
CACHE_DIR = os.path.join(BENCH_DIR, ".cache")
DATA_DIR = os.path.join(BENCH_DIR, "data")
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
# One file per process the harness started and must stop, even after a crash.
PID_DIR = os.path.join(CACHE_DIR, "run")

# Child processes inherit the start time, so all progress lines share one clock.
_T0 = float(os.environ.setdefault("QUIVER_BENCH_T0", repr(time.time())))


def log(msg):
    """Progress line on stderr (stdout stays clean)."""
    print(f"[bench {time.time() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------------

def register_pid(name, pid, stop=None):
    """Record a process to stop at the end. `stop` is an optional argv run
    instead of signals (e.g. pg_ctl stop)."""
    os.makedirs(PID_DIR, exist_ok=True)
    with open(os.path.join(PID_DIR, f"{name}.json"), "w") as f:
        json.dump({"pid": pid, "stop": stop, "start_time": proc_start_time(pid)}, f)


def unregister_pid(name):
    try:
        os.remove(os.path.join(PID_DIR, f"{name}.json"))
    except FileNotFoundError:
        pass


def proc_start_time(pid):
    """Start time (clock ticks since boot) from /proc/<pid>/stat: tells a
    recycled PID from ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid, start_time=None):
    st = proc_start_time(pid)
    if st is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    except OSError:
        return False
    return start_time is None or st == start_time


def children_map():
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def proc_tree(pid):
    """pid and all its descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def terminate_tree(pid, grace=10.0, start_time=None):
    """SIGTERM a process and its descendants (by PID), SIGKILL what is left."""
    if not alive(pid, start_time):
        return
    pids = proc_tree(pid)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
        # reap if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    for p in pids:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cleanup_registered():
    """Stop every process recorded with register_pid (used by the driver's
    finally block and by bench/run's exit trap)."""
    if not os.path.isdir(PID_DIR):
        return
    for fn in sorted(os.listdir(PID_DIR)):
        path = os.path.join(PID_DIR, fn)
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            os.remove(path)
            continue
        pid, st = rec.get("pid"), rec.get("start_time")
        if pid and alive(pid, st):
            log(f"cleanup: stopping leftover {fn[:-5]} (pid {pid})")
            if rec.get("stop"):
                try:
                    subprocess.run(rec["stop"], timeout=60, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            terminate_tree(pid, grace=10, start_time=st)
        os.remove(path)


# --- ports -------------------------------------------------------------------

def free_port(preferred=None):
    """A TCP port free on 127.0.0.1 (the preferred one if it is free)."""
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, host="127.0.0.1", proc=None):
    """Wait until host:port accepts TCP connections; False on timeout or if
    `proc` (a Popen) exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


# --- memory ------------------------------------------------------------------

def _status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def vm_hwm_mb(pid):
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024.0


def tree_hwm_mb(pid):
    """Peak RSS (VmHWM) of a server's process tree: max over its processes and
    the sum (the sum counts shared memory once per process)."""
    vals = [v for v in (vm_hwm_mb(p) for p in proc_tree(pid)) if v is not None]
    if not vals:
        return {"peak_rss_mb": None, "peak_rss_sum_mb": None, "processes": 0}
    return {"peak_rss_mb": round(max(vals), 1), "peak_rss_sum_mb": round(sum(vals), 1),
            "processes": len(vals)}


def dir_size_mb(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for fn in files:
            try:
                total += os.lstat(os.path.join(root, fn)).st_size
            except OSError:
                pass
    return round(total / 2**20, 1)


# --- misc ----------------------------------------------------------------------

def run_as_db_user_argv(argv, user="postgres"):
    """PostgreSQL refuses to run as root: wrap argv to run as `user` then."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", user, "--"] + argv


def lscpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


def mem_total_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def _cpu_times():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields), idle


def settle(max_s=30.0, busy_below=0.1, window_s=0.5):
    """Write out dirty pages (an index a system just saved, say) and wait,
    up to `max_s`, for a `window_s` in which the CPUs are busy less than
    `busy_below` of the time, so that no system's measurement starts while
    the kernel or a server still finishes the last build. Returns the
    seconds waited and the busy fraction of the last window."""
    t0 = time.perf_counter()
    os.sync()
    busy = 1.0
    while True:
        total0, idle0 = _cpu_times()
        time.sleep(window_s)
        total1, idle1 = _cpu_times()
        span = max(total1 - total0, 1)
        busy = 1.0 - (idle1 - idle0) / span
        waited = time.perf_counter() - t0
        if busy < busy_below or waited >= max_s:
            return round(waited, 1), round(busy, 3)


# The superuser password of the quiver servers the benchmarks start
# (loopback only, scratch data directories).
BENCH_PASSWORD = "quiver-bench"
