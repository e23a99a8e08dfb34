//! Transaction blocks: BEGIN, COMMIT, ROLLBACK, savepoints, SET
//! TRANSACTION, and what a block allows, as PostgreSQL answers them. The
//! transactions themselves are storage's (`storage/txn.rs`).

use quiver_common::sqlstate::{self, SqlState};
use quiver_sql::statement::{IsolationLevel, Statement, TransactionKind, TransactionModes};
use quiver_storage::Isolation;

use super::*;

fn refused(code: SqlState, message: impl Into<String>) -> QueryError {
    QueryError::Transaction {
        message: message.into(),
        code,
    }
}

fn done(tag: &'static str) -> Output {
    Output::Transaction { tag, warning: None }
}

fn warned(tag: &'static str, code: SqlState, message: &str) -> Output {
    Output::Transaction {
        tag,
        warning: Some((code, message.to_string())),
    }
}

/// The level a transaction runs at for the level asked for.
fn level(asked: IsolationLevel) -> Result<Isolation, QueryError> {
    match asked {
        // PostgreSQL's READ UNCOMMITTED is READ COMMITTED too.
        IsolationLevel::ReadUncommitted | IsolationLevel::ReadCommitted => {
            Ok(Isolation::ReadCommitted)
        }
        IsolationLevel::RepeatableRead => Ok(Isolation::RepeatableRead),
        IsolationLevel::Serializable => Err(QueryError::Unsupported(
            "SERIALIZABLE isolation is not supported: quiver offers READ COMMITTED and REPEATABLE READ (a snapshot for the whole transaction)".into(),
        )),
    }
}

/// Statements that change the schema, users or privileges and could not be
/// rolled back: refused inside a transaction block, as PostgreSQL refuses
/// CREATE DATABASE. (CREATE TABLE and CREATE INDEX run in a block: a
/// rollback drops what they made, `ddl_undo.rs`.)
fn non_transactional(statement: &Statement) -> Option<&'static str> {
    use quiver_sql::statement::{AccessStatement as A, IndexStatement as I};
    Some(match statement {
        Statement::CreateDatabase { .. } => "CREATE DATABASE",
        Statement::DropDatabase { .. } => "DROP DATABASE",
        Statement::Index(I::Reindex { .. } | I::ReindexCollection { .. }) => "REINDEX",
        Statement::Access(A::ShowUsers | A::ShowRoles | A::ShowGrants { .. }) => return None,
        Statement::Access(_) => "a user, role or privilege statement",
        Statement::Alias(quiver_sql::statement::AliasStatement::Show { .. }) => return None,
        Statement::Alias(_) => "an alias statement",
        Statement::RenameCollection { .. } => "ALTER COLLECTION ... RENAME TO",
        Statement::AlterColumnDefault { .. } => "ALTER COLUMN ... SET / DROP DEFAULT",
        Statement::Query(q) => match q.as_ref() {
            ast::Statement::CreateTable(_) => "CREATE TABLE",
            ast::Statement::Drop { .. } => "DROP",
            ast::Statement::AlterTable(_) => "ALTER TABLE",
            ast::Statement::CreateView(_) => "CREATE VIEW",
            ast::Statement::CreateSchema { .. } => "CREATE SCHEMA",
            _ => return None,
        },
        Statement::Tuned { inner, .. } => return non_transactional(inner),
        _ => return None,
    })
}

/// Statements that write rows (refused in a READ ONLY transaction).
fn writes(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::Upsert { .. } => Some("INSERT"),
        Statement::CopyFrom(_) => Some("COPY FROM"),
        Statement::Query(q) => match q.as_ref() {
            ast::Statement::Insert(_) => Some("INSERT"),
            ast::Statement::Update { .. } => Some("UPDATE"),
            ast::Statement::Delete(_) => Some("DELETE"),
            ast::Statement::Truncate { .. } => Some("TRUNCATE"),
            _ => None,
        },
        _ => None,
    }
}

impl Engine {
    /// Whether the statements of one simple-protocol query string can run
    /// as one implicit transaction, as PostgreSQL runs them: none controls
    /// transactions, starts a COPY, could not be rolled back, acts on
    /// committed data only (FLUSH, COMPACT, LOAD, RELEASE), or is a DROP
    /// TABLE (a block's drops wait for COMMIT: a script that drops and
    /// creates a table again needs each to commit on its own).
    pub fn implicit_block(statements: &[Statement]) -> bool {
        statements.len() > 1
            && statements.iter().all(|s| {
                !matches!(
                    s,
                    Statement::Transaction(_)
                        | Statement::CopyFrom(_)
                        | Statement::DeclareCursor { .. }
                        | Statement::Fetch { .. }
                        | Statement::CloseCursor { .. }
                        | Statement::Maintain { .. }
                        | Statement::DropCollection { .. }
                ) && non_transactional(s).is_none()
            })
    }

    /// What a statement must pass before it runs, given the session's
    /// transaction block: 25P02 in a failed block, 25001 for statements
    /// that cannot run in one, 25006 for writes in a READ ONLY one. A
    /// REPEATABLE READ transaction takes its snapshot at its first
    /// statement.
    pub(crate) fn admit(&self, session: &Session, statement: &Statement) -> Result<(), QueryError> {
        if matches!(statement, Statement::Transaction(_)) {
            return Ok(());
        }
        let block = session.block();
        if block.failed() {
            return Err(refused(
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        let Some(tx) = session.transaction() else {
            // default_transaction_read_only holds for a statement alone too.
            if let Some(what) = writes(statement)
                && matches!(
                    session.var("default_transaction_read_only").as_deref(),
                    Some("on" | "true")
                )
            {
                return Err(refused(
                    sqlstate::READ_ONLY_SQL_TRANSACTION,
                    format!("cannot execute {what} in a read-only transaction"),
                ));
            }
            return Ok(());
        };
        if let Some(what) = non_transactional(statement) {
            return Err(refused(
                sqlstate::ACTIVE_SQL_TRANSACTION,
                format!(
                    "{what} cannot run inside a transaction block: quiver cannot roll it back; COMMIT or ROLLBACK first"
                ),
            ));
        }
        if session.read_only()
            && let Some(what) = writes(statement)
        {
            return Err(refused(
                sqlstate::READ_ONLY_SQL_TRANSACTION,
                format!("cannot execute {what} in a read-only transaction"),
            ));
        }
        // SET and SHOW take no snapshot (SET TRANSACTION may follow them).
        if !matches!(
            statement,
            Statement::Set { .. } | Statement::Show { .. } | Statement::Reset { .. }
        ) {
            tx.statement_starts(&self.storage.all_collections());
        }
        Ok(())
    }

    /// `SELECT ... FOR UPDATE / FOR SHARE` inside a block: the collections
    /// it reads are locked until the block ends (collection locks, as
    /// UPDATE takes), so a read-then-write loses no update; the query then
    /// reads what was committed before it. Outside a block, as in
    /// PostgreSQL, the lock would end with the statement: nothing to do.
    pub(crate) async fn lock_for_update(
        &self,
        session: &Session,
        statement: &Statement,
    ) -> Result<(), QueryError> {
        let Statement::Query(q) = statement else {
            return Ok(());
        };
        let ast::Statement::Query(query) = q.as_ref() else {
            return Ok(());
        };
        if query.locks.is_empty() {
            return Ok(());
        }
        if let Some(l) = query.locks.iter().find(|l| l.nonblock.is_some()) {
            return Err(QueryError::Unsupported(format!(
                "{l} is not supported: quiver's locks are per collection, and a lock wait ends only at the holder's end, a cancel or statement_timeout"
            )));
        }
        let Some(tx) = session.transaction() else {
            return Ok(());
        };
        let mut tables = Vec::new();
        if let ast::SetExpr::Select(select) = query.body.as_ref() {
            for from in &select.from {
                for factor in
                    std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation))
                {
                    if let ast::TableFactor::Table { name, .. } = factor {
                        tables.push(name.clone());
                    }
                }
            }
        }
        for name in tables {
            let (db, coll) = ddl::resolve_name(&name, &session.database())?;
            if let Some(def) = self.catalog.collection(&db, &coll) {
                let data = self.storage.open_collection(&def)?;
                tx.lock(&data).await?;
            }
        }
        Ok(())
    }

    /// Run a transaction-control statement.
    pub(crate) async fn transaction(
        &self,
        session: &Session,
        kind: TransactionKind,
    ) -> Result<Output, QueryError> {
        let block = session.block().clone();
        let in_block = block.in_block();
        let no_block = |what: &str| {
            refused(
                sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                format!("{what} can only be used in transaction blocks"),
            )
        };
        let failed = || {
            refused(
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            )
        };
        match kind {
            TransactionKind::Begin(modes) => {
                let tag = if modes.start {
                    "START TRANSACTION"
                } else {
                    "BEGIN"
                };
                if in_block {
                    return Ok(warned(
                        tag,
                        sqlstate::ACTIVE_SQL_TRANSACTION,
                        "there is already a transaction in progress",
                    ));
                }
                let named = match modes.isolation {
                    Some(l) => l,
                    None => session
                        .var("default_transaction_isolation")
                        .and_then(|v| IsolationLevel::parse(&v))
                        .unwrap_or(IsolationLevel::ReadCommitted),
                };
                let isolation = level(named)?;
                let read_only = modes.read_only.unwrap_or_else(|| {
                    matches!(
                        session.var("default_transaction_read_only").as_deref(),
                        Some("on" | "true")
                    )
                });
                let tx = self
                    .storage
                    .begin(isolation, Some(session.interrupt().clone()));
                session.begin(tx, read_only, named.name());
                Ok(done(tag))
            }
            TransactionKind::Commit => {
                if !in_block {
                    return Ok(warned(
                        "COMMIT",
                        sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                        "there is no transaction in progress",
                    ));
                }
                let was_failed = block.failed();
                let undo = session.txn_undo();
                let drops = session.take_drops();
                let (tx, _) = session.end(was_failed);
                let rolled_back = match tx {
                    Some(tx) if !was_failed => match tx.commit().await {
                        Ok(()) => {
                            // The block's DROPs take effect now.
                            // By id: the collection may have been renamed
                            // since. The rows are committed: a drop that
                            // fails now is a warning, not a failed COMMIT.
                            for (db, dropped, id) in drops {
                                let Some(name) = self.catalog.name_of(&db, id) else {
                                    // An index (ids of both come from one
                                    // counter).
                                    let Some(index) =
                                        crate::index_ddl::index_name_of(&self.catalog, &db, id)
                                    else {
                                        continue;
                                    };
                                    if let Err(e) = crate::index_ddl::drop_now(
                                        &self.catalog,
                                        &self.storage,
                                        &db,
                                        &index,
                                    )
                                    .await
                                    {
                                        session.notice(
                                            "01000",
                                            format!(
                                                "DROP INDEX {dropped} was not done at COMMIT: {e}"
                                            ),
                                        );
                                    }
                                    continue;
                                };
                                match self.catalog.drop_collection(&db, &name, true) {
                                    Ok(Some(def)) => self.storage.drop_collection(def.id),
                                    Ok(None) => {}
                                    Err(e) => session.notice(
                                        "01000",
                                        format!("DROP TABLE {name} was not done at COMMIT: {e}"),
                                    ),
                                }
                            }
                            return Ok(done("COMMIT"));
                        }
                        Err(e) => Err(e.into()),
                    },
                    Some(tx) => {
                        tx.rollback();
                        Ok(done("ROLLBACK"))
                    }
                    None => Ok(done("ROLLBACK")),
                };
                crate::ddl_undo::undo(&self.catalog, &self.storage, undo).await;
                rolled_back
            }
            TransactionKind::Rollback => {
                if !in_block {
                    return Ok(warned(
                        "ROLLBACK",
                        sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                        "there is no transaction in progress",
                    ));
                }
                let (tx, undo) = session.end(true);
                if let Some(tx) = tx {
                    tx.rollback();
                }
                crate::ddl_undo::undo(&self.catalog, &self.storage, undo).await;
                Ok(done("ROLLBACK"))
            }
            TransactionKind::Savepoint(name) => {
                let tx = session.transaction().ok_or_else(|| no_block("SAVEPOINT"))?;
                if block.failed() {
                    return Err(failed());
                }
                tx.savepoint(&name);
                session.savepoint(&name);
                Ok(done("SAVEPOINT"))
            }
            TransactionKind::RollbackTo(name) => {
                let tx = session
                    .transaction()
                    .ok_or_else(|| no_block("ROLLBACK TO SAVEPOINT"))?;
                tx.rollback_to(&name)?;
                let undo = session.rollback_to(&name);
                crate::ddl_undo::undo(&self.catalog, &self.storage, undo).await;
                session.recovered();
                Ok(done("ROLLBACK"))
            }
            TransactionKind::Release(name) => {
                let tx = session
                    .transaction()
                    .ok_or_else(|| no_block("RELEASE SAVEPOINT"))?;
                if block.failed() {
                    return Err(failed());
                }
                tx.release(&name)?;
                session.release(&name);
                Ok(done("RELEASE"))
            }
            TransactionKind::SetTransaction {
                modes,
                session: true,
            } => {
                if let Some(l) = modes.isolation {
                    level(l)?;
                    session.set_var("default_transaction_isolation", l.name())?;
                }
                if let Some(r) = modes.read_only {
                    session.set_var(
                        "default_transaction_read_only",
                        if r { "on" } else { "off" },
                    )?;
                }
                Ok(done("SET"))
            }
            TransactionKind::SetTransaction { modes, .. } => {
                let Some(tx) = session.transaction() else {
                    return Ok(warned(
                        "SET",
                        sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                        "SET TRANSACTION can only be used in transaction blocks",
                    ));
                };
                if block.failed() {
                    return Err(failed());
                }
                self.set_transaction(session, &tx, modes)?;
                Ok(done("SET"))
            }
        }
    }

    fn set_transaction(
        &self,
        session: &Session,
        tx: &quiver_storage::Transaction,
        modes: TransactionModes,
    ) -> Result<(), QueryError> {
        if let Some(l) = modes.isolation {
            let isolation = level(l)?;
            if session.in_savepoint() {
                return Err(refused(
                    sqlstate::ACTIVE_SQL_TRANSACTION,
                    "SET TRANSACTION ISOLATION LEVEL must not be called in a subtransaction",
                ));
            }
            if tx.started() && isolation != tx.isolation() {
                return Err(refused(
                    sqlstate::ACTIVE_SQL_TRANSACTION,
                    "SET TRANSACTION ISOLATION LEVEL must be called before any query",
                ));
            }
            tx.set_isolation(isolation);
        }
        if modes.read_only == Some(false) && session.read_only() && tx.started() {
            return Err(refused(
                sqlstate::ACTIVE_SQL_TRANSACTION,
                "transaction read-write mode must be set before any query",
            ));
        }
        session.set_transaction(modes.read_only, modes.isolation.map(IsolationLevel::name));
        Ok(())
    }

    /// `SET [LOCAL] name = value`; `transaction_isolation` and
    /// `transaction_read_only` act on the block as SET TRANSACTION does.
    pub(crate) fn set(
        &self,
        session: &Session,
        name: &str,
        value: &str,
        local: bool,
    ) -> Result<Output, QueryError> {
        let lower = name.to_ascii_lowercase();
        if lower == "transaction_isolation" || lower == "transaction_read_only" {
            let modes = if lower == "transaction_isolation" {
                let Some(l) = IsolationLevel::parse(value) else {
                    return Err(QueryError::InvalidParameter(format!(
                        "invalid value for parameter \"transaction_isolation\": \"{value}\""
                    )));
                };
                TransactionModes {
                    isolation: Some(l),
                    ..TransactionModes::default()
                }
            } else {
                TransactionModes {
                    read_only: Some(matches!(
                        value.to_ascii_lowercase().as_str(),
                        "on" | "true" | "1" | "yes"
                    )),
                    ..TransactionModes::default()
                }
            };
            return match session.transaction() {
                Some(tx) => {
                    self.set_transaction(session, &tx, modes)?;
                    Ok(command("SET"))
                }
                None => Ok(warned(
                    "SET",
                    sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                    "SET TRANSACTION can only be used in transaction blocks",
                )),
            };
        }
        if local {
            if !session.block().in_block() {
                // PostgreSQL: it lasts only as long as the statement.
                Session::check_var(&lower, value)?;
                return Ok(warned(
                    "SET",
                    sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                    "SET LOCAL can only be used in transaction blocks",
                ));
            }
            session.set_local(&lower, value)?;
        } else {
            session.set_var(&lower, value)?;
        }
        Ok(command("SET"))
    }
}
