"""asyncpg against quiver: a parameter cast to int described as int4
(asyncpg sends binary by the described type), pgvector's register_vector
(which finds the vector type in schema public, as pgvector creates it),
conn.transaction() that rolls back and commits, copy_records_to_table
(binary COPY) with vectors, LIMIT $1, a pool whose connections all have
the codec."""
import asyncio
import uuid
import sys

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

port = int(sys.argv[1])


async def main():
    c = await asyncpg.connect(host="127.0.0.1", port=port, user="quiver", database="default")
    assert await c.fetchval("SELECT 1 + $1::int", 41) == 42
    await register_vector(c)
    await c.execute("CREATE TABLE ap (id BIGINT PRIMARY KEY, name TEXT, v VECTOR(2))")
    try:
        async with c.transaction():
            await c.execute("INSERT INTO ap VALUES (1, 'a', '[1,0]')")
            raise RuntimeError("application error")
    except RuntimeError:
        pass
    assert await c.fetchval("SELECT count(*) FROM ap") == 0
    async with c.transaction():
        await c.execute("INSERT INTO ap VALUES (1, 'a', '[1,0]')")
    result = await c.copy_records_to_table(
        "ap", records=[(2, "b", [0.0, 1.0]), (3, None, [1.0, 1.0])], columns=["id", "name", "v"]
    )
    assert result == "COPY 2", result
    rows = await c.fetch("SELECT id, name, v FROM ap ORDER BY v <-> $1 LIMIT $2", [0.9, 0.1], 2)
    got = [(r["id"], r["name"], r["v"].to_list()) for r in rows]
    assert got == [(1, "a", [1.0, 0.0]), (3, None, [1.0, 1.0])], got
    await c.close()

    # A pool: every connection gets the codec at init.
    pool = await asyncpg.create_pool(
        host="127.0.0.1", port=port, user="quiver", database="default",
        min_size=2, max_size=2, init=register_vector,
    )
    async with pool.acquire() as p:
        await p.execute("INSERT INTO ap VALUES ($1, $2, $3)", 4, "d", np.array([0.5, 0.5], dtype=np.float32))
    got = await pool.fetchval("SELECT v FROM ap WHERE id = 4")
    assert np.array_equal(got.to_numpy(), np.array([0.5, 0.5], dtype=np.float32)), got
    await pool.close()

    # uuid (binary, as asyncpg sends and reads it) and json (a str, as
    # asyncpg gives json without a codec).
    c = await asyncpg.connect(host="127.0.0.1", port=port, user="quiver", database="default")
    await c.execute("DROP TABLE IF EXISTS au")
    await c.execute("CREATE TABLE au (id uuid PRIMARY KEY, doc json)")
    key = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    await c.execute("INSERT INTO au VALUES ($1, $2)", key, '{"k": [1, 2]}')
    await c.execute("INSERT INTO au VALUES ($1, $2)", "B0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", None)
    row = await c.fetchrow("SELECT id, doc, doc -> 'k' AS k FROM au WHERE id = $1", key)
    assert (row["id"], row["doc"], row["k"]) == (key, '{"k": [1, 2]}', "[1, 2]"), row
    got = await c.fetchval("SELECT id FROM au WHERE id = 'b0eebc999c0b4ef8bb6d6bb9bd380a11'")
    assert got == uuid.UUID("b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), got
    try:
        await c.execute("INSERT INTO au VALUES ($1, NULL)", "not-a-uuid")
        raise AssertionError("a malformed uuid was accepted")
    except (asyncpg.exceptions.DataError, asyncpg.exceptions.InvalidTextRepresentationError):
        pass
    await c.execute("DROP TABLE au")
    await c.close()


asyncio.run(main())
print("ok")
