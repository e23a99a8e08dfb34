#!/usr/bin/env python3
"""Run a sqllogictest file against a real PostgreSQL and report every
record whose outcome differs from the file's: the check that a golden file
says what PostgreSQL 15 says before quiver is held to it.

    scripts/slt_against_pg.py 'host=/tmp port=5544 user=postgres' sqllogictest/transactions.slt

Each file runs in a fresh database. Records: `statement ok`, `statement
error [code]`, `query <types> [rowsort]` with `----` results, `connection
<name>` (later records use that session). Values are compared as
PostgreSQL writes them in text (`2`, not Python's `2.0`), with NULL and
(empty) as the quiver runner prints them.
"""
import sys
import psycopg
from psycopg.types.string import TextLoader


def as_text(conn):
    """Load every value of `conn`'s results as the text PostgreSQL sent."""
    for t in psycopg.postgres.types:
        for oid in (t.oid, getattr(t, "array_oid", 0)):
            if oid:
                conn.adapters.register_loader(oid, TextLoader)
    return conn


def value(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "t" if v else "f"
    s = str(v)
    return s if s else "(empty)"


def records(text):
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line or line.startswith("#"):
            i += 1
            continue
        head = line.split()
        i += 1
        if head[0] == "connection":
            yield ("connection", head[1], None, None, i)
            continue
        sql = []
        while i < len(lines) and lines[i].strip() and lines[i].strip() != "----":
            sql.append(lines[i])
            i += 1
        expected = None
        if i < len(lines) and lines[i].strip() == "----":
            i += 1
            expected = []
            while i < len(lines) and lines[i].strip():
                expected.append(lines[i].rstrip())
                i += 1
        yield (head[0], head[1:], "\n".join(sql), expected, i)


def main():
    dsn, path = sys.argv[1], sys.argv[2]
    admin = psycopg.connect(dsn, autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS slt_check")
    admin.execute("CREATE DATABASE slt_check")
    sessions = {}
    # pgvector where the server has it (bench/setup.sh builds it).
    with psycopg.connect(dsn + " dbname=slt_check", autocommit=True) as c:
        try:
            c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as e:
            print(f"without pgvector: {e}")

    def session(name):
        if name not in sessions:
            sessions[name] = as_text(
                psycopg.connect(dsn + " dbname=slt_check", autocommit=True)
            )
        return sessions[name]

    current = "default"
    bad = 0
    for kind, args, sql, expected, line in records(open(path).read()):
        if kind == "connection":
            current = args
            continue
        conn = session(current)
        try:
            cur = conn.execute(sql)
            rows = cur.fetchall() if cur.description else None
            err = None
        except psycopg.Error as e:
            rows, err = None, e
        if kind == "statement" and args[0] == "ok" and err:
            print(f"{path}:{line}: expected ok, got {err.sqlstate} {err}")
            bad += 1
        elif kind == "statement" and args[0] == "error":
            code = args[1] if len(args) > 1 else None
            if err is None or (code and err.sqlstate != code):
                got = f"{err.sqlstate} {err}" if err else "success"
                print(f"{path}:{line}: expected error {code}, got {got}")
                bad += 1
        elif kind == "query":
            if err:
                print(f"{path}:{line}: query failed: {err.sqlstate} {err}")
                bad += 1
                continue
            got = [" ".join(value(v) for v in r) for r in rows]
            if "rowsort" in args:
                got.sort()
            want = [" ".join(e.split()) for e in (expected or [])]
            if got != want:
                print(f"{path}:{line}: expected {want}, got {got}")
                bad += 1
    print(f"{path}: {bad} difference(s) from PostgreSQL")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
