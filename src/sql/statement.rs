//! The statements quiver executes.

use datafusion::sql::sqlparser::ast;

use quiver_auth::Secret;
use quiver_auth::acl::Privilege;

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum Statement {
    /// Anything planned by DataFusion: queries, INSERT, DELETE, EXPLAIN, ...
    /// `SEARCH` is turned into the equivalent `SELECT` at parse time.
    Query(Box<ast::Statement>),
    /// `CREATE TABLE` / `CREATE COLLECTION`.
    CreateCollection(Box<ast::CreateTable>),
    /// `DROP TABLE` / `DROP COLLECTION`.
    DropCollection {
        names: Vec<ast::ObjectName>,
        if_exists: bool,
    },
    /// `DESCRIBE COLLECTION c` (also `DESCRIBE c`).
    DescribeCollection {
        name: ast::ObjectName,
    },
    /// `SHOW COLLECTIONS` / `SHOW TABLES`.
    ShowCollections,
    CreateDatabase {
        name: String,
        if_not_exists: bool,
    },
    DropDatabase {
        name: String,
        if_exists: bool,
    },
    /// `CREATE EXTENSION vector`: vectors are built in, so this is a no-op.
    CreateExtension {
        name: String,
    },
    /// `SET [LOCAL] name = value` (session variables; LOCAL: until the
    /// transaction ends).
    Set {
        name: String,
        value: String,
        local: bool,
    },
    /// `SHOW name`.
    Show {
        name: String,
    },
    /// Transaction control: BEGIN, COMMIT, ROLLBACK, savepoints, SET
    /// TRANSACTION.
    Transaction(TransactionKind),
    /// `DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR query`.
    DeclareCursor {
        name: String,
        query: Box<ast::Statement>,
        hold: bool,
        binary: bool,
    },
    /// `FETCH` (or, with `move_only`, `MOVE`) forward: `count` rows, `None`
    /// for ALL.
    Fetch {
        name: String,
        count: Option<u64>,
        move_only: bool,
    },
    /// `CLOSE name`, `CLOSE ALL` (`None`).
    CloseCursor {
        name: Option<String>,
    },
    /// A statement that does nothing but answer with a tag.
    NoOp {
        tag: String,
    },
    /// `RESET name`, `RESET ALL`, `SET name TO DEFAULT`, `DISCARD ALL`
    /// (`name` None: every setting).
    Reset {
        name: Option<String>,
        tag: String,
    },
    /// `COPY c [(cols)] FROM STDIN [(FORMAT text|csv, ...)]`.
    CopyFrom(CopyFrom),
    /// `COPY c [(cols)] TO STDOUT`, `COPY (query) TO STDOUT`: the rows of
    /// `query` (a `SELECT`), written in `options`' format.
    CopyTo {
        query: Box<ast::Statement>,
        options: CopyOptions,
    },
    /// `FLUSH c`, `COMPACT c`, `LOAD COLLECTION c`, `RELEASE COLLECTION c`.
    Maintain {
        verb: MaintainVerb,
        name: ast::ObjectName,
    },
    /// `SHOW SEGMENTS FROM c`.
    ShowSegments {
        name: ast::ObjectName,
    },
    /// `UPSERT INTO ...` and `INSERT ... ON CONFLICT ...`: the INSERT
    /// (without its ON clause) and what to do with existing keys.
    Upsert {
        insert: Box<ast::Statement>,
        action: ConflictAction,
        /// The `ON CONFLICT (...)` target, checked against the primary key.
        target: Option<ast::ConflictTarget>,
    },
    /// Users, roles, grants.
    Access(AccessStatement),
    /// CREATE/DROP/REINDEX INDEX, SHOW INDEXES.
    Index(IndexStatement),
    /// CREATE/ALTER/DROP ALIAS, SHOW ALIASES.
    Alias(AliasStatement),
    /// `ALTER COLLECTION | TABLE [IF EXISTS] name RENAME TO new_name`.
    RenameCollection {
        name: ast::ObjectName,
        new_name: String,
        if_exists: bool,
    },
    /// `ALTER COLLECTION | TABLE [IF EXISTS] name ALTER [COLUMN] column
    /// SET DEFAULT expr | DROP DEFAULT` (`default` None).
    AlterColumnDefault {
        name: ast::ObjectName,
        column: String,
        default: Option<Box<ast::Expr>>,
        if_exists: bool,
    },
    /// A statement run with its own search settings (`SEARCH ... WITH (ef
    /// = .., nprobe = ..)`).
    Tuned {
        ef: Option<Knob>,
        nprobe: Option<Knob>,
        refine_k: Option<Knob>,
        inner: Box<Statement>,
    },
}

/// The alias statements (names are as typed: `db.name` or `name`).
#[derive(Debug, Clone)]
pub enum AliasStatement {
    /// `CREATE ALIAS alias FOR [COLLECTION] collection`.
    Create {
        alias: Vec<String>,
        collection: Vec<String>,
    },
    /// `ALTER ALIAS alias FOR [COLLECTION] collection`.
    Alter {
        alias: Vec<String>,
        collection: Vec<String>,
    },
    /// `DROP ALIAS [IF EXISTS] alias`.
    Drop { alias: Vec<String>, if_exists: bool },
    /// `SHOW ALIASES [FROM collection]`.
    Show { collection: Option<Vec<String>> },
}

/// The index statements.
#[derive(Debug, Clone)]
pub enum IndexStatement {
    /// `CREATE INDEX [IF NOT EXISTS] [name] ON c [USING method] (col [opclass]) [WITH (...)]`.
    Create {
        name: Option<String>,
        if_not_exists: bool,
        collection: Vec<String>,
        method: String,
        column: String,
        opclass: Option<String>,
        options: std::collections::BTreeMap<String, String>,
    },
    Drop {
        names: Vec<String>,
        if_exists: bool,
    },
    /// `REINDEX INDEX name`: rebuild it everywhere, and wait.
    Reindex {
        name: String,
    },
    /// `REINDEX TABLE|COLLECTION c`.
    ReindexCollection {
        collection: Vec<String>,
    },
    /// `SHOW INDEXES FROM c`.
    Show {
        collection: Vec<String>,
    },
}

/// The access-control statements.
#[derive(Debug, Clone)]
pub enum AccessStatement {
    /// `CREATE USER` (also `CREATE ROLE ... LOGIN` / `... PASSWORD`).
    CreateUser {
        name: String,
        password: Option<Secret>,
        if_not_exists: bool,
    },
    /// `ALTER USER name [WITH] PASSWORD 'x' | NULL`.
    AlterUser {
        name: String,
        password: Option<Secret>,
    },
    DropUser {
        names: Vec<String>,
        if_exists: bool,
    },
    CreateRole {
        name: String,
        if_not_exists: bool,
    },
    DropRole {
        names: Vec<String>,
        if_exists: bool,
    },
    /// `GRANT role[, ...] TO user[, ...]`.
    GrantRole {
        roles: Vec<String>,
        users: Vec<String>,
    },
    RevokeRole {
        roles: Vec<String>,
        users: Vec<String>,
    },
    /// `GRANT privileges ON object TO grantees [WITH GRANT OPTION]`;
    /// `privileges` is `None` for ALL.
    Grant {
        privileges: Option<Vec<Privilege>>,
        object: GrantObject,
        grantees: Vec<String>,
        with_grant_option: bool,
    },
    Revoke {
        privileges: Option<Vec<Privilege>>,
        object: GrantObject,
        grantees: Vec<String>,
        grant_option_for: bool,
    },
    ShowUsers,
    ShowRoles,
    /// `SHOW GRANTS [FOR name]` (the current user when no name is given).
    ShowGrants {
        name: Option<String>,
    },
}

/// What a GRANT or REVOKE applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantObject {
    /// `ON [COLLECTION|TABLE] a, db.b`: each name as its parts.
    Collections(Vec<Vec<String>>),
    /// `ON DATABASE d`.
    Database(String),
    /// `ON ALL COLLECTIONS IN DATABASE d` (`None`: the current database,
    /// from PostgreSQL's `ON ALL TABLES IN SCHEMA public`).
    AllCollections(Option<String>),
    /// `ON ALL DATABASES` / `ON GLOBAL`.
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintainVerb {
    Flush,
    Compact,
    Load,
    Release,
}

impl MaintainVerb {
    pub fn tag(self) -> &'static str {
        match self {
            MaintainVerb::Flush => "FLUSH",
            MaintainVerb::Compact => "COMPACT",
            MaintainVerb::Load => "LOAD",
            MaintainVerb::Release => "RELEASE",
        }
    }
}

/// What an upsert does with a row whose primary key exists.
#[derive(Debug, Clone)]
pub enum ConflictAction {
    /// `UPSERT INTO`: the new row replaces the old.
    Replace,
    /// `ON CONFLICT DO NOTHING`.
    Nothing,
    /// `ON CONFLICT (pk) DO UPDATE SET col = expr, ...` (`excluded.col` is
    /// the proposed row) `[WHERE cond]`.
    Update {
        assignments: Vec<ast::Assignment>,
        selection: Option<Box<ast::Expr>>,
    },
}

/// A bulk load from the client.
#[derive(Debug, Clone)]
pub struct CopyFrom {
    pub table: ast::ObjectName,
    pub columns: Vec<ast::Ident>,
    pub options: CopyOptions,
}

/// How COPY data is written (PostgreSQL's text and csv formats).
#[derive(Debug, Clone, PartialEq)]
pub struct CopyOptions {
    /// PostgreSQL's binary COPY format (the other options do not apply).
    pub binary: bool,
    pub csv: bool,
    pub delimiter: char,
    pub null: String,
    pub header: bool,
    pub quote: char,
}

impl CopyOptions {
    pub fn text() -> CopyOptions {
        CopyOptions {
            binary: false,
            csv: false,
            delimiter: '\t',
            null: "\\N".to_string(),
            header: false,
            quote: '"',
        }
    }

    pub fn csv() -> CopyOptions {
        CopyOptions {
            binary: false,
            csv: true,
            delimiter: ',',
            null: String::new(),
            header: false,
            quote: '"',
        }
    }
}

/// PostgreSQL's isolation levels, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

impl IsolationLevel {
    /// As `SHOW transaction_isolation` says it.
    pub fn name(self) -> &'static str {
        match self {
            IsolationLevel::ReadUncommitted => "read uncommitted",
            IsolationLevel::ReadCommitted => "read committed",
            IsolationLevel::RepeatableRead => "repeatable read",
            IsolationLevel::Serializable => "serializable",
        }
    }

    pub fn parse(s: &str) -> Option<IsolationLevel> {
        match s
            .trim()
            .to_ascii_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()[..]
        {
            ["read", "uncommitted"] => Some(IsolationLevel::ReadUncommitted),
            ["read", "committed"] => Some(IsolationLevel::ReadCommitted),
            ["repeatable", "read"] => Some(IsolationLevel::RepeatableRead),
            ["serializable"] => Some(IsolationLevel::Serializable),
            _ => None,
        }
    }
}

/// The modes of BEGIN and SET TRANSACTION.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransactionModes {
    pub isolation: Option<IsolationLevel>,
    pub read_only: Option<bool>,
    /// Written `START TRANSACTION` (its command tag), not `BEGIN`.
    pub start: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransactionKind {
    /// `BEGIN`, `START TRANSACTION`.
    Begin(TransactionModes),
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    /// `SAVEPOINT name` (names folded as identifiers are).
    Savepoint(String),
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `SET TRANSACTION ...`, or with `session`, `SET SESSION
    /// CHARACTERISTICS AS TRANSACTION ...`.
    SetTransaction {
        modes: TransactionModes,
        session: bool,
    },
}

/// Options given to `SEARCH ... WITH (...)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOptions {
    pub ef: Option<Knob>,
    pub nprobe: Option<Knob>,
    pub refine_k: Option<Knob>,
    /// A number, or a parameter (`$3::double precision`), as SQL text.
    pub radius: Option<String>,
    pub range_filter: Option<String>,
}

/// A search setting of `SEARCH ... WITH (...)`: a number, or the
/// statement's parameter `$n` (bound at each execution).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Knob {
    Value(u64),
    Param(usize),
}
