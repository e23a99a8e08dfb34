"""langchain-postgres's PGVectorStore against a server, as its documentation
uses it: PGEngine over psycopg 3 (async SQLAlchemy), a table made by
init_vectorstore_table with metadata columns, add_texts with ids and
metadata, similarity search with langchain's filter language (on metadata
columns and on the JSON metadata), scores, MMR, get_by_ids, an HNSW index
applied and checked, and delete. The embedding is a deterministic toy
function (no model download).

Run: PGPASSWORD=... python3 langchain_check.py PORT [USER [DBNAME]]
on 127.0.0.1. scripts/setup.sh --test installs langchain-postgres in a
directory of its own (it pins pgvector-python below 0.4, which the other
client tests use), found here as it finds it.
Written against PostgreSQL 15 + pgvector 0.8 first.
"""

import math
import os
import sys
import uuid

sys.path.insert(0, os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
    "quiver-test-python", "langchain"))

from langchain_core.embeddings import Embeddings
from langchain_postgres import Column, PGEngine, PGVectorStore
from langchain_postgres.v2.indexes import HNSWIndex

port = sys.argv[1]
user = sys.argv[2] if len(sys.argv) > 2 else "quiver"
dbname = sys.argv[3] if len(sys.argv) > 3 else "default"
password = os.environ.get("PGPASSWORD", "")
URL = f"postgresql+psycopg://{user}:{password}@127.0.0.1:{port}/{dbname}"
TABLE = "lc_docs"
DIM = 8


class ToyEmbeddings(Embeddings):
    """Letter counts of the text, normalized: similar words, similar vectors."""

    def embed_documents(self, texts):
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text):
        v = [0.0] * DIM
        for ch in text.lower():
            if ch.isalpha():
                v[(ord(ch) - ord("a")) % DIM] += 1.0
        n = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / n for x in v]


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


engine = PGEngine.from_connection_string(url=URL)
engine.init_vectorstore_table(
    table_name=TABLE,
    vector_size=DIM,
    metadata_columns=[
        Column("topic", "TEXT"),
        Column("year", "INTEGER"),
    ],
    overwrite_existing=True,
)
store = PGVectorStore.create_sync(
    engine=engine,
    table_name=TABLE,
    embedding_service=ToyEmbeddings(),
    metadata_columns=["topic", "year"],
)

texts = [
    "apples and pears",
    "apple pie recipe",
    "vector databases",
    "postgres wire protocol",
    "pear tart",
    "approximate nearest neighbours",
]
metas = [
    {"topic": "fruit", "year": 2020, "source": "farm"},
    {"topic": "fruit", "year": 2022, "source": "kitchen"},
    {"topic": "db", "year": 2023, "source": "paper"},
    {"topic": "db", "year": 2019, "source": "docs"},
    {"topic": "fruit", "year": 2024, "source": "kitchen"},
    {"topic": "db", "year": 2021, "source": "paper"},
]
ids = [str(uuid.UUID(int=i + 1)) for i in range(len(texts))]
added = store.add_texts(texts, metadatas=metas, ids=ids)
check(added == ids, "add_texts returns the ids")

docs = store.similarity_search("apple", k=2)
check([d.page_content for d in docs] == ["apple pie recipe", "apples and pears"],
      "similarity_search finds the nearest texts")
check(docs[0].metadata["source"] == "kitchen" and docs[0].metadata["year"] == 2022,
      "documents come back with their metadata (columns and JSON)")

docs = store.similarity_search("apple", k=10, filter={"topic": "db"})
check({d.page_content for d in docs} == {"vector databases", "postgres wire protocol",
                                         "approximate nearest neighbours"},
      "filter on a metadata column ($eq)")

docs = store.similarity_search("apple", k=10,
                               filter={"$and": [{"topic": {"$eq": "fruit"}},
                                                {"year": {"$gte": 2022}}]})
check({d.page_content for d in docs} == {"apple pie recipe", "pear tart"},
      "filter with $and and $gte")

docs = store.similarity_search("apple", k=10, filter={"year": {"$in": [2019, 2020]}})
check({d.page_content for d in docs} == {"apples and pears", "postgres wire protocol"},
      "filter with $in")

docs = store.similarity_search("apple", k=10, filter={"year": {"$between": [2021, 2023]}})
check({d.page_content for d in docs} == {"apple pie recipe", "vector databases",
                                         "approximate nearest neighbours"},
      "filter with $between")

docs = store.similarity_search("apple", k=10,
                               filter={"$or": [{"topic": {"$ne": "fruit"}},
                                               {"year": {"$lt": 2021}}]})
check(len(docs) == 4, "filter with $or, $ne and $lt")

docs = store.similarity_search("apple", k=10, filter={"source": "paper"})
check({d.page_content for d in docs} == {"vector databases", "approximate nearest neighbours"},
      "filter on a key of the JSON metadata")

docs = store.similarity_search("apple", k=10, filter={"topic": {"$like": "fr%"}})
check(len(docs) == 3, "filter with $like")

scored = store.similarity_search_with_score("pear tart", k=1)
check(scored[0][0].page_content == "pear tart" and abs(scored[0][1]) < 1e-6,
      "similarity_search_with_score gives distance 0 for the same text")

mmr = store.max_marginal_relevance_search("apple", k=2, fetch_k=6)
check(len(mmr) == 2 and mmr[0].page_content == "apple pie recipe",
      "max_marginal_relevance_search")

got = store.get_by_ids([ids[2], ids[3]])
check(sorted(d.page_content for d in got) == ["postgres wire protocol", "vector databases"],
      "get_by_ids")

store.apply_vector_index(HNSWIndex())
check(store.is_valid_index(), "HNSW index applied and found in pg_indexes")
docs = store.similarity_search("apple", k=2)
check([d.page_content for d in docs] == ["apple pie recipe", "apples and pears"],
      "similarity_search with the index")

store.add_texts(["apple pie recipe, revised"], metadatas=[{"topic": "fruit", "year": 2025}],
                ids=[ids[1]])
got = store.get_by_ids([ids[1]])
check(got[0].page_content == "apple pie recipe, revised" and got[0].metadata["year"] == 2025,
      "add_texts with an existing id replaces it (upsert)")

store.delete(ids=[ids[0], ids[4]])
docs = store.similarity_search("pear", k=10, filter={"topic": "fruit"})
check([d.page_content for d in docs] == ["apple pie recipe, revised"], "delete by ids")

store.drop_vector_index()
check(not store.is_valid_index(), "drop_vector_index")
engine.drop_table(TABLE)
print("langchain-postgres ok")
