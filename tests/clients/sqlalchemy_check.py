"""SQLAlchemy 2 over psycopg and psycopg2 against quiver: connect (it
parses version() and asks SHOW TRANSACTION ISOLATION LEVEL), create_all,
a session that commits and one that rolls back, RETURNING, limit()."""
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
