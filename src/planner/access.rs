//! Privilege checks: what a statement needs, found before anything runs,
//! and the execution of the access-control statements themselves.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, WriteOp};

use super::QueryError;
use super::ann_rule::AnnSearchNode;
use super::session::Session;
use quiver_auth::acl::{AccessError, Grant, Object, Privilege, Scope, SecurityState};
use quiver_auth::scram::Verifier;
use quiver_catalog::{Catalog, CollectionDef};
use quiver_exec::CollectionTable;
use quiver_sql::statement::{AccessStatement, GrantObject};

/// One thing a statement needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// `privilege` on a collection.
    Collection {
        privilege: Privilege,
        database: String,
        name: String,
    },
    /// A vector search: SEARCH, or SELECT (which covers every read).
    Search { database: String, name: String },
    /// A system table only superusers may read.
    Superuser(String),
}

impl Need {
    pub fn on(privilege: Privilege, def: &CollectionDef) -> Need {
        Need::Collection {
            privilege,
            database: def.database.clone(),
            name: def.name.clone(),
        }
    }
}

/// System tables that hold credentials in PostgreSQL.
const SUPERUSER_TABLES: &[&str] = &["pg_authid", "pg_shadow", "pg_user_mapping"];

fn collection_of(
    source: &Arc<dyn datafusion::logical_expr::TableSource>,
) -> Option<Arc<CollectionDef>> {
    let provider = source_as_provider(source).ok()?;
    (provider.as_ref() as &dyn std::any::Any)
        .downcast_ref::<CollectionTable>()
        .map(|t| t.def().clone())
}

/// Everything `plan` reads and writes, including subqueries and the plan
/// under EXPLAIN.
pub fn plan_needs(plan: &LogicalPlan) -> BTreeSet<Need> {
    let mut out = BTreeSet::new();
    collect(plan, None, &mut out);
    out
}

/// `exempt`: the target of an enclosing DELETE/UPDATE, whose scan the DML
/// privilege covers (as Milvus deletes by expression).
fn collect(plan: &LogicalPlan, exempt: Option<(&str, &str)>, out: &mut BTreeSet<Need>) {
    match plan {
        LogicalPlan::Dml(DmlStatement {
            target, op, input, ..
        }) => {
            if let Some(def) = collection_of(target) {
                let privilege = match op {
                    WriteOp::Insert(_) => Privilege::Insert,
                    WriteOp::Update => Privilege::Update,
                    _ => Privilege::Delete,
                };
                out.insert(Need::on(privilege, &def));
                let changes_rows = matches!(op, WriteOp::Update | WriteOp::Delete);
                // As in PostgreSQL, an UPDATE or DELETE that reads the rows
                // (a WHERE, a SET over their values) needs SELECT too:
                // otherwise its row count would answer questions about data
                // the user may not read.
                if changes_rows && reads_rows(input) {
                    out.insert(Need::on(Privilege::Select, &def));
                }
                let exempt = changes_rows.then_some((def.database.as_str(), def.name.as_str()));
                collect(input, exempt, out);
                return;
            }
        }
        LogicalPlan::TableScan(scan) => {
            if let Some(def) = collection_of(&scan.source) {
                if exempt != Some((def.database.as_str(), def.name.as_str())) {
                    out.insert(Need::on(Privilege::Select, &def));
                }
            } else if scan.table_name.schema() == Some("pg_catalog")
                || scan.table_name.schema().is_none()
            {
                let table = scan.table_name.table();
                if SUPERUSER_TABLES.contains(&table) {
                    out.insert(Need::Superuser(table.to_string()));
                }
            }
        }
        LogicalPlan::Extension(ext) => {
            // Its subqueries are no expressions of the plan.
            if let Some(node) = ext
                .node
                .as_any()
                .downcast_ref::<crate::correlated::CorrelatedApplyNode>()
            {
                for sub in node.subquery_plans() {
                    collect(sub, exempt, out);
                }
            }
            if let Some(node) = ext.node.as_any().downcast_ref::<AnnSearchNode>() {
                let def = node.table.def();
                out.insert(Need::Search {
                    database: def.database.clone(),
                    name: def.name.clone(),
                });
            }
        }
        _ => {}
    }
    let _ = plan.apply_subqueries(|sub| {
        collect(sub, exempt, out);
        Ok(TreeNodeRecursion::Continue)
    });
    for child in plan.inputs() {
        collect(child, exempt, out);
    }
}

/// Whether the input of an UPDATE or DELETE reads the target's values: a
/// filter (kept as a node or pushed into the scan), or a SET expression
/// that is more than the column passed through.
fn reads_rows(plan: &LogicalPlan) -> bool {
    let mut reads = false;
    let _ = plan.apply(|node| {
        reads |= match node {
            LogicalPlan::Filter(_) => true,
            LogicalPlan::TableScan(scan) => !scan.filters.is_empty(),
            LogicalPlan::Projection(p) => p
                .expr
                .iter()
                .any(|e| !passes_through(e) && !e.column_refs().is_empty()),
            _ => false,
        };
        Ok(if reads {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    reads
}

/// `col` or `col AS col`: a column an UPDATE leaves as it is.
fn passes_through(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Alias(a) => matches!(a.expr.as_ref(), Expr::Column(c) if c.name == a.name),
        _ => false,
    }
}

fn denied(what: String) -> QueryError {
    QueryError::Catalog(AccessError::Denied(what).into())
}

/// Check every need of a statement for the session's user; the first one
/// missing gives 42501.
pub fn authorize(
    catalog: &Catalog,
    session: &Session,
    needs: &BTreeSet<Need>,
) -> Result<(), QueryError> {
    let user = session.user();
    for need in needs {
        let ok = match need {
            Need::Collection {
                privilege,
                database,
                name,
            } => {
                let owner = catalog
                    .collection(database, name)
                    .and_then(|d| d.owner.clone());
                catalog.security(|s| {
                    s.allowed(
                        user,
                        *privilege,
                        &Object::Collection(database, name),
                        owner.as_deref(),
                    )
                })
            }
            Need::Search { database, name } => {
                let owner = catalog
                    .collection(database, name)
                    .and_then(|d| d.owner.clone());
                let object = Object::Collection(database, name);
                catalog.security(|s| {
                    s.allowed(user, Privilege::Search, &object, owner.as_deref())
                        || s.allowed(user, Privilege::Select, &object, owner.as_deref())
                })
            }
            Need::Superuser(_) => catalog.security(|s| s.is_superuser(user)),
        };
        if !ok {
            return Err(denied(match need {
                Need::Collection {
                    privilege, name, ..
                } => format!("{user} lacks {privilege} on collection {name}"),
                Need::Search { name, .. } => {
                    format!("{user} lacks SEARCH (or SELECT) on collection {name}")
                }
                Need::Superuser(t) => format!("only superusers may read {t}"),
            }));
        }
    }
    Ok(())
}

/// Whether the session's user holds `privilege` on a database (its owner does).
pub fn authorize_database(
    catalog: &Catalog,
    session: &Session,
    privilege: Privilege,
    database: &str,
) -> Result<(), QueryError> {
    let user = session.user();
    let owner = catalog.database_owner(database);
    if catalog.security(|s| {
        s.allowed(
            user,
            privilege,
            &Object::Database(database),
            owner.as_deref(),
        )
    }) {
        Ok(())
    } else {
        Err(denied(format!(
            "{user} lacks {privilege} on database {database}"
        )))
    }
}

/// Whether the session's user holds `privilege` on everything.
pub fn authorize_global(
    catalog: &Catalog,
    session: &Session,
    privilege: Privilege,
) -> Result<(), QueryError> {
    let user = session.user();
    if catalog.security(|s| s.allowed(user, privilege, &Object::Global, None)) {
        Ok(())
    } else {
        Err(denied(format!("{user} lacks {privilege} on all databases")))
    }
}

/// Whether `user` may see the collection (holds any privilege on it).
pub fn sees(catalog: &Catalog, user: &str, def: &CollectionDef) -> bool {
    catalog.security(|s| {
        s.sees(
            user,
            &Object::Collection(&def.database, &def.name),
            def.owner.as_deref(),
        )
    })
}

fn require_admin(catalog: &Catalog, session: &Session, what: &str) -> Result<(), QueryError> {
    if catalog.security(|s| s.is_admin(session.user())) {
        Ok(())
    } else {
        Err(denied(format!("only admins may {what}")))
    }
}

fn text_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ))
}

pub fn users_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("superuser", DataType::Boolean, false),
        Field::new("has_password", DataType::Boolean, false),
        Field::new("roles", DataType::Utf8, false),
    ]))
}

pub fn roles_schema() -> SchemaRef {
    text_schema(&["name", "members"])
}

pub fn grants_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("grantee", DataType::Utf8, false),
        Field::new("privilege", DataType::Utf8, false),
        Field::new("object_type", DataType::Utf8, false),
        Field::new("object_name", DataType::Utf8, false),
        Field::new("with_grant_option", DataType::Boolean, false),
        Field::new("grantor", DataType::Utf8, false),
    ]))
}

/// The result of an access-control statement.
pub enum AccessOutput {
    Tag(&'static str),
    Rows(RecordBatch),
}

/// The scopes a GRANT/REVOKE object names, with the owners of the objects.
fn scopes(
    catalog: &Catalog,
    session: &Session,
    object: &GrantObject,
) -> Result<Vec<(Scope, Option<String>)>, QueryError> {
    let current = session.database();
    let db_exists = |d: &str| {
        if catalog.database_exists(d) {
            Ok(())
        } else {
            Err(QueryError::UnknownDatabase(d.to_string()))
        }
    };
    Ok(match object {
        GrantObject::Global => vec![(Scope::Global, None)],
        GrantObject::Database(d) => {
            db_exists(d)?;
            vec![(Scope::Database(d.clone()), catalog.database_owner(d))]
        }
        GrantObject::AllCollections(d) => {
            let d = d.clone().unwrap_or(current);
            db_exists(&d)?;
            vec![(Scope::AllCollections(d), None)]
        }
        GrantObject::Collections(names) => names
            .iter()
            .map(|parts| {
                let (database, name) = match parts.as_slice() {
                    [n] => (current.clone(), n.clone()),
                    [d, n] => (d.clone(), n.clone()),
                    [d, _schema, n] => (d.clone(), n.clone()),
                    _ => {
                        return Err(QueryError::Unsupported(format!(
                            "invalid collection name {}",
                            parts.join(".")
                        )));
                    }
                };
                // Through an alias, the grant is on the collection it names.
                let def = catalog.get_collection(&database, &name)?;
                Ok((
                    Scope::Collection {
                        database,
                        name: def.name.clone(),
                    },
                    def.owner.clone(),
                ))
            })
            .collect::<Result<_, _>>()?,
    })
}

fn expand(
    privileges: &Option<Vec<Privilege>>,
    scope: &Scope,
) -> Result<Vec<Privilege>, QueryError> {
    let on_collection = matches!(scope, Scope::Collection { .. } | Scope::AllCollections(_));
    match privileges {
        None => Ok(Privilege::ALL
            .into_iter()
            .filter(|p| !on_collection || p.applies_to_collections())
            .collect()),
        Some(list) => {
            if on_collection && let Some(p) = list.iter().find(|p| !p.applies_to_collections()) {
                return Err(QueryError::Catalog(
                    AccessError::InvalidPrivilege(format!(
                        "privilege {p} does not apply to collections: grant it ON DATABASE or ON ALL DATABASES"
                    ))
                    .into(),
                ));
            }
            Ok(list.clone())
        }
    }
}

/// The (scope, privilege) pairs a GRANT or REVOKE names, once the
/// session's user is known to be allowed to `verb` each of them.
fn grantable(
    catalog: &Catalog,
    session: &Session,
    object: &GrantObject,
    privileges: &Option<Vec<Privilege>>,
    verb: &str,
) -> Result<Vec<(Scope, Privilege)>, QueryError> {
    let me = session.user();
    let mut out = Vec::new();
    for (scope, owner) in scopes(catalog, session, object)? {
        for p in expand(privileges, &scope)? {
            if !catalog.security(|s| s.may_grant(me, p, &scope, owner.as_deref())) {
                return Err(denied(format!(
                    "{me} may not {verb} {p} on {}: only admins, owners and holders WITH GRANT OPTION may",
                    describe(&scope)
                )));
            }
            out.push((scope.clone(), p));
        }
    }
    Ok(out)
}

fn verifier(password: &str) -> Verifier {
    // `psql`'s \password sends a verifier, not the password.
    Verifier::parse_pg_string(password).unwrap_or_else(|| Verifier::new(password))
}

/// Run an access-control statement for `session`.
pub fn execute(
    catalog: &Catalog,
    session: &Session,
    stmt: AccessStatement,
) -> Result<AccessOutput, QueryError> {
    let me = session.user().to_string();
    match stmt {
        AccessStatement::CreateUser {
            name,
            password,
            if_not_exists,
        } => {
            require_admin(catalog, session, "create users")?;
            let v = password.map(|p| verifier(&p.0));
            match catalog.update_security(|s| s.create_user(&name, v, false)) {
                Err(quiver_catalog::CatalogError::Access(AccessError::RoleExists(_)))
                    if if_not_exists =>
                {
                    session.notice("42710", format!("role \"{name}\" already exists, skipping"))
                }
                other => other?,
            }
            Ok(AccessOutput::Tag("CREATE ROLE"))
        }
        AccessStatement::AlterUser { name, password } => {
            if name != me {
                require_admin(catalog, session, "change another user's password")?;
            }
            catalog.update_security(|s| {
                let user = s
                    .users
                    .get_mut(&name)
                    .ok_or_else(|| AccessError::RoleNotFound(name.clone()))?;
                user.verifier = password.map(|p| verifier(&p.0));
                Ok(())
            })?;
            Ok(AccessOutput::Tag("ALTER ROLE"))
        }
        AccessStatement::DropUser { names, if_exists } => {
            require_admin(catalog, session, "drop users")?;
            for name in names {
                if name == me {
                    return Err(QueryError::Catalog(
                        AccessError::Protected("current user cannot be dropped".into()).into(),
                    ));
                }
                match catalog.drop_user(&name) {
                    Err(quiver_catalog::CatalogError::Access(AccessError::RoleNotFound(_)))
                        if if_exists =>
                    {
                        session.notice("00000", format!("role \"{name}\" does not exist, skipping"))
                    }
                    other => other?,
                }
            }
            Ok(AccessOutput::Tag("DROP ROLE"))
        }
        AccessStatement::CreateRole {
            name,
            if_not_exists,
        } => {
            require_admin(catalog, session, "create roles")?;
            match catalog.update_security(|s| s.create_role(&name)) {
                Err(quiver_catalog::CatalogError::Access(AccessError::RoleExists(_)))
                    if if_not_exists =>
                {
                    session.notice("42710", format!("role \"{name}\" already exists, skipping"))
                }
                other => other?,
            }
            Ok(AccessOutput::Tag("CREATE ROLE"))
        }
        AccessStatement::DropRole { names, if_exists } => {
            require_admin(catalog, session, "drop roles")?;
            for name in names {
                match catalog.update_security(|s| s.drop_role(&name)) {
                    Err(quiver_catalog::CatalogError::Access(AccessError::RoleNotFound(_)))
                        if if_exists =>
                    {
                        session.notice("00000", format!("role \"{name}\" does not exist, skipping"))
                    }
                    other => other?,
                }
            }
            Ok(AccessOutput::Tag("DROP ROLE"))
        }
        AccessStatement::GrantRole { roles, users } => {
            require_admin(catalog, session, "grant roles")?;
            catalog.update_security(|s| {
                for r in &roles {
                    for u in &users {
                        s.set_membership(r, u, true)?;
                    }
                }
                Ok(())
            })?;
            Ok(AccessOutput::Tag("GRANT ROLE"))
        }
        AccessStatement::RevokeRole { roles, users } => {
            require_admin(catalog, session, "revoke roles")?;
            catalog.update_security(|s| {
                for r in &roles {
                    for u in &users {
                        s.set_membership(r, u, false)?;
                    }
                }
                Ok(())
            })?;
            Ok(AccessOutput::Tag("REVOKE ROLE"))
        }
        AccessStatement::Grant {
            privileges,
            object,
            grantees,
            with_grant_option,
        } => {
            let mut grants = Vec::new();
            for (scope, p) in grantable(catalog, session, &object, &privileges, "grant")? {
                for g in &grantees {
                    grants.push(Grant {
                        grantee: g.clone(),
                        privilege: p,
                        scope: scope.clone(),
                        grant_option: with_grant_option,
                        grantor: me.clone(),
                    });
                }
            }
            catalog.update_security(|s| {
                for g in grants {
                    s.grant(g)?;
                }
                Ok(())
            })?;
            Ok(AccessOutput::Tag("GRANT"))
        }
        AccessStatement::Revoke {
            privileges,
            object,
            grantees,
            grant_option_for,
        } => {
            let mut revokes = Vec::new();
            for (scope, p) in grantable(catalog, session, &object, &privileges, "revoke")? {
                for g in &grantees {
                    revokes.push((g.clone(), p, scope.clone()));
                }
            }
            catalog.update_security(|s| {
                for (g, p, scope) in revokes {
                    s.revoke(&g, p, &scope, grant_option_for)?;
                }
                Ok(())
            })?;
            Ok(AccessOutput::Tag("REVOKE"))
        }
        AccessStatement::ShowUsers => Ok(AccessOutput::Rows(catalog.security(users_batch)?)),
        AccessStatement::ShowRoles => Ok(AccessOutput::Rows(catalog.security(roles_batch)?)),
        AccessStatement::ShowGrants { name } => {
            let name = name.unwrap_or_else(|| me.clone());
            let (admin, mine) = catalog.security(|s| {
                (
                    s.is_admin(&me),
                    name == me || s.users.get(&me).is_some_and(|u| u.roles.contains(&name)),
                )
            });
            if !admin && !mine {
                return Err(denied(format!(
                    "{me} may see only its own grants and those of its roles"
                )));
            }
            catalog
                .security(|s| {
                    if !s.exists(&name) {
                        return Err(QueryError::Catalog(
                            AccessError::RoleNotFound(name.clone()).into(),
                        ));
                    }
                    grants_batch(s.grants_for(&name))
                })
                .map(AccessOutput::Rows)
        }
    }
}

fn describe(scope: &Scope) -> String {
    let (kind, name) = scope.describe();
    format!("{kind} {name}")
}

fn users_batch(s: &SecurityState) -> Result<RecordBatch, QueryError> {
    let users: Vec<_> = s.users.values().collect();
    Ok(RecordBatch::try_new(
        users_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                users.iter().map(|u| u.name.as_str()),
            )),
            Arc::new(BooleanArray::from_iter(
                users.iter().map(|u| Some(u.superuser)),
            )),
            Arc::new(BooleanArray::from_iter(
                users.iter().map(|u| Some(u.verifier.is_some())),
            )),
            Arc::new(StringArray::from_iter_values(users.iter().map(|u| {
                let mut roles: Vec<&str> = u.roles.iter().map(String::as_str).collect();
                roles.push(quiver_auth::acl::PUBLIC_ROLE);
                roles.join(",")
            }))),
        ],
    )?)
}

fn roles_batch(s: &SecurityState) -> Result<RecordBatch, QueryError> {
    let names = s.role_names();
    let members: Vec<String> = names
        .iter()
        .map(|r| {
            if r == quiver_auth::acl::PUBLIC_ROLE {
                return "*".to_string();
            }
            s.users
                .values()
                .filter(|u| u.roles.contains(r))
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    Ok(RecordBatch::try_new(
        roles_schema(),
        vec![
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from(members)),
        ],
    )?)
}

fn grants_batch(grants: Vec<&Grant>) -> Result<RecordBatch, QueryError> {
    let described: Vec<(&str, String)> = grants.iter().map(|g| g.scope.describe()).collect();
    Ok(RecordBatch::try_new(
        grants_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                grants.iter().map(|g| g.grantee.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                grants.iter().map(|g| g.privilege.name()),
            )),
            Arc::new(StringArray::from_iter_values(described.iter().map(|d| d.0))),
            Arc::new(StringArray::from_iter_values(
                described.iter().map(|d| d.1.as_str()),
            )),
            Arc::new(BooleanArray::from_iter(
                grants.iter().map(|g| Some(g.grant_option)),
            )),
            Arc::new(StringArray::from_iter_values(
                grants.iter().map(|g| g.grantor.as_str()),
            )),
        ],
    )?)
}
