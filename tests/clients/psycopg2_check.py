"""psycopg2 against quiver, as applications use it: its implicit
transactions (CREATE TABLE included), commit and rollback, a named cursor,
copy_expert to STDOUT, and pgvector's register_vector (which looks up
vector and _vector with to_regtype)."""
import io
import sys

import numpy as np
import psycopg2
from pgvector.psycopg2 import register_vector

port = int(sys.argv[1])
conn = psycopg2.connect(host="127.0.0.1", port=port, user="quiver", dbname="default")
cur = conn.cursor()
cur.execute("CREATE TABLE p2 (id BIGINT PRIMARY KEY, name TEXT, v VECTOR(2))")
cur.executemany(
    "INSERT INTO p2 VALUES (%s, %s, %s)", [(i, f"n{i}", f"[{i},1]") for i in range(1000)]
)
conn.commit()

named = conn.cursor(name="walk")
named.itersize = 100
named.execute("SELECT id, name FROM p2 ORDER BY id")
rows = list(named)
assert len(rows) == 1000 and rows[:2] == [(0, "n0"), (1, "n1")], rows[:2]
named.close()
conn.commit()

buf = io.StringIO()
cur.copy_expert(
    "COPY (SELECT id, name, v FROM p2 WHERE id < 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)",
    buf,
)
assert buf.getvalue() == 'id,name,v\n0,n0,"[0,1]"\n1,n1,"[1,1]"\n2,n2,"[2,1]"\n', buf.getvalue()

cur.execute("INSERT INTO p2 VALUES (5000, 'x', '[0,0]')")
cur.execute("DELETE FROM p2 WHERE id < 500")
conn.rollback()
cur.execute("SELECT count(*) FROM p2")
assert cur.fetchone() == (1000,)

register_vector(conn)
cur.execute("SELECT v FROM p2 WHERE id = 7")
(v,) = cur.fetchone()
assert np.array_equal(v.to_numpy(), np.array([7, 1], dtype=np.float32)), v
cur.execute("SELECT id FROM p2 ORDER BY v <-> %s LIMIT 1", (np.array([9.1, 1], dtype=np.float32),))
assert cur.fetchone() == (9,)
conn.close()
print("ok")
