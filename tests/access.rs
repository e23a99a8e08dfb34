//! Access control against the real server: the privilege matrix,
//! escalation attempts, catalog visibility, persistence across restarts,
//! logins (SCRAM, wrong passwords, the per-address limit, bootstrap,
//! loopback trust) and TLS.

mod common;

use common::{PASSWORD, Server};
use tokio_postgres::SimpleQueryMessage;

async fn exec(c: &tokio_postgres::Client, sql: &str) -> Result<(), String> {
    c.simple_query(sql).await.map(|_| ()).map_err(|e| {
        e.code()
            .map(|c| c.code().to_string())
            .unwrap_or(e.to_string())
    })
}

/// First column of every row, as text.
async fn column(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect()
}

/// A fingerprint of collection `t`: rows, ids, tags.
async fn fingerprint(admin: &tokio_postgres::Client) -> String {
    column(
        admin,
        "SELECT count(*) || ':' || coalesce(sum(id), 0) || ':' || coalesce(string_agg(tag, ',' ORDER BY id), '') FROM t",
    )
    .await
    .join("")
}

async fn reset(admin: &tokio_postgres::Client) {
    exec(admin, "DROP ALIAS IF EXISTS t_alias").await.unwrap();
    exec(admin, "DROP COLLECTION IF EXISTS t_renamed")
        .await
        .unwrap();
    exec(admin, "DROP COLLECTION IF EXISTS t").await.unwrap();
    exec(admin, "DROP COLLECTION IF EXISTS made").await.unwrap();
    exec(admin, "DROP DATABASE IF EXISTS madedb").await.unwrap();
    exec(
        admin,
        "CREATE COLLECTION t (id bigint primary key, tag text, v vector(3))",
    )
    .await
    .unwrap();
    exec(
        admin,
        "INSERT INTO t VALUES (1, 'a', '[1,0,0]'), (2, 'b', '[0,1,0]'), (3, 'c', '[0,0,1]')",
    )
    .await
    .unwrap();
}

/// Statements of the matrix: (name, SQL, privilege it needs, whether it
/// needs CREATE on the server rather than on the database).
const STATEMENTS: &[(&str, &str, &str)] = &[
    ("select", "SELECT count(*) FROM t", "SELECT"),
    ("explain", "EXPLAIN SELECT * FROM t WHERE id = 1", "SELECT"),
    (
        "search",
        "SEARCH t NEAREST v TO '[1,0,0]' LIMIT 2",
        "SEARCH",
    ),
    (
        "knn-select",
        "SELECT id FROM t ORDER BY v <-> '[1,0,0]' LIMIT 2",
        "SEARCH",
    ),
    (
        "insert",
        "INSERT INTO t VALUES (10, 'x', '[1,1,1]')",
        "INSERT",
    ),
    ("copy", "COPY", "INSERT"),
    // Without a WHERE or a SET that reads the rows: those need SELECT too
    // (`update_and_delete_that_read_rows_need_select`).
    ("update", "UPDATE t SET tag = 'z'", "UPDATE"),
    ("delete", "DELETE FROM t", "DELETE"),
    ("flush", "FLUSH t", "MAINTAIN"),
    ("index", "CREATE INDEX t_v ON t USING hnsw (v)", "INDEX"),
    ("release", "RELEASE COLLECTION t", "MAINTAIN"),
    ("drop", "DROP COLLECTION t", "DROP"),
    ("alias", "CREATE ALIAS t_alias FOR t", "ALTER"),
    ("rename", "ALTER COLLECTION t RENAME TO t_renamed", "ALTER"),
    (
        "set-default",
        "ALTER TABLE t ALTER COLUMN tag SET DEFAULT 'z'",
        "ALTER",
    ),
    ("create", "CREATE COLLECTION made (id int)", "CREATE"),
    ("createdb", "CREATE DATABASE madedb", "CREATE-GLOBAL"),
];

const SCOPES: &[(&str, &str)] = &[
    ("coll", "ON COLLECTION t"),
    ("allcoll", "ON ALL COLLECTIONS IN DATABASE default"),
    ("db", "ON DATABASE default"),
    ("global", "ON ALL DATABASES"),
];

fn allowed(privilege: &str, scope: &str, needs: &str) -> bool {
    match needs {
        // SELECT covers searches.
        "SEARCH" => privilege == "SEARCH" || privilege == "SELECT",
        "CREATE" => privilege == "CREATE" && (scope == "db" || scope == "global"),
        "CREATE-GLOBAL" => privilege == "CREATE" && scope == "global",
        other => privilege == other,
    }
}

async fn run(c: &tokio_postgres::Client, name: &str, sql: &str) -> Result<(), String> {
    if name == "copy" {
        use futures::SinkExt;
        let sink = c
            .copy_in("COPY t (id, tag, v) FROM STDIN")
            .await
            .map_err(|e| {
                e.code()
                    .map(|c| c.code().to_string())
                    .unwrap_or(e.to_string())
            })?;
        let mut sink = Box::pin(sink);
        sink.send(bytes::Bytes::from_static(b"11\ty\t[1,2,3]\n"))
            .await
            .map_err(|e| e.to_string())?;
        return sink.as_mut().finish().await.map(|_| ()).map_err(|e| {
            e.code()
                .map(|c| c.code().to_string())
                .unwrap_or(e.to_string())
        });
    }
    exec(c, sql).await
}

/// A user holding only UPDATE (or DELETE) once read data through the row
/// count: `UPDATE secret SET ssn = ssn WHERE ssn LIKE '1%'` said UPDATE 1 or
/// UPDATE 0. As in PostgreSQL, reading the rows (WHERE, or SET over their
/// values) needs SELECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_delete_that_read_rows_need_select() {
    let server = Server::start();
    let admin = server.connect("default").await;
    exec(
        &admin,
        "CREATE COLLECTION secret (id bigint primary key, ssn text)",
    )
    .await
    .unwrap();
    exec(&admin, "INSERT INTO secret VALUES (1, '123'), (2, '456')")
        .await
        .unwrap();
    exec(&admin, "CREATE USER writer PASSWORD 'pw'")
        .await
        .unwrap();
    exec(
        &admin,
        "GRANT INSERT, UPDATE, DELETE ON COLLECTION secret TO writer",
    )
    .await
    .unwrap();
    let w = server.connect_as("writer", "pw", "default").await.unwrap();
    for sql in [
        // Upserts read the existing row through their conflict target,
        // SET and WHERE (PostgreSQL: permission denied for all of these).
        "INSERT INTO secret VALUES (1, '0') ON CONFLICT (id) DO UPDATE SET ssn = 'hit' WHERE secret.ssn LIKE '1%'",
        "INSERT INTO secret VALUES (1, '0') ON CONFLICT (id) DO UPDATE SET ssn = secret.ssn || 'x'",
        "INSERT INTO secret VALUES (1, '0') ON CONFLICT (id) DO UPDATE SET ssn = 'hit'",
        "INSERT INTO secret VALUES (1, '0') ON CONFLICT (id) DO NOTHING",
        "UPDATE secret SET ssn = ssn WHERE ssn LIKE '1%'",
        "UPDATE secret SET ssn = ssn WHERE ssn LIKE '5%'",
        "UPDATE secret SET ssn = ssn || 'x'",
        "UPDATE secret SET ssn = 'x' WHERE id = 1",
        "DELETE FROM secret WHERE ssn LIKE '1%'",
        "DELETE FROM secret WHERE id = 2",
    ] {
        assert_eq!(exec(&w, sql).await, Err("42501".to_string()), "{sql}");
    }
    assert_eq!(
        column(
            &admin,
            "SELECT string_agg(ssn, ',' ORDER BY id) FROM secret"
        )
        .await,
        ["123,456"]
    );
    // Writing without reading is the DML privilege alone (and, as in
    // PostgreSQL, ON CONFLICT DO NOTHING without a conflict target).
    exec(&w, "UPDATE secret SET ssn = 'hidden'").await.unwrap();
    exec(
        &w,
        "INSERT INTO secret VALUES (1, '0') ON CONFLICT DO NOTHING",
    )
    .await
    .unwrap();
    // With SELECT, as in PostgreSQL, the reading forms are allowed.
    exec(&admin, "GRANT SELECT ON COLLECTION secret TO writer")
        .await
        .unwrap();
    exec(&w, "UPDATE secret SET ssn = ssn || '!' WHERE id = 1")
        .await
        .unwrap();
    exec(&w, "DELETE FROM secret WHERE id = 2").await.unwrap();
    assert_eq!(
        column(
            &admin,
            "SELECT string_agg(ssn, ',' ORDER BY id) FROM secret"
        )
        .await,
        ["hidden!"]
    );
    exec(&w, "DELETE FROM secret").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privilege_matrix() {
    let server = Server::start();
    let admin = server.connect("default").await;
    let mut checked = 0;
    for privilege in [
        "SELECT", "SEARCH", "INSERT", "UPDATE", "DELETE", "INDEX", "MAINTAIN", "CREATE", "DROP",
        "ALTER",
    ] {
        for (scope_name, scope) in SCOPES {
            if privilege == "CREATE" && matches!(*scope_name, "coll" | "allcoll") {
                // CREATE does not apply to collections: refused with 0LP01.
                let err = exec(&admin, &format!("GRANT CREATE {scope} TO public")).await;
                assert_eq!(err, Err("0LP01".to_string()));
                continue;
            }
            let user = format!("u_{}_{scope_name}", privilege.to_lowercase());
            exec(&admin, &format!("CREATE USER {user} PASSWORD 'pw'"))
                .await
                .unwrap();
            let grant = format!("GRANT {privilege} {scope} TO {user}");
            for (name, sql, needs) in STATEMENTS {
                reset(&admin).await;
                exec(&admin, &grant).await.unwrap();
                let before = fingerprint(&admin).await;
                let c = server.connect_as(&user, "pw", "default").await.unwrap();
                let result = run(&c, name, sql).await;
                let expected = allowed(privilege, scope_name, needs);
                checked += 1;
                if expected {
                    assert_eq!(result, Ok(()), "{user}: {name} should be allowed");
                } else {
                    assert_eq!(
                        result,
                        Err("42501".to_string()),
                        "{user}: {name} should be denied"
                    );
                    if *name != "drop" {
                        assert_eq!(
                            fingerprint(&admin).await,
                            before,
                            "{user}: {name} changed data"
                        );
                    } else {
                        assert_eq!(column(&admin, "SELECT count(*) FROM t").await, ["3"]);
                    }
                    // The session stays usable. (Not checked after COPY:
                    // tokio-postgres gives up its connection when an
                    // extended-protocol COPY is refused at Execute, because
                    // the CopyFail + Sync it sends then gets a second
                    // ReadyForQuery it does not expect.)
                    if *name == "copy" {
                        continue;
                    }
                    let again = c.simple_query("SELECT 1").await;
                    assert!(again.is_ok(), "{user}: after {name}: {again:?}");
                }
            }
        }
    }
    eprintln!("privilege matrix: {checked} statements checked");
    assert!(checked > 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_attempts_fail() {
    let server = Server::start();
    let admin = server.connect("default").await;
    reset(&admin).await;
    for sql in [
        "CREATE COLLECTION other (id bigint, secret text)",
        "INSERT INTO other VALUES (1, 'hidden')",
        "CREATE DATABASE shop",
        "CREATE USER alice PASSWORD 'alice-pw'",
        "CREATE USER bob PASSWORD 'bob-pw'",
        "CREATE USER carol PASSWORD 'carol-pw'",
        "CREATE ROLE reader",
        "GRANT SELECT ON COLLECTION t TO reader",
        "GRANT reader TO alice",
        "GRANT SELECT ON COLLECTION t TO carol WITH GRANT OPTION",
    ] {
        exec(&admin, sql).await.unwrap();
    }
    let shop = server.connect("shop").await;
    exec(&shop, "CREATE COLLECTION s (id bigint, secret text)")
        .await
        .unwrap();
    exec(&shop, "INSERT INTO s VALUES (1, 'shop-secret')")
        .await
        .unwrap();
    exec(&admin, "GRANT SELECT ON COLLECTION shop.s TO alice")
        .await
        .unwrap();
    let alice = server
        .connect_as("alice", "alice-pw", "default")
        .await
        .unwrap();
    let denied = Err("42501".to_string());
    // Granting oneself a role or a privilege one lacks.
    assert_eq!(exec(&alice, "GRANT admin TO alice").await, denied);
    assert_eq!(
        exec(&alice, "GRANT INSERT ON COLLECTION t TO alice").await,
        denied
    );
    assert_eq!(
        exec(&alice, "GRANT SELECT ON COLLECTION other TO alice").await,
        denied
    );
    // Holding a privilege without the grant option is not enough to pass it on.
    assert_eq!(
        exec(&alice, "GRANT SELECT ON COLLECTION t TO bob").await,
        denied
    );
    assert_eq!(
        exec(&alice, "GRANT ALL ON ALL DATABASES TO alice").await,
        denied
    );
    assert_eq!(
        exec(&alice, "CREATE USER mallory PASSWORD 'x'").await,
        denied
    );
    assert_eq!(exec(&alice, "CREATE ROLE sneaky").await, denied);
    // With the grant option: that privilege only, to others.
    let carol = server
        .connect_as("carol", "carol-pw", "default")
        .await
        .unwrap();
    exec(&carol, "GRANT SELECT ON COLLECTION t TO bob")
        .await
        .unwrap();
    assert_eq!(
        exec(&carol, "GRANT DELETE ON COLLECTION t TO bob").await,
        denied
    );
    let bob = server.connect_as("bob", "bob-pw", "default").await.unwrap();
    assert_eq!(column(&bob, "SELECT count(*) FROM t").await, ["3"]);
    // Passwords: one's own, never another's.
    assert_eq!(
        exec(&alice, "ALTER USER bob PASSWORD 'owned'").await,
        denied
    );
    assert_eq!(
        exec(&alice, "ALTER USER quiver PASSWORD 'owned'").await,
        denied
    );
    exec(&alice, "ALTER USER alice PASSWORD 'alice-pw2'")
        .await
        .unwrap();
    assert!(server.connect_as("bob", "owned", "default").await.is_err());
    assert!(
        server
            .connect_as("alice", "alice-pw2", "default")
            .await
            .is_ok()
    );
    // Dropping the superuser: refused even to admins.
    assert_eq!(exec(&alice, "DROP USER quiver").await, denied);
    exec(&admin, "GRANT admin TO bob").await.unwrap();
    assert_eq!(exec(&bob, "DROP USER quiver").await, denied);
    assert_eq!(exec(&admin, "DROP USER quiver").await, denied);
    exec(&admin, "REVOKE admin FROM bob").await.unwrap();
    assert_eq!(exec(&bob, "CREATE ROLE x").await, denied);
    // Reading a collection without privilege through a join or a subquery.
    assert_eq!(
        exec(
            &alice,
            "SELECT t.id, o.secret FROM t JOIN other o ON t.id = o.id"
        )
        .await,
        denied
    );
    assert_eq!(
        exec(
            &alice,
            "SELECT id FROM t WHERE id IN (SELECT id FROM other)"
        )
        .await,
        denied
    );
    assert_eq!(
        exec(
            &alice,
            "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM other WHERE secret = 'hidden')"
        )
        .await,
        denied
    );
    assert_eq!(
        exec(
            &alice,
            "INSERT INTO t (id, tag) SELECT id + 100, secret FROM other"
        )
        .await,
        denied
    );
    // A correlated subquery run once per row checks its collections too.
    for sql in [
        "SELECT id, (SELECT secret FROM other WHERE other.id = t.id) FROM t",
        "SELECT id FROM t WHERE (SELECT count(*) FROM other WHERE other.id < t.id) > 0",
    ] {
        assert_eq!(exec(&alice, sql).await, denied, "{sql}");
    }
    assert_eq!(exec(&alice, "EXPLAIN SELECT * FROM other").await, denied);
    // Another database's collection is out of reach from this one, even
    // with a grant on it (a session sees its own database only).
    let cross = exec(
        &alice,
        "SELECT t.id FROM t JOIN shop.public.s s ON t.id = s.id",
    )
    .await;
    assert!(cross.is_err(), "{cross:?}");
    let cross = exec(
        &alice,
        "SELECT id FROM t WHERE id IN (SELECT id FROM shop.public.s)",
    )
    .await;
    assert!(cross.is_err(), "{cross:?}");
    // Verifiers are nowhere to be read: pg_roles' password column reads
    // `********` for every role, as PostgreSQL's does.
    assert_eq!(exec(&alice, "SELECT * FROM pg_authid").await, denied);
    assert_eq!(
        column(&alice, "SELECT coalesce(rolpassword, 'NULL') FROM pg_roles").await,
        vec!["********"; 7]
    );
    assert!(
        column(&alice, "SELECT passwd FROM pg_user")
            .await
            .iter()
            .all(|p| p == "********")
    );
    let users = alice.simple_query("SHOW USERS").await.unwrap();
    let text = format!("{users:?}");
    assert!(!text.contains("SCRAM") && !text.contains("alice-pw"));
    assert_eq!(exec(&alice, "SHOW GRANTS FOR bob").await, denied);
    assert_eq!(column(&alice, "SHOW GRANTS FOR reader").await, ["reader"]);
    // The catalog keeps no password in the clear.
    for entry in std::fs::read_dir(server.dir.join("catalog")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for secret in [PASSWORD, "alice-pw", "bob-pw", "carol-pw", "owned"] {
            assert!(!text.contains(secret), "catalog holds a password");
        }
    }
    // Nothing changed, and every session still works.
    assert_eq!(fingerprint(&admin).await, "3:6:a,b,c");
    assert_eq!(column(&admin, "SELECT count(*) FROM other").await, ["1"]);
    assert_eq!(column(&alice, "SELECT count(*) FROM t").await, ["3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_views_show_only_visible_collections() {
    let server = Server::start();
    let admin = server.connect("default").await;
    for sql in [
        "CREATE COLLECTION seen (id int)",
        "CREATE COLLECTION hidden (id int)",
        "CREATE USER viewer PASSWORD 'pw'",
        "GRANT SEARCH ON COLLECTION seen TO viewer",
    ] {
        exec(&admin, sql).await.unwrap();
    }
    let viewer = server.connect_as("viewer", "pw", "default").await.unwrap();
    let q =
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1";
    assert_eq!(column(&viewer, q).await, ["seen"]);
    assert_eq!(column(&admin, q).await, ["hidden", "seen"]);
    assert_eq!(
        column(
            &viewer,
            "SELECT relname FROM pg_catalog.pg_class WHERE relname IN ('seen', 'hidden')"
        )
        .await,
        ["seen"]
    );
    assert_eq!(column(&viewer, "SHOW COLLECTIONS").await, ["seen"]);
    assert_eq!(exec(&viewer, "DESCRIBE hidden").await, Err("42501".into()));
    assert_eq!(
        exec(&viewer, "SHOW SEGMENTS FROM hidden").await,
        Err("42501".into())
    );
    // A later grant shows at once, in the same session.
    exec(&admin, "GRANT SELECT ON COLLECTION hidden TO viewer")
        .await
        .unwrap();
    assert_eq!(column(&viewer, q).await, ["hidden", "seen"]);
    // The owner of a collection holds every privilege on it.
    exec(&admin, "GRANT CREATE ON DATABASE default TO viewer")
        .await
        .unwrap();
    exec(&viewer, "CREATE COLLECTION own (id int)")
        .await
        .unwrap();
    exec(&viewer, "INSERT INTO own VALUES (1)").await.unwrap();
    assert_eq!(column(&viewer, "SELECT count(*) FROM own").await, ["1"]);
    exec(&viewer, "GRANT SELECT ON COLLECTION own TO public")
        .await
        .unwrap();
    exec(&viewer, "DROP COLLECTION own").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_and_grants_survive_restart_and_crash() {
    let mut server = Server::start();
    let admin = server.connect("default").await;
    reset(&admin).await;
    for sql in [
        "CREATE USER alice PASSWORD 'alice-pw'",
        "CREATE ROLE writer",
        "GRANT INSERT, SELECT ON COLLECTION t TO writer",
        "GRANT writer TO alice",
        "GRANT SEARCH ON ALL COLLECTIONS IN DATABASE default TO public",
    ] {
        exec(&admin, sql).await.unwrap();
    }
    drop(admin);
    let expected_grants = vec!["public", "writer", "writer"];
    for crash in [false, true] {
        if crash {
            server.kill_and_restart();
        } else {
            server.stop_and_restart();
        }
        let alice = server
            .connect_as("alice", "alice-pw", "default")
            .await
            .unwrap();
        assert!(
            server
                .connect_as("alice", "wrong", "default")
                .await
                .is_err()
        );
        exec(&alice, "INSERT INTO t VALUES (50, 'p', '[1,1,1]')")
            .await
            .unwrap();
        assert_eq!(exec(&alice, "DELETE FROM t").await, Err("42501".into()));
        let admin = server.connect("default").await;
        assert_eq!(
            column(&admin, "SHOW ROLES").await,
            ["admin", "public", "writer"]
        );
        let mut grants = column(&admin, "SHOW GRANTS FOR alice").await;
        grants.sort();
        assert_eq!(grants, expected_grants);
        exec(&admin, "DELETE FROM t WHERE id = 50").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_need_the_right_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quiver.toml");
    std::fs::write(
        &config,
        "[auth]\nmax_failed_logins = 3\nfailed_login_interval_ms = 600000\n",
    )
    .unwrap();
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);
    let admin = server.connect("default").await;
    exec(&admin, "CREATE USER alice PASSWORD 'alice-right-pw'")
        .await
        .unwrap();
    // Wrong password and unknown user: 28P01, the same message.
    let wrong = server
        .connect_as("alice", "wrong", "default")
        .await
        .unwrap_err();
    let unknown = server
        .connect_as("nobody", "wrong", "default")
        .await
        .unwrap_err();
    let db = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .map(|d| (d.code().code().to_string(), d.message().to_string()))
    };
    assert_eq!(db(&wrong).unwrap().0, "28P01");
    assert_eq!(db(&unknown).unwrap().0, "28P01");
    assert_eq!(
        db(&wrong).unwrap().1.replace("alice", "X"),
        db(&unknown).unwrap().1.replace("nobody", "X")
    );
    // No password at all.
    let none = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=alice dbname=default",
            server.port
        ),
        tokio_postgres::NoTls,
    )
    .await;
    assert!(none.is_err());
    // Third failure uses up the limit of this address: even the right
    // password is refused now, at once.
    let _ = server.connect_as("alice", "wrong-again", "default").await;
    let limited = server
        .connect_as("alice", "alice-right-pw", "default")
        .await
        .unwrap_err();
    let (code, message) = db(&limited).unwrap();
    assert_eq!(code, "28000");
    assert!(message.contains("too many failed logins"), "{message}");
    // Sessions already open keep working.
    assert_eq!(column(&admin, "SELECT 1").await, ["1"]);
    // Another address is not affected (127.0.0.2 is loopback too).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{}", server.port).parse().unwrap())
        .await
        .unwrap();
    let config: tokio_postgres::Config = server
        .conn_string_as("alice", "alice-right-pw", "default")
        .parse()
        .unwrap();
    let (client, connection) = config
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .expect("another address logs in");
    tokio::spawn(connection);
    assert_eq!(column(&client, "SELECT 1").await, ["1"]);
    assert!(server.logs_soon("login failed"));
    for line in server.log.lock().unwrap().iter() {
        assert!(
            !line.contains("alice-right-pw") && !line.contains(PASSWORD),
            "{line}"
        );
    }
}

#[test]
fn psql_and_psycopg_log_in_with_scram() {
    let server = Server::start();
    let psql = |password: &str| {
        std::process::Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
            .arg(server.port.to_string())
            .args(["-U", "quiver", "-d", "default", "-c", "SELECT 40 + 2"])
            .env("PGPASSWORD", password)
            .output()
            .expect("psql")
    };
    let ok = psql(PASSWORD);
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "42");
    let bad = psql("nope");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"));
    let py = |password: &str| {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import psycopg\ntry:\n    c = psycopg.connect('host=127.0.0.1 port={} user=quiver dbname=default password={password}')\n    print(c.execute('SELECT 6 * 7').fetchone()[0])\nexcept psycopg.OperationalError as e:\n    print('refused', e)",
                server.port
            ))
            .output()
            .expect("python3")
    };
    assert_eq!(String::from_utf8_lossy(&py(PASSWORD).stdout).trim(), "42");
    assert!(String::from_utf8_lossy(&py("nope").stdout).contains("password authentication failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_generates_a_password_unless_given() {
    let server = Server::start_with_env(&[], &[("QUIVER_PASSWORD", None)]);
    let file = server.dir.join("initial-password");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 20);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    for guess in ["", "quiver", "postgres", "password", PASSWORD] {
        assert!(
            server.connect_as("quiver", guess, "default").await.is_err(),
            "{guess}"
        );
    }
    let c = server
        .connect_as("quiver", &password, "default")
        .await
        .unwrap();
    assert_eq!(column(&c, "SELECT 1").await, ["1"]);
    // Loopback trust, when turned on, admits existing users without a password.
    let trusting = Server::start_with_env(&[], &[("QUIVER_LOOPBACK_TRUST", Some("true"))]);
    let (c, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=quiver dbname=default",
            trusting.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("trusted loopback login");
    tokio::spawn(connection);
    assert_eq!(column(&c, "SELECT 1").await, ["1"]);
    assert!(
        tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=ghost dbname=default",
                trusting.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .is_err()
    );
}

/// A self-signed certificate for `localhost`, made with openssl.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// An address of this machine that is not loopback, if it has one.
fn outside_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn tls_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(tmp.path());
    let server = Server::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--require-tls",
        "true",
        "--listen",
        "0.0.0.0:0",
    ]);
    let psql = |host: &str, sslmode: &str| {
        std::process::Command::new("psql")
            .args(["-X", "-A", "-t", "-c", "SELECT 7"])
            .arg(format!(
                "host={host} port={} user=quiver dbname=default sslmode={sslmode}",
                server.port
            ))
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("psql")
    };
    let out = psql("127.0.0.1", "require");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");
    assert!(server.logs_soon("tls=true"));
    // psycopg too.
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import psycopg\nc = psycopg.connect('host=127.0.0.1 port={} user=quiver dbname=default sslmode=require password={PASSWORD}')\nprint(c.pgconn.ssl_in_use, c.execute('SELECT 8').fetchone()[0])",
            server.port
        ))
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "True 8",
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    // Loopback may still connect in the clear.
    assert!(psql("127.0.0.1", "disable").status.success());
    // From another address, cleartext is refused and TLS accepted.
    match outside_address() {
        Some(ip) => {
            let clear = psql(&ip.to_string(), "disable");
            assert!(!clear.status.success());
            assert!(String::from_utf8_lossy(&clear.stderr).contains("must use TLS"));
            assert!(psql(&ip.to_string(), "require").status.success());
        }
        None => eprintln!("no non-loopback address: require_tls checked on loopback only"),
    }
}

/// The login limiter checked before an attempt and counted its failure
/// after it: 40 wrong passwords sent at once let 13 through instead of 10.
/// An attempt now holds a token while it runs: exactly the limit fail with
/// 28P01, the others are refused with 28000, and a right password after
/// the limiter's interval logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_at_once_stay_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quiver.toml");
    std::fs::write(
        &config,
        "[auth]\nmax_failed_logins = 10\nfailed_login_interval_ms = 600000\n",
    )
    .unwrap();
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);
    let admin = server.connect("default").await;
    // Right passwords made at once (a pool opening, more than the limit)
    // all log in: each gives its token back.
    let mut pool = Vec::new();
    for _ in 0..20 {
        let conn = server.conn_string("default");
        pool.push(tokio::spawn(async move {
            tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }));
    }
    for p in pool {
        p.await.unwrap().expect("a right password was refused");
    }
    let mut tries = Vec::new();
    for _ in 0..40 {
        let conn = server.conn_string_as("quiver", "wrong", "default");
        tries.push(tokio::spawn(async move {
            let e = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .err()
                .expect("a wrong password logged in");
            e.as_db_error().map(|d| d.code().code().to_string())
        }));
    }
    let mut codes = std::collections::HashMap::new();
    for t in tries {
        *codes.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        codes.get(&Some("28P01".to_string())),
        Some(&10),
        "{codes:?}"
    );
    assert_eq!(
        codes.get(&Some("28000".to_string())),
        Some(&30),
        "{codes:?}"
    );
    assert_eq!(column(&admin, "SELECT 1").await, ["1"]);
}

/// User and role names were not bounded (a 300-character user was
/// created); they are limited like other names: 42622 past 63 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_role_names_are_bounded() {
    let server = Server::start();
    let admin = server.connect("default").await;
    let long = "u".repeat(64);
    for sql in [
        format!("CREATE USER {long} PASSWORD 'pw'"),
        format!("CREATE ROLE {long}"),
    ] {
        assert_eq!(exec(&admin, &sql).await, Err("42622".to_string()), "{sql}");
    }
    let fits = "u".repeat(63);
    exec(&admin, &format!("CREATE USER {fits} PASSWORD 'pw'"))
        .await
        .unwrap();
    exec(&admin, &format!("CREATE ROLE r{}", "r".repeat(62)))
        .await
        .unwrap();
}
