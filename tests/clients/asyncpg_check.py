"""asyncpg against quiver: a parameter cast to int described as int4
(asyncpg sends binary by the described type), conn.transaction() that
rolls back and commits, copy_records_to_table (binary COPY) with vectors
through a binary codec, LIMIT $1."""
import asyncio
import struct
import sys

import asyncpg

port = int(sys.argv[1])


def encode(v):
    return struct.pack(">HH", len(v), 0) + struct.pack(f">{len(v)}f", *v)


def decode(b):
    d = struct.unpack_from(">H", b)[0]
    return list(struct.unpack_from(f">{d}f", b, 4))


async def main():
    c = await asyncpg.connect(host="127.0.0.1", port=port, user="quiver", database="default")
    assert await c.fetchval("SELECT 1 + $1::int", 41) == 42
    # quiver's vector type is in pg_catalog (pgvector's register_vector
    # looks in public by default).
    await c.set_type_codec("vector", encoder=encode, decoder=decode, format="binary", schema="pg_catalog")
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
    assert [(r["id"], r["name"], r["v"]) for r in rows] == [(1, "a", [1.0, 0.0]), (3, None, [1.0, 1.0])], rows
    await c.close()


asyncio.run(main())
print("ok")
