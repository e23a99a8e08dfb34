"""pgcli against quiver: `pgcli -c` runs a query and `\\d` (at its start
it sets the client's time zone, `SET TIME ZONE "Etc/UTC"`), and the
introspection its completion reads (pgcli's own PGExecute) gives what
PostgreSQL 15 + pgvector gives for the same table: the search path,
schemas, tables, columns with their type names, databases, functions with
their argument types and modes, data types."""
import os, subprocess, sys
import psycopg
from pgcli.pgexecute import PGExecute

port = int(sys.argv[1])
password = os.environ.get("PGPASSWORD")
with psycopg.connect(f"host=127.0.0.1 port={port} user=quiver dbname=default", autocommit=True) as c:
    c.execute("CREATE TABLE pgcli_docs (id bigint PRIMARY KEY, title text, embedding vector(3))")
    c.execute("INSERT INTO pgcli_docs VALUES (1, 'a', '[1,2,3]')")
# quiver implements the UTC time zone only: pgcli sets the local one.
env = dict(os.environ, TZ="Etc/UTC")
out = subprocess.run(
    ["pgcli", "-h", "127.0.0.1", "-p", str(port), "-U", "quiver", "default",
     "-c", "SELECT id, title, embedding FROM pgcli_docs", "-c", "\\d pgcli_docs"],
    capture_output=True, text=True, env=env, timeout=120)
assert out.returncode == 0, out.stderr
assert "| 1  | a     | [1,2,3]   |" in out.stdout, out.stdout
assert "| embedding | vector(3) |" in out.stdout, out.stdout
assert '"pgcli_docs_pkey" PRIMARY KEY, btree (id)' in out.stdout, out.stdout

e = PGExecute("default", "quiver", password, "127.0.0.1", port, "")
assert e.search_path() == ["pg_catalog", "public"], e.search_path()
assert "public" in list(e.schemata())
assert ("public", "pgcli_docs") in list(e.tables())
columns = [c[:4] for c in e.table_columns() if c[1] == "pgcli_docs"]
assert columns == [("public", "pgcli_docs", "id", "bigint"), ("public", "pgcli_docs", "title", "text"),
                   ("public", "pgcli_docs", "embedding", "vector")], columns
assert "default" in list(e.databases())
assert list(e.foreignkeys()) == []
# Function completion: argument types by name (`proargtypes::regtype[]`),
# output arguments with their modes and names, pgvector's functions
# marked as an extension's.
functions = {}
for f in e.functions():
    functions.setdefault((f.schema_name, f.func_name), []).append(f)
norm = functions[("public", "vector_norm")]
assert [(f.arg_types, f.return_type, f.is_aggregate, f.is_set_returning, f.is_extension) for f in norm] == \
    [(("vector",), "double precision", False, False, True)], norm
keywords = functions[("pg_catalog", "pg_get_keywords")][0]
assert keywords.arg_names == ("word", "catcode", "barelabel", "catdesc", "baredesc"), keywords
assert keywords.arg_types == ("text", '"char"', "boolean", "text", "text"), keywords
assert keywords.arg_modes == ("o",) * 5 and keywords.is_set_returning, keywords
series = sorted(f.arg_types for f in functions[("pg_catalog", "generate_series")])
assert ("integer", "integer") in series and ("bigint", "bigint", "bigint") in series, series
assert ("public", "vector") in list(e.datatypes())
print("pgcli ok")
