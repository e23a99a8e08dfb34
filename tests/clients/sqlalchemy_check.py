"""SQLAlchemy 2 over psycopg and psycopg2 against quiver: connect (it
parses version() and asks SHOW TRANSACTION ISOLATION LEVEL), create_all,
a session that commits and one that rolls back, RETURNING, limit(); the
ORM with pgvector.sqlalchemy and inspect()."""
import sys
from sqlalchemy import create_engine, text, Column, BigInteger, String, select, func
from sqlalchemy.orm import declarative_base, Session
port = int(sys.argv[1])
for driver in ["psycopg", "psycopg2"]:
    engine = create_engine(f"postgresql+{driver}://quiver@127.0.0.1:{port}/default")
    Base = declarative_base()
    class Item(Base):
        __tablename__ = f"sa_items_{driver}"
        id = Column(BigInteger, primary_key=True)
        name = Column(String)
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Item(id=1, name="kept")); s.commit()
        s.add(Item(id=2, name="gone")); s.flush()
        assert s.scalar(select(func.count()).select_from(Item)) == 2
        s.rollback()
        assert s.scalar(select(func.count()).select_from(Item)) == 1
        rows = s.execute(select(Item.id, Item.name).order_by(Item.id).limit(5)).all()
        assert [tuple(r) for r in rows] == [(1, "kept")], rows
    with engine.connect() as c:
        r = c.execute(text(f"INSERT INTO sa_items_{driver} (id, name) VALUES (:i, :n) RETURNING id"), {"i": 3, "n": "r"})
        assert r.scalar() == 3
        c.rollback()
        assert c.execute(text(f"SELECT count(*) FROM sa_items_{driver}")).scalar() == 1
    print(driver, "ok")

# The ORM with pgvector.sqlalchemy: create_all of a model with a vector
# column, a server default and an HNSW index; inspect() reflects what it
# reflects from PostgreSQL 15 + pgvector 0.8 (the expected values below
# were read there); ORM inserts and a k-NN query with limit().
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from pgvector.sqlalchemy import Vector
for driver in ["psycopg", "psycopg2"]:
    engine = create_engine(f"postgresql+{driver}://quiver@127.0.0.1:{port}/default")
    table = f"sa_docs_{driver}"
    class VBase(DeclarativeBase):
        pass
    class Doc(VBase):
        __tablename__ = table
        id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
        title: Mapped[str] = mapped_column(sa.Text, nullable=False)
        score = mapped_column(sa.Float, server_default=sa.text("0.5"))
        embedding = mapped_column(Vector(3))
        __table_args__ = (
            sa.Index(f"{table}_embedding_idx", "embedding", postgresql_using="hnsw",
                     postgresql_with={"m": 8}, postgresql_ops={"embedding": "vector_l2_ops"}),
        )
    VBase.metadata.create_all(engine)
    insp = sa.inspect(engine)
    assert insp.has_table(table) and table in insp.get_table_names()
    cols = [(c["name"], str(c["type"]), c["nullable"], c["default"]) for c in insp.get_columns(table)]
    assert cols == [("id", "BIGINT", False, f"nextval('{table}_id_seq'::regclass)"),
                    ("title", "TEXT", False, None), ("score", "DOUBLE PRECISION", True, "0.5"),
                    ("embedding", "VECTOR(3)", True, None)], cols
    pk = insp.get_pk_constraint(table)
    assert pk["constrained_columns"] == ["id"] and pk["name"] == f"{table}_pkey", pk
    indexes = insp.get_indexes(table)
    assert indexes == [{"name": f"{table}_embedding_idx", "unique": False, "column_names": ["embedding"],
                        "include_columns": [], "dialect_options": {
                            "postgresql_ops": {"embedding": "vector_l2_ops"}, "postgresql_with": {"m": "8"},
                            "postgresql_using": "hnsw", "postgresql_include": []}}], indexes
    assert insp.get_foreign_keys(table) == [] and insp.get_unique_constraints(table) == []
    with Session(engine) as s:
        s.add_all([Doc(id=1, title="a", embedding=[1, 0, 0]), Doc(id=2, title="b", embedding=[0, 1, 0]),
                   Doc(id=3, title="c", embedding=[0, 0, 1])])
        s.commit()
        near = s.scalars(sa.select(Doc).order_by(Doc.embedding.l2_distance([0.9, 0.1, 0])).limit(2)).all()
        assert [d.title for d in near] == ["a", "b"], near
        assert [list(d.embedding) for d in near] == [[1, 0, 0], [0, 1, 0]]
        assert [d.score for d in near] == [0.5, 0.5]
    reflected = sa.Table(table, sa.MetaData(), autoload_with=engine)
    assert [(c.name, str(c.type)) for c in reflected.columns] == [
        ("id", "BIGINT"), ("title", "TEXT"), ("score", "DOUBLE PRECISION"), ("embedding", "VECTOR(3)")]
    VBase.metadata.drop_all(engine)
    assert not sa.inspect(engine).has_table(table)
    print(driver, "pgvector ORM and inspect ok")
