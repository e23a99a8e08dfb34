// node-postgres (pg) and pgvector-node against a server speaking
// PostgreSQL: registerTypes, vector parameters, k-NN with `LIMIT $2`,
// RETURNING, named prepared statements, transactions (rollback, commit,
// an error inside a block), SQLSTATEs drivers map to exceptions, a pool
// of concurrent clients, and a result of 5,000 rows in array mode.
// Usage: node node_pg_check.mjs HOST PORT USER DATABASE (password in
// PGPASSWORD). Written against PostgreSQL 15 + pgvector 0.8 first.
import assert from 'node:assert/strict';
import pg from 'pg';
import pgvector from 'pgvector/pg';

const [host, port, user, database] = process.argv.slice(2);
const config = { host, port: Number(port), user, database, password: process.env.PGPASSWORD };

async function expectCode(client, sql, params, code) {
  try {
    await client.query(sql, params);
  } catch (e) {
    assert.equal(e.code, code, `${sql}: ${e.code} ${e.message}`);
    return e;
  }
  assert.fail(`${sql}: no error (expected ${code})`);
}

const client = new pg.Client(config);
await client.connect();
await client.query('CREATE EXTENSION IF NOT EXISTS vector');
await pgvector.registerTypes(client);
await client.query('DROP TABLE IF EXISTS node_items');
await client.query(
  'CREATE TABLE node_items (id BIGINT PRIMARY KEY, name TEXT, price DOUBLE PRECISION, embedding VECTOR(3))');

// Parameters: pgvector's text form, numbers, NULL; RETURNING.
const rows = [
  [1, 'red shoe', 10.5, [1, 0, 0]],
  [2, 'blue shoe', 20, [0, 1, 0]],
  [3, 'green hat', null, [0, 0, 2]],
  [4, 'red hat', 7.25, [0.9, 0.1, 0]],
];
for (const [id, name, price, v] of rows) {
  const r = await client.query(
    'INSERT INTO node_items (id, name, price, embedding) VALUES ($1, $2, $3, $4) RETURNING id, name',
    [id, name, price, pgvector.toSql(v)]);
  assert.equal(r.rowCount, 1);
  assert.deepEqual(r.rows, [{ id: String(id), name }]);
}

// pgvector's own example query, with LIMIT as a parameter; the result's
// vectors come back as arrays through the registered type parser.
let r = await client.query(
  'SELECT id, name, embedding, embedding <-> $1 AS distance FROM node_items ORDER BY embedding <-> $1 LIMIT $2',
  [pgvector.toSql([1, 0, 0]), 3]);
assert.deepEqual(r.rows.map((x) => x.id), ['1', '4', '2']);
assert.deepEqual(r.rows[0].embedding, [1, 0, 0]);
assert.deepEqual(r.rows[1].embedding, [0.9, 0.1, 0]);
assert.equal(r.rows[0].distance, 0);
assert.ok(Math.abs(r.rows[1].distance - 0.14142135623730948) < 1e-6, String(r.rows[1].distance));
assert.deepEqual(r.fields.map((f) => f.name), ['id', 'name', 'embedding', 'distance']);

// Other distances, a filter with a parameter, OFFSET $n.
r = await client.query(
  'SELECT id FROM node_items WHERE price > $2 ORDER BY embedding <=> $1 LIMIT 2 OFFSET $3',
  [pgvector.toSql([0, 1, 0]), 5, 1]);
assert.deepEqual(r.rows.map((x) => x.id), ['4', '1']);
r = await client.query(
  'SELECT id FROM node_items WHERE price > $2 ORDER BY embedding <=> $1, id LIMIT 3',
  [pgvector.toSql([0, 1, 0]), 5]);
assert.deepEqual(r.rows.map((x) => x.id), ['2', '4', '1']);
r = await client.query('SELECT id FROM node_items ORDER BY embedding <#> $1 LIMIT 1', [pgvector.toSql([0, 0, 1])]);
assert.deepEqual(r.rows, [{ id: '3' }]);

// A named prepared statement, executed with different parameters.
for (const [q, want] of [[[0, 1, 0], '2'], [[0, 0, 1], '3']]) {
  r = await client.query({
    name: 'nearest',
    text: 'SELECT id FROM node_items ORDER BY embedding <-> $1 LIMIT $2',
    values: [pgvector.toSql(q), 1],
  });
  assert.deepEqual(r.rows, [{ id: want }]);
}

// Aggregates and types as node-postgres parses them.
r = await client.query('SELECT count(*) AS n, sum(price) AS total, avg(price) AS mean FROM node_items');
assert.deepEqual(r.rows[0], { n: '4', total: 37.75, mean: 12.583333333333334 });
r = await client.query("SELECT $1::int + 1 AS a, $2::text AS b, $3::bool AS c", [41, 'x', true]);
assert.deepEqual(r.rows[0], { a: 42, b: 'x', c: true });

// UPDATE and DELETE with RETURNING.
r = await client.query('UPDATE node_items SET price = price * 2 WHERE id = $1 RETURNING id, price', [4]);
assert.deepEqual(r.rows, [{ id: '4', price: 14.5 }]);
r = await client.query('DELETE FROM node_items WHERE id = $1 RETURNING name', [3]);
assert.deepEqual(r.rows, [{ name: 'green hat' }]);
assert.equal(r.command, 'DELETE');

// Transactions: rollback, commit, an error inside a block (25P02 until
// ROLLBACK), a savepoint.
await client.query('BEGIN');
await client.query('INSERT INTO node_items (id, name, embedding) VALUES ($1, $2, $3)', [10, 'x', pgvector.toSql([1, 1, 1])]);
await client.query('ROLLBACK');
r = await client.query('SELECT count(*)::int AS n FROM node_items WHERE id = 10');
assert.equal(r.rows[0].n, 0);
await client.query('BEGIN');
await client.query('INSERT INTO node_items (id, name, embedding) VALUES ($1, $2, $3)', [10, 'x', pgvector.toSql([1, 1, 1])]);
await client.query('SAVEPOINT s');
await expectCode(client, 'INSERT INTO node_items (id, name, embedding) VALUES ($1, $2, $3)', [10, 'again', pgvector.toSql([1, 1, 1])], '23505');
await expectCode(client, 'SELECT 1', [], '25P02');
await client.query('ROLLBACK TO SAVEPOINT s');
await client.query('COMMIT');
r = await client.query('SELECT name FROM node_items WHERE id = 10');
assert.deepEqual(r.rows, [{ name: 'x' }]);

// SQLSTATEs as PostgreSQL + pgvector give them.
await expectCode(client, 'INSERT INTO node_items (id, embedding) VALUES ($1, $2)', [20, pgvector.toSql([1, 2])], '22000');
await expectCode(client, 'INSERT INTO node_items (id, name) VALUES ($1, $2)', [1, 'dup'], '23505');
await expectCode(client, 'SELECT * FROM no_such_table', [], '42P01');
await expectCode(client, 'SELECT no_such_column FROM node_items', [], '42703');
await expectCode(client, 'SELECT 1/0', [], '22012');
await expectCode(client, "SELECT 'abc'::int", [], '22P02');
await expectCode(client, 'SELEC 1', [], '42601');

// Many rows in one result, in the array row mode.
await client.query('DROP TABLE IF EXISTS node_many');
await client.query('CREATE TABLE node_many (id BIGINT PRIMARY KEY, v VECTOR(2))');
await client.query(
  "INSERT INTO node_many SELECT i, ('[' || i || ',1]')::vector FROM generate_series(1, 5000) AS t(i)");
r = await client.query({ text: 'SELECT id, v FROM node_many ORDER BY id', rowMode: 'array' });
assert.equal(r.rows.length, 5000);
assert.deepEqual(r.rows[4999], ['5000', [5000, 1]]);

// A pool: concurrent searches on several connections.
const pool = new pg.Pool({ ...config, max: 4 });
const results = await Promise.all(
  Array.from({ length: 16 }, (_, i) =>
    pool.query('SELECT id FROM node_many ORDER BY v <-> $1 LIMIT 1', [pgvector.toSql([i + 1, 1])])));
assert.deepEqual(results.map((x) => x.rows[0].id), Array.from({ length: 16 }, (_, i) => String(i + 1)));
await pool.end();

await client.query('DROP TABLE node_items');
await client.query('DROP TABLE node_many');
await client.end();
console.log('ok');
