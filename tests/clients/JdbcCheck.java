// pgjdbc (Debian's libpostgresql-jdbc-java) against quiver: batched
// prepared INSERTs report their row counts, `LIMIT ?` with setInt, a
// vector read with getObject (a PGobject of type vector, as from
// PostgreSQL + pgvector), result columns' nullability and base table
// (ResultSetMetaData), rollback(), and DatabaseMetaData's getTables
// getColumns, getPrimaryKeys and getIndexInfo giving what PostgreSQL gives
// for the same table.
// Run as `java -cp postgresql.jar JdbcCheck.java <port>`.
import java.sql.*;
import java.util.*;

public class JdbcCheck {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static List<String> rows(ResultSet rs, String... cols) throws SQLException {
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            List<String> r = new ArrayList<>();
            for (String c : cols) r.add(rs.getString(c));
            out.add(String.join(",", r));
        }
        return out;
    }

    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/default";
        Connection c = DriverManager.getConnection(url, "quiver", System.getenv("PGPASSWORD"));
        Statement s = c.createStatement();
        s.execute("CREATE TABLE jdbc_docs (id bigint PRIMARY KEY, title text NOT NULL, embedding vector(3))");
        s.execute("CREATE INDEX jdbc_docs_embedding_idx ON jdbc_docs USING hnsw (embedding vector_l2_ops)");

        PreparedStatement insert = c.prepareStatement("INSERT INTO jdbc_docs VALUES (?, ?, ?::vector)");
        for (int i = 1; i <= 3; i++) {
            insert.setLong(1, i);
            insert.setString(2, "t" + i);
            insert.setString(3, "[" + i + ",0,0]");
            insert.addBatch();
        }
        int[] counts = insert.executeBatch();
        check(Arrays.equals(counts, new int[] {1, 1, 1}), "batch counts " + Arrays.toString(counts));

        PreparedStatement knn = c.prepareStatement(
            "SELECT id, embedding FROM jdbc_docs ORDER BY embedding <-> ?::vector LIMIT ?");
        knn.setString(1, "[1,0,0]");
        knn.setInt(2, 2);
        ResultSet rs = knn.executeQuery();
        List<String> near = new ArrayList<>();
        while (rs.next()) {
            Object v = rs.getObject(2);
            check(v instanceof org.postgresql.util.PGobject, "vector class " + v.getClass());
            check(((org.postgresql.util.PGobject) v).getType().equals("vector"), "vector type");
            near.add(rs.getLong(1) + ":" + v);
        }
        check(near.equals(List.of("1:[1,0,0]", "2:[2,0,0]")), "knn " + near);

        // Result columns name their table and column (RowDescription), so
        // ResultSetMetaData can tell which may be NULL; a computed column
        // cannot say.
        org.postgresql.PGResultSetMetaData rmd = (org.postgresql.PGResultSetMetaData) s.executeQuery(
            "SELECT d.id, title AS t, embedding, id + 1 AS n FROM jdbc_docs d WHERE id > 0 ORDER BY id").getMetaData();
        List<String> meta = new ArrayList<>();
        for (int i = 1; i <= ((ResultSetMetaData) rmd).getColumnCount(); i++) {
            ResultSetMetaData m = (ResultSetMetaData) rmd;
            meta.add(m.getColumnLabel(i) + ":" + m.isNullable(i) + ":" + rmd.getBaseTableName(i) + ":"
                + rmd.getBaseColumnName(i) + ":" + m.getTableName(i));
        }
        check(meta.equals(List.of("id:0:jdbc_docs:id:jdbc_docs", "t:0:jdbc_docs:title:jdbc_docs",
            "embedding:1:jdbc_docs:embedding:jdbc_docs", "n:2:::")), "result metadata " + meta);

        c.setAutoCommit(false);
        c.createStatement().execute("INSERT INTO jdbc_docs VALUES (9, 'x', '[9,9,9]')");
        c.rollback();
        c.setAutoCommit(true);
        rs = c.createStatement().executeQuery("SELECT count(*) FROM jdbc_docs");
        rs.next();
        check(rs.getLong(1) == 3, "rows after rollback " + rs.getLong(1));

        DatabaseMetaData md = c.getMetaData();
        check(md.getDatabaseProductName().equals("PostgreSQL"), md.getDatabaseProductName());
        List<String> tables = rows(md.getTables(null, "public", "jdbc_docs", new String[] {"TABLE"}),
            "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE");
        check(tables.equals(List.of("public,jdbc_docs,TABLE")), "getTables " + tables);
        List<String> columns = rows(md.getColumns(null, "public", "jdbc_docs", null),
            "COLUMN_NAME", "DATA_TYPE", "TYPE_NAME", "COLUMN_SIZE", "NULLABLE", "IS_NULLABLE", "ORDINAL_POSITION");
        check(columns.equals(List.of(
            "id,-5,int8,19,0,NO,1",
            "title,12,text,2147483647,0,NO,2",
            "embedding,1111,vector,2147483647,1,YES,3")), "getColumns " + columns);
        List<String> keys = rows(md.getPrimaryKeys(null, "public", "jdbc_docs"),
            "COLUMN_NAME", "KEY_SEQ", "PK_NAME");
        check(keys.equals(List.of("id,1,jdbc_docs_pkey")), "getPrimaryKeys " + keys);
        List<String> indexes = rows(md.getIndexInfo(null, "public", "jdbc_docs", false, false),
            "INDEX_NAME", "NON_UNIQUE", "COLUMN_NAME", "ORDINAL_POSITION", "TYPE");
        check(indexes.equals(List.of(
            "jdbc_docs_pkey,f,id,1,3",
            "jdbc_docs_embedding_idx,t,embedding,1,3")), "getIndexInfo " + indexes);
        s.execute("DROP TABLE jdbc_docs");
        System.out.println("pgjdbc ok");
    }
}
