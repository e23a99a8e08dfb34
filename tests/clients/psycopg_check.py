"""psycopg 3 against quiver: server-side prepared statements (prepare=True),
text and binary parameters, same answers as psql."""
import sys

import psycopg

port = int(sys.argv[1])
want = [(1, "red shoe", 0.0), (4, "red hat", 0.14142137441313676), (2, "blue shoe", 1.4142135623730951)]

with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default", autocommit=True) as conn:
    conn.execute("CREATE TABLE products (id BIGINT PRIMARY KEY, name TEXT, embedding VECTOR(4))")
    rows = [(1, "red shoe", "[1,0,0,0]"), (2, "blue shoe", "[0,1,0,0]"),
            (3, "green hat", "[0,0,2,0]"), (4, "red hat", "[0.9,0.1,0,0]")]
    with conn.cursor() as cur:
        for r in rows:
            cur.execute("INSERT INTO products (id, name, embedding) VALUES (%s, %s, %s)", r, prepare=True)
    q = "SELECT id, name, embedding <-> %s AS distance FROM products ORDER BY embedding <-> %s LIMIT 3"
    for _ in range(3):
        got = conn.execute(q, ("[1,0,0,0]", "[1,0,0,0]"), prepare=True).fetchall()
        assert got == want, got
    # A vector parameter without a dimension, as text.
    got = conn.execute("SELECT id FROM products ORDER BY embedding <-> %s::vector LIMIT 2", ("[1,0,0,0]",), prepare=True).fetchall()
    assert got == [(1,), (4,)], got
    # Binary results.
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id, name FROM products WHERE id = %s", (4,), prepare=True)
        assert cur.fetchall() == [(4, "red hat")]
    # Errors keep their SQLSTATE; the connection stays usable.
    try:
        conn.execute("INSERT INTO products (id, embedding) VALUES (%s, %s)", (1, "[0,0,0,0]"))
        raise SystemExit("duplicate key accepted")
    except psycopg.errors.UniqueViolation:
        pass
    # psycopg sends DEALLOCATE ALL after DDL on a connection holding
    # prepared statements; the statements prepare again afterwards.
    conn.execute("CREATE TABLE scratch (id BIGINT PRIMARY KEY)")
    conn.execute("DROP TABLE scratch")
    for _ in range(3):
        got = conn.execute(q, ("[1,0,0,0]", "[1,0,0,0]"), prepare=True).fetchall()
        assert got == want, got
    conn.execute("DEALLOCATE ALL")
    # A transaction block, as psycopg opens without autocommit.
    with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default") as c2:
        n = c2.execute("SELECT count(*) FROM products").fetchone()[0]
        assert n == 4, n
        c2.commit()
print("psycopg ok")
