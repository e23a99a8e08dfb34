"""psycopg 3 transactions against quiver, as applications use them:
conn.transaction() that commits and that raises, nested blocks
(savepoints) recovering from an error, the status byte psycopg reads,
vector searches that see the block's own rows, executemany with
returning=True and LIMIT %s in a block, REPEATABLE READ, and concurrent
increments in transactions losing nothing."""
import sys
import threading

import psycopg
from psycopg.pq import TransactionStatus

port = int(sys.argv[1])
dsn = f"host=127.0.0.1 port={port} user=quiver dbname=default"


def count(conn, table):
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b:
    a.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT, embedding VECTOR(2))")
    a.execute("CREATE TABLE log (id BIGINT PRIMARY KEY, what TEXT)")

    # Commit: seen by others only afterwards; the status byte says T inside.
    with a.transaction():
        a.execute("INSERT INTO items VALUES (1, 'one', '[1,0]'), (2, 'two', '[0,1]')")
        a.execute("INSERT INTO log VALUES (1, 'added two')")
        assert a.info.transaction_status == TransactionStatus.INTRANS
        assert count(a, "items") == 2
        assert count(b, "items") == 0, "uncommitted rows leaked"
        # A search inside the block finds the block's own rows.
        got = a.execute(
            "SELECT id FROM items ORDER BY embedding <-> %s::vector LIMIT %s", ("[0.9,0.1]", 1)
        ).fetchall()
        assert got == [(1,)], got
    assert a.info.transaction_status == TransactionStatus.IDLE
    assert count(b, "items") == 2 and count(b, "log") == 1

    # An exception rolls everything back.
    try:
        with a.transaction():
            a.execute("INSERT INTO items VALUES (3, 'three', '[1,1]')")
            a.execute("UPDATE items SET name = 'uno' WHERE id = 1")
            a.execute("DELETE FROM log")
            raise RuntimeError("application error")
    except RuntimeError:
        pass
    assert count(b, "items") == 2 and count(b, "log") == 1
    assert b.execute("SELECT name FROM items WHERE id = 1").fetchone() == ("one",)

    # A nested block (a savepoint) that fails is undone alone; the outer
    # block goes on and commits.
    with a.transaction():
        a.execute("INSERT INTO log VALUES (2, 'outer')")
        try:
            with a.transaction():
                a.execute("INSERT INTO log VALUES (3, 'inner')")
                a.execute("SELECT 1 / 0")
        except psycopg.errors.DivisionByZero:
            pass
        assert a.info.transaction_status == TransactionStatus.INTRANS, a.info.transaction_status
        a.execute("INSERT INTO log VALUES (4, 'after')")
    ids = [r[0] for r in b.execute("SELECT id FROM log ORDER BY id").fetchall()]
    assert ids == [1, 2, 4], ids

    # A failed block: the status byte is E and everything is refused.
    with psycopg.connect(dsn) as c:
        c.execute("SELECT 1")
        try:
            c.execute("SELECT * FROM no_such_table")
        except psycopg.errors.UndefinedTable:
            pass
        assert c.info.transaction_status == TransactionStatus.INERROR
        try:
            c.execute("SELECT 1")
            raise AssertionError("a failed block ran a statement")
        except psycopg.errors.InFailedSqlTransaction:
            pass
        c.rollback()
        assert c.info.transaction_status == TransactionStatus.IDLE
        assert c.execute("SELECT 2").fetchone() == (2,)

    # executemany(returning=True) in a block, then rolled back.
    with psycopg.connect(dsn) as c:
        cur = c.cursor()
        cur.executemany(
            "INSERT INTO log (id, what) VALUES (%s, %s) RETURNING id, what",
            [(10, "x"), (11, "y")],
            returning=True,
        )
        got = []
        while True:
            got.append(cur.fetchone())
            if not cur.nextset():
                break
        assert got == [(10, "x"), (11, "y")], got
        assert count(b, "log") == 3
        c.rollback()
    assert count(b, "log") == 3

    # REPEATABLE READ: one snapshot; a row changed since it gives 40001.
    with psycopg.connect(dsn) as c:
        c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        assert c.execute("SELECT name FROM items WHERE id = 2").fetchone() == ("two",)
        b.execute("UPDATE items SET name = 'dos' WHERE id = 2")
        assert c.execute("SELECT name FROM items WHERE id = 2").fetchone() == ("two",)
        try:
            c.execute("UPDATE items SET name = 'zwei' WHERE id = 2")
            raise AssertionError("a lost update")
        except psycopg.errors.SerializationFailure:
            pass
        c.rollback()
    assert b.execute("SELECT name FROM items WHERE id = 2").fetchone() == ("dos",)

    # Concurrent increments in transactions: UPDATE n = n + 1 and upserts
    # of the same rows, in two collections per transaction.
    a.execute("CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT)")
    a.execute("INSERT INTO counters VALUES (1, 0), (2, 0)")
    committed = []
    failures = []

    def worker():
        with psycopg.connect(dsn, autocommit=True) as c:
            done = 0
            for _ in range(20):
                try:
                    with c.transaction():
                        c.execute("UPDATE counters SET n = n + 1 WHERE id = 1")
                        c.execute(
                            "INSERT INTO counters VALUES (2, 1) "
                            "ON CONFLICT (id) DO UPDATE SET n = counters.n + 1"
                        )
                        c.execute("UPDATE items SET name = name WHERE id = 1")
                    done += 1
                except psycopg.errors.DeadlockDetected:
                    pass
                except Exception as e:  # noqa: BLE001
                    failures.append(repr(e))
            committed.append(done)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    total = sum(committed)
    got = b.execute("SELECT id, n FROM counters ORDER BY id").fetchall()
    assert got == [(1, total), (2, total)], (got, total)
    assert total == 120, total

    # A wait for a lock ends with statement_timeout (57014), not the holder.
    with psycopg.connect(dsn) as holder:
        holder.execute("UPDATE counters SET n = n WHERE id = 1")
        b.execute("SET statement_timeout = '300ms'")
        try:
            b.execute("UPDATE counters SET n = n + 1000 WHERE id = 1")
            raise AssertionError("the wait outlived statement_timeout")
        except psycopg.errors.QueryCanceled:
            pass
        b.execute("SET statement_timeout = 0")
        holder.rollback()
    assert b.execute("SELECT n FROM counters WHERE id = 1").fetchone() == (total,)

    # SELECT ... FOR UPDATE, then UPDATE from what it read: no lost update.
    def read_then_write():
        with psycopg.connect(dsn) as c:
            for _ in range(15):
                n = c.execute("SELECT n FROM counters WHERE id = 2 FOR UPDATE").fetchone()[0]
                c.execute("UPDATE counters SET n = %s WHERE id = 2", (n + 1,))
                c.commit()

    threads = [threading.Thread(target=read_then_write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.execute("SELECT n FROM counters WHERE id = 2").fetchone() == (total + 60,)

    # TRUNCATE in a block removes the rows it saw, not a row another session
    # committed after it.
    with psycopg.connect(dsn) as c:
        c.execute("TRUNCATE log")
        b.execute("INSERT INTO log VALUES (99, 'committed meanwhile')")
        c.commit()
    assert b.execute("SELECT id FROM log").fetchall() == [(99,)]

    # CREATE TABLE in a block (psycopg's default): gone on rollback, and
    # when the client leaves mid-block; kept on commit.
    with psycopg.connect(dsn) as c:
        c.execute("CREATE TABLE scratch (id BIGINT PRIMARY KEY)")
        c.execute("INSERT INTO scratch VALUES (1)")
        c.rollback()
        c.execute("CREATE TABLE kept (id BIGINT PRIMARY KEY)")
        c.commit()
    c = psycopg.connect(dsn)
    c.execute("CREATE TABLE orphan (id BIGINT)")
    c.close()
    for table in ["scratch", "orphan"]:
        for _ in range(50):
            try:
                b.execute(f"SELECT 1 FROM {table}")
            except psycopg.errors.UndefinedTable:
                break
            threading.Event().wait(0.1)
        else:
            raise AssertionError(f"{table} outlived its block")
    assert b.execute("SELECT count(*) FROM kept").fetchone() == (0,)

    # A named (server-side) cursor walks 20,000 rows in batches.
    b.execute("INSERT INTO kept SELECT i FROM generate_series(1, 20000) i")
    with psycopg.connect(dsn) as c:
        with c.cursor(name="walk") as cur:
            cur.itersize = 1000
            cur.execute("SELECT id FROM kept ORDER BY id")
            assert [d.name for d in cur.description] == ["id"]
            seen = sum(1 for _ in cur)
        assert seen == 20000, seen
        # With parameters (bound in the extended protocol).
        with c.cursor(name="near") as cur:
            cur.execute("SELECT id FROM kept WHERE id > %s ORDER BY id LIMIT %s", (19990, 5))
            assert cur.fetchall() == [(i,) for i in range(19991, 19996)]

print("ok")
