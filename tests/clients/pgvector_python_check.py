"""pgvector-python's psycopg integration against quiver, as its README
uses it: register_vector, numpy vectors as parameters (binary), a nearest
neighbour query, and binary COPY of vectors with set_types."""
import sys

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

port = int(sys.argv[1])
with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default", autocommit=True) as conn:
    register_vector(conn)
    conn.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, embedding VECTOR(3))")
    conn.execute("INSERT INTO items (id, embedding) VALUES (%s, %s)", (1, np.array([1, 2, 3])))
    with conn.cursor() as cur:
        with cur.copy("COPY items (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "vector"])
            for i in range(2, 102):
                copy.write_row((i, np.array([i, 0, 1], dtype=np.float32)))
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (101,)
    got = conn.execute(
        "SELECT id, embedding FROM items ORDER BY embedding <-> %s LIMIT 2", (np.array([1, 2, 3.5]),)
    ).fetchall()
    assert [r[0] for r in got] == [1, 2], got
    assert np.array_equal(got[0][1].to_numpy(), np.array([1, 2, 3], dtype=np.float32)), got
    with conn.transaction():
        conn.execute("DELETE FROM items WHERE id > 1")
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
        raise psycopg.Rollback()
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (101,)
print("ok")
