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
    # A prepared search keeps its plan and swaps the query vector in: each
    # execution answers for its own vector, with the distance computed
    # from it; other parameters changing make a new plan.
    q2 = "SELECT id, embedding <-> %s::vector AS d FROM products WHERE id > %s ORDER BY embedding <-> %s::vector LIMIT 2"
    for vec, floor in [("[1,0,0,0]", 0), ("[0,1,0,0]", 0), ("[0,0,2,0]", 0), ("[0,0,2,0]", 3), ("[1,0,0,0]", 3)]:
        got = conn.execute(q2, (vec, floor, vec), prepare=True).fetchall()
        lit = f"'{vec}'"
        expected = conn.execute(
            f"SELECT id, embedding <-> {lit} AS d FROM products WHERE id > {floor} ORDER BY embedding <-> {lit} LIMIT 2").fetchall()
        assert got == expected, (vec, floor, got, expected)
    # One parameter used twice ($1 in the select list and in ORDER BY), as
    # drivers that write $n send it: the kept plan runs for each new vector,
    # its projected distance included, with OFFSET applied.
    with psycopg.RawCursor(conn) as raw:
        q4 = "SELECT id, name, embedding <-> $1::vector AS d FROM products ORDER BY embedding <-> $1::vector LIMIT 2 OFFSET 1"
        for vec in ["[1,0,0,0]", "[0,1,0,0]", "[0,0,2,0]", "[0.5,0.5,0,0]", "[1,0,0,0]"]:
            got = raw.execute(q4, (vec,), prepare=True).fetchall()
            lit = f"'{vec}'"
            expected = conn.execute(
                f"SELECT id, name, embedding <-> {lit} AS d FROM products ORDER BY embedding <-> {lit} LIMIT 2 OFFSET 1").fetchall()
            assert got == expected, (vec, got, expected)
            assert len(got) == 2, got
    q3 = "SELECT id FROM products ORDER BY embedding <-> %s::vector LIMIT 1"
    for vec, first in [("[0,1,0,0]", 2), ("[0,0,1,0]", 3), ("[1,0,0,0]", 1)]:
        got = conn.execute(q3, (vec,), prepare=True).fetchall()
        assert got == [(first,)], (vec, got)
    # LIMIT and OFFSET as parameters (pgvector's own example query), in
    # prepared and unprepared executions; LIMIT 0; negative ones refused as
    # PostgreSQL refuses them; NULL is no limit.
    q4 = "SELECT id FROM products ORDER BY embedding <-> %s LIMIT %s"
    for k in [1, 3, 0, 2]:
        for prepare in [False, True]:
            got = conn.execute(q4, ("[0,1,0,0]", k), prepare=prepare).fetchall()
            assert len(got) == k and (k == 0 or got[0] == (2,)), (k, got)
    got = conn.execute("SELECT id FROM products ORDER BY id LIMIT %s OFFSET %s", (2, 1)).fetchall()
    assert got == [(2,), (3,)], got
    got = conn.execute("SELECT id FROM products ORDER BY id LIMIT %s", (None,)).fetchall()
    assert len(got) == 4, got
    for sql, code in [("SELECT id FROM products LIMIT %s", "2201W"), ("SELECT id FROM products OFFSET %s", "2201X")]:
        try:
            conn.execute(sql, (-1,))
            raise SystemExit(f"{sql} accepted -1")
        except psycopg.Error as e:
            assert e.sqlstate == code, (sql, e.sqlstate, e)
    # Parameter types as PostgreSQL infers them: from a cast, from LIMIT.
    for sql, oids in [(b"SELECT 1 + $1::int", [23]), (b"SELECT $1::text || 'x'", [25]), (b"SELECT id FROM products LIMIT $1 OFFSET $2", [20, 20])]:
        conn.pgconn.prepare(b"typed", sql)
        d = conn.pgconn.describe_prepared(b"typed")
        assert [d.param_type(i) for i in range(d.nparams)] == oids, (sql, [d.param_type(i) for i in range(d.nparams)])
        conn.pgconn.exec_(b"DEALLOCATE typed")
    assert conn.execute("SELECT 1 + %s::int", (5,)).fetchone() == (6,)
    # RETURNING: server-assigned keys with executemany(returning=True), as
    # SQLAlchemy and psycopg get them; UPDATE and DELETE returning rows.
    conn.execute("CREATE TABLE ret (id BIGSERIAL PRIMARY KEY, name TEXT, embedding VECTOR(2))")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ret (name, embedding) VALUES (%s, %s) RETURNING id, name",
            [("a", "[1,2]"), ("b", "[3,4]"), ("c", "[5,6]")],
            returning=True,
        )
        got = []
        while True:
            got.extend(cur.fetchall())
            if not cur.nextset():
                break
        assert got == [(1, "a"), (2, "b"), (3, "c")], got
        cur.execute("UPDATE ret SET name = name || %s WHERE id = %s RETURNING id, name, embedding", ("!", 2))
        assert cur.fetchall() == [(2, "b!", "[3,4]")] and cur.rowcount == 1
        cur.execute("DELETE FROM ret WHERE id > %s RETURNING id", (1,), prepare=True)
        assert sorted(cur.fetchall()) == [(2,), (3,)] and cur.rowcount == 2, cur.statusmessage
    # Upserts with parameters (they once ran without their values), with
    # RETURNING: the rows inserted or updated.
    conn.execute("CREATE TABLE tally (id BIGINT PRIMARY KEY, n INT)")
    upsert = "INSERT INTO tally VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET n = tally.n + excluded.n RETURNING id, n"
    got = [conn.execute(upsert, (1, 5), prepare=p).fetchall() for p in (False, True, True)]
    assert got == [[(1, 5)], [(1, 10)], [(1, 15)]], got
    nothing = "INSERT INTO tally VALUES (%s, %s) ON CONFLICT (id) DO NOTHING"
    assert [conn.execute(nothing, (2, 1)).rowcount for _ in range(2)] == [1, 0]
    # COPY out: a table, some columns with CSV options, a query; the
    # lines as PostgreSQL 15 writes them for the same rows.
    conn.execute("CREATE TABLE cpo (id BIGINT PRIMARY KEY, name TEXT, v VECTOR(2), ok BOOLEAN, x DOUBLE PRECISION)")
    conn.execute("INSERT INTO cpo VALUES (1, 'a\tb', '[1,2]', true, 1.5), (2, NULL, '[3,4.5]', false, NULL), (3, 'say \"hi\", \\ok', '[0,0]', NULL, -0.25)")
    def copied(sql):
        with conn.cursor() as cur:
            with cur.copy(sql) as copy:
                data = b"".join(bytes(chunk) for chunk in copy)
            return data.decode(), cur.rowcount
    got = copied("COPY cpo TO STDOUT")
    assert got == ("1\ta\\tb\t[1,2]\tt\t1.5\n2\t\\N\t[3,4.5]\tf\t\\N\n3\tsay \"hi\", \\\\ok\t[0,0]\t\\N\t-0.25\n", 3), got
    got = copied("COPY cpo (id, name) TO STDOUT WITH (FORMAT csv, HEADER)")
    assert got[0] == 'id,name\n1,a\tb\n2,\n3,"say ""hi"", \\ok"\n', got
    got = copied("COPY (SELECT id, x * 2 AS dbl FROM cpo WHERE id > 1 ORDER BY id) TO STDOUT WITH (FORMAT csv, DELIMITER ';', NULL 'NULL')")
    assert got == ("2;NULL\n3;-0.5\n", 2), got
    assert copied("COPY (SELECT id FROM cpo WHERE id > 100) TO STDOUT") == ("", 0)
    try:
        conn.execute("COPY cpo TO '/tmp/quiver-copy-out'")
        raise SystemExit("COPY TO a file accepted")
    except psycopg.errors.FeatureNotSupported:
        pass
    # Bit strings: parameters as text, NULL, and results in both formats.
    conn.execute("CREATE TABLE codes (id BIGINT PRIMARY KEY, b BIT(9))")
    with conn.cursor() as cur:
        cur.execute("INSERT INTO codes (id, b) VALUES (%s, %s)", (1, "101010101"), prepare=True)
        cur.execute("INSERT INTO codes (id, b) VALUES (%s, %s)", (2, None), prepare=True)
        cur.execute("UPDATE codes SET b = %s WHERE id = %s", ("000000111", 1), prepare=True)
        got = cur.execute("SELECT id, b FROM codes ORDER BY b <~> %s LIMIT 2", ("000000111",), prepare=True).fetchall()
        assert got == [(1, "000000111"), (2, None)], got
    with conn.cursor(binary=True) as cur:
        got = cur.execute("SELECT b FROM codes WHERE id = 1").fetchone()[0]
        # PostgreSQL's binary bit: length in bits (int4), then the bytes.
        assert bytes(got) == b"\x00\x00\x00\x09\x03\x80", got
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

# Binary COPY both ways, vectors in pgvector's binary form: what goes in
# comes out byte for byte, and psycopg's typed binary rows load.
import struct  # noqa: E402


def field(b):
    return struct.pack(">i", len(b)) + b


def vec(xs):
    return struct.pack(">HH", len(xs), 0) + struct.pack(f">{len(xs)}f", *xs)


with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default", autocommit=True) as conn:
    conn.execute("CREATE TABLE bin (id BIGINT PRIMARY KEY, name TEXT, v VECTOR(3), b BIT(4), blob BYTEA)")
    data = b"PGCOPY\n\xff\r\n\0" + struct.pack(">ii", 0, 0)
    data += struct.pack(">h", 5) + field(struct.pack(">q", 1)) + field(b"one") + field(vec([1, 2, 3.5])) \
        + field(struct.pack(">i", 4) + bytes([0b10100000])) + field(b"\x00\xff")
    data += struct.pack(">h", 5) + field(struct.pack(">q", 2)) + struct.pack(">i", -1) + field(vec([0, -1, 2])) \
        + struct.pack(">i", -1) + struct.pack(">i", -1)
    data += struct.pack(">h", -1)
    with conn.cursor() as cur:
        with cur.copy("COPY bin FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(data[:25])
            cp.write(data[25:])
    got = conn.execute("SELECT id, name, v::text, b::text, blob FROM bin ORDER BY id").fetchall()
    assert got == [(1, "one", "[1,2,3.5]", "1010", b"\x00\xff"), (2, None, "[0,-1,2]", None, None)], got
    out = bytearray()
    with conn.cursor() as cur:
        with cur.copy("COPY (SELECT * FROM bin ORDER BY id) TO STDOUT (FORMAT BINARY)") as cp:
            for chunk in cp:
                out += chunk
    assert bytes(out) == data, (bytes(out), data)
    with conn.cursor() as cur:
        with cur.copy("COPY bin (id, name) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["int8", "text"])
            for i in range(10, 20):
                cp.write_row((i, f"r{i}"))
    assert conn.execute("SELECT count(*) FROM bin").fetchone() == (12,)
    # A field count that is not the column count: 22P04, with the row.
    try:
        with conn.cursor() as cur:
            with cur.copy("COPY bin FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(b"PGCOPY\n\xff\r\n\0" + struct.pack(">ii", 0, 0) + struct.pack(">h", 1) + field(b"x"))
        raise AssertionError("a bad binary row was accepted")
    except psycopg.errors.BadCopyFileFormat as e:
        assert "row field count is 1, expected 5" in str(e), e
print("ok binary copy")

# Parameters wherever SEARCH takes a number: the query vector, LIMIT,
# OFFSET, and the WITH settings, in both protocols.
with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default", autocommit=True) as conn:
    conn.execute("CREATE TABLE sp (id BIGINT PRIMARY KEY, v VECTOR(2))")
    conn.execute("INSERT INTO sp VALUES (1, '[1,0]'), (2, '[0,1]'), (3, '[1,1]')")
    q = "SEARCH sp NEAREST v TO %s LIMIT %s OFFSET %s WITH (ef = %s, nprobe = %s, radius = %s) RETURN id"
    for prepare in [False, True]:
        got = conn.execute(q, ("[1,0]", 2, 1, 16, 4, 1.5), prepare=prepare).fetchall()
        assert got == [(3, 1.0), (2, 1.4142135623730951)], got
print("ok search parameters")

# A statement psycopg prepared keeps working after its collection is
# dropped and created again (it is planned anew, as PostgreSQL does).
with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default", autocommit=True) as conn:
    for i in range(8):
        conn.execute("DROP TABLE IF EXISTS again")
        conn.execute("CREATE TABLE again (id INT PRIMARY KEY)")
        conn.execute("INSERT INTO again VALUES (%s)", (i,), prepare=True)
        assert conn.execute("SELECT count(*) FROM again", prepare=True).fetchone() == (1,)
print("ok replanned")

# A correlated subquery run per row, with a parameter beside the outer
# column: a nearest neighbour per row (the query vector a parameter) and
# one by the outer row's own vector, in both protocols. PostgreSQL 15 +
# pgvector gave these rows.
with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default", autocommit=True) as conn:
    conn.execute("CREATE TABLE va (id INT PRIMARY KEY, k INT, v VECTOR(3))")
    conn.execute("CREATE TABLE vb (id INT PRIMARY KEY, k INT, v VECTOR(3))")
    conn.execute("INSERT INTO va VALUES (1, 1, '[1,0,0]'), (2, 5, '[0,1,0]'), (3, 9, '[0,0,1]')")
    conn.execute("INSERT INTO vb VALUES (10, 2, '[1,1,0]'), (20, 4, '[0,1,1]'), (30, 8, '[2,0,2]')")
    by_param = ("SELECT va.id, (SELECT vb.id FROM vb WHERE vb.k < va.k "
                "ORDER BY vb.v <-> %s::vector LIMIT 1) AS q FROM va ORDER BY 1")
    by_row = ("SELECT va.id, (SELECT vb.id FROM vb ORDER BY vb.v <-> va.v, vb.id LIMIT 1) AS nn, "
              "(SELECT vb.v <-> va.v FROM vb ORDER BY vb.v <-> va.v LIMIT 1) AS d FROM va ORDER BY 1")
    for prepare in [False, True]:
        got = conn.execute(by_param, ("[1,0,0]",), prepare=prepare).fetchall()
        assert got == [(1, None), (2, 10), (3, 10)], got
        got = conn.execute(by_row, prepare=prepare).fetchall()
        assert [(i, n) for i, n, _ in got] == [(1, 10), (2, 10), (3, 20)], got
        assert [round(d, 6) for _, _, d in got] == [1.0, 1.0, 1.0], got
print("ok correlated subqueries with parameters")

# A named (server-side) cursor, declared with a parameter: its columns are
# named as PostgreSQL names them, repeated names included.
with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default") as conn:
    with conn.transaction():
        with conn.cursor(name="named_cols") as cur:
            cur.execute("SELECT id, id, count(*) OVER () FROM va ORDER BY 1 LIMIT %s", (2,))
            assert cur.fetchall() == [(1, 1, 3), (2, 2, 3)]
            assert [d.name for d in cur.description] == ["id", "id", "count"], cur.description
print("ok named cursor columns")

# Integer result types as PostgreSQL 15 gives them (checked there): a
# literal that fits is int4 (23), a larger one int8 (20); arithmetic takes
# the wider operand; sum and count are int8; both protocols.
with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default", autocommit=True) as conn:
    cases = [
        ("SELECT 1", 23), ("SELECT 1 + 1", 23), ("SELECT 2147483648", 20),
        ("SELECT 3::int + 1", 23), ("SELECT 3::int * 2", 23), ("SELECT 2::smallint + 1", 23),
        ("SELECT 2::smallint + 2::smallint", 21), ("SELECT 1::int + 1::bigint", 20),
        ("SELECT 10 / 3", 23), ("SELECT 7 % 2", 23), ("SELECT -1", 23), ("SELECT abs(-1)", 23),
        ("SELECT sum(1)", 20), ("SELECT count(*)", 20), ("SELECT x FROM (SELECT 5 AS x) s", 23),
        ("SELECT -2147483648", 23), ("SELECT * FROM (SELECT 5 AS x, 'a' AS y) s", 23),
        ("SELECT 5 >> 1", 23), ("SELECT 3000000000 - 1", 20),
        ("SELECT id + 1 FROM va ORDER BY 1 LIMIT 1", 23), ("SELECT id::bigint + 1 FROM va LIMIT 1", 20),
    ]
    for prepare in (False, True):
        for q, oid in cases:
            cur = conn.execute(q, prepare=prepare)
            assert cur.description[0].type_code == oid, (q, prepare, cur.description[0].type_code)
            cur.fetchall()
    # int4 arithmetic that overflows is PostgreSQL's 22003.
    try:
        conn.execute("SELECT 2147483647 + 1")
        raise AssertionError("no error")
    except psycopg.errors.NumericValueOutOfRange as e:
        assert str(e).startswith("integer out of range"), e
print("ok integer result types")
