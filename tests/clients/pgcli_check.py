"""pgcli against quiver: `pgcli -c` runs a query and `\\d` (at its start
it sets the client's time zone, `SET TIME ZONE "Etc/UTC"`), and the
introspection its completion reads (pgcli's own PGExecute) gives what
PostgreSQL 15 + pgvector gives for the same table: the search path,
schemas, tables, columns with their type names, databases."""
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
print("pgcli ok")
