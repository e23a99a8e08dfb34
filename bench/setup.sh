#!/usr/bin/env bash
# Idempotent set-up for the benchmark harness: Debian packages, pgvector built
# from Debian's trixie source package, and the Python venv at bench/.venv.
# Every step checks first and does nothing when its result is already there.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$BENCH/.cache"
VENV="$BENCH/.venv"
mkdir -p "$CACHE"

log() { echo "[setup] $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    $SUDO timeout 600 apt-get update -qq
    apt_updated=1
  fi
}

# --- Debian packages (only the missing ones) -------------------------------
need=()
for pkg in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    need+=("$pkg")
  fi
done
if [ "${#need[@]}" -gt 0 ]; then
  apt_update_once
  log "apt-get install ${need[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -qq "${need[@]}" >&2
fi

# --- pgvector for PostgreSQL 15 ---------------------------------------------
# Bookworm has no pgvector package: build trixie's source package.
if [ "${QUIVER_BENCH_PGVECTOR:-1}" = 1 ] && [ -x /usr/lib/postgresql/15/bin/postgres ]; then
  pg_sharedir="$(/usr/lib/postgresql/15/bin/pg_config --sharedir 2>/dev/null || echo /usr/share/postgresql/15)"
  if [ ! -f "$pg_sharedir/extension/vector.control" ]; then
    srcfile=/etc/apt/sources.list.d/quiver-bench-trixie-src.sources
    if [ ! -f "$srcfile" ]; then
      # Reuse the mirror the machine already uses for Debian.
      mirror="$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
                 | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)"
      if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
        mirror="$(awk '$1=="deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list)"
      fi
      mirror="${mirror:-http://deb.debian.org/debian}"
      log "adding deb-src for trixie on $mirror ($srcfile)"
      printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" | $SUDO tee "$srcfile" >/dev/null
      apt_updated=0
    fi
    apt_update_once
    work="$CACHE/pgvector-src"
    rm -rf "$work"; mkdir -p "$work"
    log "apt-get source pgvector"
    (cd "$work" && timeout 600 apt-get source -qq pgvector >&2)
    dir="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n1)"
    [ -n "$dir" ] || { log "apt-get source pgvector produced no directory"; exit 1; }
    log "building pgvector in $dir"
    (cd "$dir" && nice -n 10 make -s PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config >&2 \
       && $SUDO make -s install PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config >&2)
  fi
fi

# --- Python venv -------------------------------------------------------------
req="$BENCH/requirements.txt"
stamp="$VENV/.requirements.sha256"
want="$(cat "$req" "$BENCH/requirements-optional.txt" 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  py="${QUIVER_BENCH_PYTHON:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV with $($py --version 2>&1)"
    "$py" -m venv "$VENV"
  fi
  log "pip install -r $req (first time: a few minutes)"
  nice -n 10 "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  # LanceDB is optional: its absence only skips that system.
  if [ -f "$BENCH/requirements-optional.txt" ]; then
    nice -n 10 "$VENV/bin/pip" install -q --disable-pip-version-check -r "$BENCH/requirements-optional.txt" >&2 \
      || log "optional packages (lancedb) did not install; that system will be skipped"
  fi
  echo "$want" > "$stamp"
fi
log "ok"
