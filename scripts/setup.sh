#!/usr/bin/env bash
# Installs what building and testing quiver needs on a Debian machine, only
# what is missing: a C toolchain, cmake and OpenBLAS (faiss), openssl, the psql client,
# a Rust toolchain, and with --test the clients of the driver tests (Python
# drivers, SQLAlchemy, Alembic, pgcli, node-postgres, a JDK and pgjdbc).
set -euo pipefail

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v curl >/dev/null || need_apt+=(curl ca-certificates)
# openssl: the TLS test makes its certificate with it.
command -v openssl >/dev/null || need_apt+=(openssl)
# faiss (built from source by the faiss crate) needs cmake and a BLAS.
command -v cmake >/dev/null || need_apt+=(cmake)
dpkg -s libopenblas-dev >/dev/null 2>&1 || need_apt+=(libopenblas-dev)
if ((${#need_apt[@]})); then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "setup: installing ${need_apt[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH=$HOME/.cargo/bin:$PATH
  else
    echo "setup: installing the Rust toolchain (rustup)" >&2
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
    export PATH=$HOME/.cargo/bin:$PATH
  fi
fi

if [[ ${1:-} == --test ]]; then
  # pgjdbc's client test: a JDK and Debian's PostgreSQL JDBC driver.
  test_apt=()
  command -v javac >/dev/null || test_apt+=(default-jdk-headless)
  [[ -f /usr/share/java/postgresql.jar ]] || test_apt+=(libpostgresql-jdbc-java)
  if ((${#test_apt[@]})); then
    sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    echo "setup: installing ${test_apt[*]} for the pgjdbc test" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${test_apt[@]}" >/dev/null
  fi
  if ! python3 -c 'import psycopg' 2>/dev/null; then
    echo "setup: installing psycopg for the driver tests" >&2
    python3 -m pip install -q 'psycopg[binary]==3.2.*' 2>/dev/null \
      || python3 -m pip install -q --break-system-packages 'psycopg[binary]==3.2.*'
  fi
  if ! python3 -c 'import psycopg2, asyncpg, sqlalchemy, alembic, pgcli, pgvector, numpy' 2>/dev/null; then
    echo "setup: installing psycopg2, asyncpg, SQLAlchemy, Alembic, pgcli and pgvector-python for the driver tests" >&2
    drivers=('psycopg2-binary==2.9.*' 'asyncpg==0.32.*' 'sqlalchemy==2.0.*' 'alembic==1.14.*' 'pgcli==4.*' 'pgvector==0.5.*' numpy)
    python3 -m pip install -q "${drivers[@]}" 2>/dev/null \
      || python3 -m pip install -q --break-system-packages "${drivers[@]}"
  fi
  # langchain-postgres pins pgvector-python below 0.4 (the driver tests
  # use 0.5): it gets a directory of its own, which its test script puts
  # first on its path.
  langchain_dir="${XDG_CACHE_HOME:-$HOME/.cache}/quiver-test-python/langchain"
  if [[ ! -d $langchain_dir/langchain_postgres ]]; then
    echo "setup: installing langchain-postgres for its client test (in $langchain_dir)" >&2
    python3 -m pip install -q --target "$langchain_dir" 'langchain-postgres==0.0.19' 2>/dev/null \
      || python3 -m pip install -q --break-system-packages --target "$langchain_dir" 'langchain-postgres==0.0.19'
  fi
  # node-postgres and pgvector-node, pinned by tests/clients/node's lock file.
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    echo "setup: installing Node.js and npm for the node-postgres test" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
  fi
  node_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/clients/node"
  if [[ ! -d $node_dir/node_modules/pg || ! -d $node_dir/node_modules/pgvector ]]; then
    echo "setup: installing node-postgres and pgvector-node (npm ci)" >&2
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
  # moto: a real S3-compatible server on loopback for the object-store test.
  if ! python3 -c 'import moto, flask, flask_cors' 2>/dev/null; then
    echo "setup: installing moto (S3 server) for the object-store test" >&2
    python3 -m pip install -q 'moto[s3]==5.*' flask flask-cors 2>/dev/null \
      || python3 -m pip install -q --break-system-packages 'moto[s3]==5.*' flask flask-cors
  fi
fi
