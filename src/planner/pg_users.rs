//! Users and roles in `pg_catalog`: `pg_roles` (through
//! datafusion-pg-catalog's context provider) and `pg_user`. Verifiers never
//! appear: the password columns read `********` as in PostgreSQL.

use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider};
use datafusion::common::Result;
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use quiver_auth::acl::SecurityState;

use quiver_auth::acl::{ADMIN_ROLE, PUBLIC_ROLE};
use quiver_catalog::Catalog;

/// Roles for `pg_roles`: every user (can log in) and every role.
#[derive(Debug, Clone)]
pub struct QuiverRoles {
    pub catalog: Arc<Catalog>,
}

#[async_trait]
impl PgCatalogContextProvider for QuiverRoles {
    async fn roles(&self) -> Vec<String> {
        self.catalog.security(|s| {
            let mut names: Vec<String> = s.users.keys().cloned().collect();
            names.extend(s.role_names());
            names
        })
    }

    async fn role(&self, name: &str) -> Option<Role> {
        self.catalog.security(|s| {
            let user = s.user(name);
            let admin = user.map(|_| s.is_admin(name)).unwrap_or(name == ADMIN_ROLE);
            (user.is_some() || s.exists(name)).then(|| Role {
                name: name.to_string(),
                is_superuser: user.is_some_and(|u| u.superuser),
                can_login: user.is_some(),
                can_create_db: admin,
                can_create_role: admin,
                can_create_user: admin,
                can_replication: false,
                grants: vec![],
                inherited_roles: user
                    .map(|u| {
                        let mut r: Vec<String> = u.roles.iter().cloned().collect();
                        r.push(PUBLIC_ROLE.to_string());
                        r
                    })
                    .unwrap_or_default(),
            })
        })
    }
}

/// `pg_catalog` with `pg_user`, `pg_stat_activity` and quiver's
/// `pg_database` added.
#[derive(Debug)]
pub struct WithPgUser {
    pub inner: Arc<dyn SchemaProvider>,
    pub catalog: Arc<Catalog>,
    /// The connections, for `pg_stat_activity`.
    pub activity: Arc<crate::activity::Activity>,
    /// The session's user (what `pg_stat_activity` shows depends on it).
    pub viewer: String,
    /// The session's database (whose collections `pg_class` lists).
    pub database: String,
    /// The shipped rows' types and functions.
    pub system: Arc<crate::pg_functions::SystemRows>,
}

const PG_USER: &str = "pg_user";
const PG_STAT_ACTIVITY: &str = "pg_stat_activity";
const PG_DATABASE: &str = "pg_database";
const PG_STAT_PROGRESS_COPY: &str = "pg_stat_progress_copy";
const PG_ROLES: &str = "pg_roles";
const PG_TYPE: &str = "pg_type";
const PG_PROC: &str = "pg_proc";
const PG_INDEXES: &str = "pg_indexes";
const PG_POLICIES: &str = "pg_policies";
const PG_AVAILABLE_EXTENSIONS: &str = "pg_available_extensions";

/// The oid of `_vector`, the array type of `vector` (pgvector creates both
/// in the extension's schema; their oids are whatever its database gives).
pub const PG_VECTOR_ARRAY_TYPE_OID: i32 = arrow_pg::datatypes::PG_VECTOR_TYPE_OID as i32 + 1;

/// The oid of each user and role: users in name order from 16384 (as
/// PostgreSQL numbers the first objects a user creates), then roles.
/// Objects without an owner (the `default` database, the catalogs) are the
/// bootstrap superuser's, oid 10, which names the first superuser.
pub fn role_oids(security: &SecurityState) -> Vec<(String, i32)> {
    let users = security.users.keys().cloned();
    let roles = security.role_names().into_iter();
    users
        .chain(roles)
        .enumerate()
        .map(|(i, name)| (name, FIRST_USER_OID.saturating_add(i as i32)))
        .collect()
}
const FIRST_USER_OID: i32 = 16384;

/// The name `pg_get_userbyid` gives `oid`, as PostgreSQL words an unknown
/// one.
fn user_by_oid(security: &SecurityState, oid: i64) -> String {
    if oid == BOOTSTRAP_SUPERUSER_OID as i64
        && let Some(u) = security.users.values().find(|u| u.superuser)
    {
        return u.name.clone();
    }
    role_oids(security)
        .into_iter()
        .find(|(_, o)| *o as i64 == oid)
        .map(|(name, _)| name)
        .unwrap_or_else(|| format!("unknown (OID={oid})"))
}

/// The oid of the database with catalog id `id` in `pg_database`.
pub fn database_oid(id: u64) -> i32 {
    DATABASE_OID_BASE.saturating_add(id.min(i32::MAX as u64) as i32)
}
const DATABASE_OID_BASE: i32 = 24_576;
/// The oid of the bootstrap superuser in PostgreSQL (`pg_roles`).
const BOOTSTRAP_SUPERUSER_OID: i32 = 10;
/// The oid of `pg_default`, the default tablespace.
const PG_DEFAULT_TABLESPACE: i32 = 1663;
/// `pg_database.encoding` for UTF8.
const UTF8_ENCODING: i32 = 6;

/// Every row of a table provider (a catalog table: small).
pub(crate) async fn rows_of(table: &Arc<dyn TableProvider>) -> Result<Vec<RecordBatch>> {
    let ctx = datafusion::prelude::SessionContext::new();
    let plan = table.scan(&ctx.state(), None, &[], None).await?;
    datafusion::physical_plan::collect(plan, ctx.task_ctx()).await
}

impl WithPgUser {
    /// `pg_type` with pgvector's types where `CREATE EXTENSION vector` puts
    /// them: `vector` and its array type `_vector` in schema `public` (the
    /// catalog crate has `vector` alone, in `pg_catalog`). Drivers look them
    /// up there: asyncpg's `set_type_codec('vector', schema='public')`,
    /// pgvector-python's `to_regtype('_vector')`.
    /// `public`'s oid: the session's catalog's (pg_class names it too).
    async fn public_oid(&self) -> Result<Option<i32>> {
        let mut public = None;
        if let Some(ns) = self.inner.table("pg_namespace").await? {
            for b in rows_of(&ns).await? {
                let (Some(oids), Some(names)) = (
                    b.column_by_name("oid")
                        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int32Type>()),
                    b.column_by_name("nspname")
                        .and_then(|c| c.as_string_opt::<i32>()),
                ) else {
                    continue;
                };
                public = public.or((0..b.num_rows())
                    .find(|&i| names.value(i) == crate::catalog_provider::PUBLIC_SCHEMA)
                    .map(|i| oids.value(i)));
            }
        }
        Ok(public)
    }

    /// `pg_proc` with the functions quiver adds, in schema `public`.
    async fn pg_proc(&self) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(procs) = self.inner.table(PG_PROC).await? else {
            return Ok(None);
        };
        let mut batches = rows_of(&procs).await?;
        if let Some(public) = self.public_oid().await? {
            let empty = crate::pg_relations::Rows {
                schema: procs.schema(),
                rows: Vec::new(),
            };
            batches.push(crate::pg_proc::with_added(empty, public as i64)?.into_batch()?);
        }
        let batches = batches
            .iter()
            .map(crate::pg_proc::with_argument_arrays)
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Arc::new(MemTable::try_new(
            crate::pg_proc::schema_with_argument_arrays(&procs.schema()),
            vec![batches],
        )?)))
    }

    /// `table` with its `regproc` columns as oids (see
    /// [`crate::pg_proc`]); itself when it has none.
    async fn with_regproc_oids(
        &self,
        table: Arc<dyn TableProvider>,
    ) -> Result<Arc<dyn TableProvider>> {
        if !crate::pg_proc::has_regproc_names(&table.schema()) {
            return Ok(table);
        }
        let schema = crate::pg_proc::schema_with_oids(&table.schema());
        let mut out = Vec::new();
        for b in rows_of(&table).await? {
            match self.system.regprocs.to_oids(&b)? {
                Some(b) => out.push(b),
                None => out.push(b),
            }
        }
        Ok(Arc::new(MemTable::try_new(schema, vec![out])?))
    }

    async fn pg_type(&self) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(types) = self.inner.table(PG_TYPE).await? else {
            return Ok(None);
        };
        let public = self.public_oid().await?;
        let batches = rows_of(&types).await?;
        let Some(public) = public else {
            return Ok(Some(Arc::new(MemTable::try_new(
                types.schema(),
                vec![batches],
            )?)));
        };
        let vector = arrow_pg::datatypes::PG_VECTOR_TYPE_OID as i32;
        let mut out = Vec::with_capacity(batches.len() + 1);
        for b in batches {
            let Some(oids) = b
                .column_by_name("oid")
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int32Type>())
                .cloned()
            else {
                out.push(b);
                continue;
            };
            let Some(at) = (0..b.num_rows()).find(|&i| oids.value(i) == vector) else {
                out.push(b);
                continue;
            };
            let vector_row = b.slice(at, 1);
            out.push(vector_type_row(&vector_row, public, false)?);
            out.push(vector_type_row(&vector_row, public, true)?);
            let keep =
                arrow::array::BooleanArray::from_iter((0..b.num_rows()).map(|i| Some(i != at)));
            out.push(arrow::compute::filter_record_batch(&b, &keep)?);
        }
        Ok(Some(Arc::new(MemTable::try_new(
            types.schema(),
            vec![out],
        )?)))
    }

    fn pg_user(&self) -> Result<Arc<dyn TableProvider>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("usename", DataType::Utf8, false),
            Field::new("usesysid", DataType::Int32, false),
            Field::new("usecreatedb", DataType::Boolean, false),
            Field::new("usesuper", DataType::Boolean, false),
            Field::new("userepl", DataType::Boolean, false),
            Field::new("usebypassrls", DataType::Boolean, false),
            Field::new("passwd", DataType::Utf8, true),
        ]));
        let (names, supers, admins, passwords) = self.catalog.security(|s| {
            let users: Vec<_> = s.users.values().collect();
            (
                users.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
                users.iter().map(|u| Some(u.superuser)).collect::<Vec<_>>(),
                users
                    .iter()
                    .map(|u| Some(s.is_admin(&u.name)))
                    .collect::<Vec<_>>(),
                users
                    .iter()
                    .map(|u| u.verifier.as_ref().map(|_| "********"))
                    .collect::<Vec<_>>(),
            )
        });
        let n = names.len();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(Int32Array::from_iter_values(
                    (0..n as i32).map(|i| 16384 + i),
                )),
                Arc::new(BooleanArray::from(admins)),
                Arc::new(BooleanArray::from(supers)),
                Arc::new(BooleanArray::from(vec![Some(false); n])),
                Arc::new(BooleanArray::from(vec![Some(false); n])),
                Arc::new(StringArray::from(passwords)),
            ],
        )?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }

    /// Every user (who can log in) and role, with the oids of
    /// [`role_oids`] (datafusion-pg-catalog's own gives every role oid 0).
    fn pg_roles(&self) -> Result<Arc<dyn TableProvider>> {
        let boolean = |name: &str| Field::new(name, DataType::Boolean, true);
        let schema = Arc::new(Schema::new(vec![
            Field::new("rolname", DataType::Utf8, true),
            boolean("rolsuper"),
            boolean("rolinherit"),
            boolean("rolcreaterole"),
            boolean("rolcreatedb"),
            boolean("rolcanlogin"),
            boolean("rolreplication"),
            Field::new("rolconnlimit", DataType::Int32, true),
            Field::new("rolpassword", DataType::Utf8, true),
            Field::new(
                "rolvaliduntil",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            boolean("rolbypassrls"),
            Field::new(
                "rolconfig",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
            Field::new("oid", DataType::Int32, true),
        ]));
        struct Row {
            name: String,
            oid: i32,
            superuser: bool,
            admin: bool,
            login: bool,
        }
        let rows: Vec<Row> = self.catalog.security(|s| {
            role_oids(s)
                .into_iter()
                .map(|(name, oid)| {
                    let user = s.user(&name);
                    Row {
                        superuser: user.is_some_and(|u| u.superuser),
                        admin: match user {
                            Some(_) => s.is_admin(&name),
                            None => name == ADMIN_ROLE,
                        },
                        login: user.is_some(),
                        name,
                        oid,
                    }
                })
                .collect()
        });
        let n = rows.len();
        let flags = |f: fn(&Row) -> bool| {
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(f(r)))))
        };
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.name))),
                flags(|r| r.superuser),
                flags(|_| true),
                flags(|r| r.admin),
                flags(|r| r.admin),
                flags(|r| r.login),
                flags(|_| false),
                Arc::new(Int32Array::from(vec![-1; n])),
                // PostgreSQL's view reads `********` for every role.
                Arc::new(StringArray::from(vec!["********"; n])),
                Arc::new(
                    arrow::array::TimestampMicrosecondArray::from(vec![None; n])
                        .with_timezone("UTC"),
                ),
                flags(|r| r.superuser),
                Arc::new(arrow::array::ListArray::new_null(
                    Arc::new(Field::new("item", DataType::Utf8, true)),
                    n,
                )),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.oid))),
            ],
        )?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }

    /// The databases of the catalog (datafusion-pg-catalog's own lists the
    /// session's catalog and a `postgres` database that does not exist).
    /// Owners are `pg_user`'s ids; a database without one is the
    /// bootstrap superuser's, as `default` is.
    fn pg_database(&self) -> Result<Arc<dyn TableProvider>> {
        let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
        let int = |name: &str| Field::new(name, DataType::Int32, false);
        let boolean = |name: &str| Field::new(name, DataType::Boolean, false);
        let schema = Arc::new(Schema::new(vec![
            int("oid"),
            text("datname", false),
            int("datdba"),
            int("encoding"),
            text("datlocprovider", false),
            boolean("datistemplate"),
            boolean("datallowconn"),
            int("datconnlimit"),
            int("datfrozenxid"),
            int("datminmxid"),
            int("dattablespace"),
            text("datcollate", false),
            text("datctype", false),
            text("daticulocale", true),
            text("daticurules", true),
            text("datcollversion", true),
            Field::new(
                "datacl",
                DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                true,
            ),
        ]));
        let oids = self.catalog.security(role_oids);
        let databases = self.catalog.databases();
        let n = databases.len();
        let owner_oid = |owner: &Option<String>| {
            owner
                .as_ref()
                .and_then(|o| oids.iter().find(|(name, _)| name == o))
                .map_or(BOOTSTRAP_SUPERUSER_OID, |(_, oid)| *oid)
        };
        let ints = |v: i32| Arc::new(Int32Array::from(vec![v; n]));
        let texts = |v: &str| Arc::new(StringArray::from(vec![v; n]));
        let nulls = || Arc::new(StringArray::from(vec![None::<&str>; n]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from_iter_values(
                    databases.iter().map(|(id, _, _)| database_oid(*id)),
                )),
                Arc::new(StringArray::from_iter_values(
                    databases.iter().map(|(_, name, _)| name),
                )),
                Arc::new(Int32Array::from_iter_values(
                    databases.iter().map(|(_, _, owner)| owner_oid(owner)),
                )),
                ints(UTF8_ENCODING),
                texts("c"),
                Arc::new(BooleanArray::from(vec![false; n])),
                Arc::new(BooleanArray::from(vec![true; n])),
                ints(-1),
                ints(1),
                ints(1),
                ints(PG_DEFAULT_TABLESPACE),
                texts("C.UTF-8"),
                texts("C.UTF-8"),
                nulls(),
                nulls(),
                nulls(),
                Arc::new(arrow::array::ListArray::new_null(
                    Arc::new(Field::new("item", DataType::Int32, true)),
                    n,
                )),
            ],
        )?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

/// `row` (the catalog crate's `vector` row of `pg_type`) as pgvector's
/// `vector` in namespace `public`, or as its array type `_vector`, with
/// the columns pgvector sets.
fn vector_type_row(row: &RecordBatch, public: i32, array: bool) -> Result<RecordBatch> {
    use arrow::array::{ArrayRef, new_null_array};
    use datafusion::common::ScalarValue;
    let vector = arrow_pg::datatypes::PG_VECTOR_TYPE_OID as i32;
    let columns = row
        .schema()
        .fields()
        .iter()
        .zip(row.columns())
        .map(|(field, column)| -> Result<ArrayRef> {
            let int = |v: i32| ScalarValue::Int32(Some(v));
            let text = |v: &str| ScalarValue::Utf8(Some(v.to_string()));
            let value = match (field.name().as_str(), array) {
                ("oid", true) => int(PG_VECTOR_ARRAY_TYPE_OID),
                ("typname", true) => text("_vector"),
                ("typnamespace", _) => int(public),
                ("typelem", true) => int(vector),
                ("typelem", false) => int(0),
                ("typarray", true) => int(0),
                ("typarray", false) => int(PG_VECTOR_ARRAY_TYPE_OID),
                ("typcategory", true) => text("A"),
                ("typcategory", false) => text("U"),
                ("typlen", _) => int(-1),
                ("typtype", _) => text("b"),
                ("typdelim", _) => text(","),
                ("typalign", _) => text("i"),
                ("typstorage", true) => text("x"),
                ("typstorage", false) => text("e"),
                ("typinput", true) => text("array_in"),
                ("typoutput", true) => text("array_out"),
                ("typreceive", true) => text("array_recv"),
                ("typsend", true) => text("array_send"),
                ("typinput", false) => text("vector_in"),
                ("typoutput", false) => text("vector_out"),
                ("typreceive", false) => text("vector_recv"),
                ("typsend", false) => text("vector_send"),
                ("typmodin", _) => text("vector_typmod_in"),
                ("typanalyze", true) => text("array_typanalyze"),
                _ => return Ok(column.clone()),
            };
            // Cast to the column's own type (oids are int32 or int64 there,
            // names utf8); a column of another kind keeps the crate's value.
            Ok(match value.to_array()?.as_ref() {
                a if a.data_type() == field.data_type() => a.slice(0, 1),
                a => arrow::compute::cast(a, field.data_type())
                    .unwrap_or_else(|_| new_null_array(field.data_type(), 1)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(row.schema(), columns)?)
}

#[async_trait]
impl SchemaProvider for WithPgUser {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.push(PG_USER.to_string());
        names.push(PG_STAT_ACTIVITY.to_string());
        names.push(PG_STAT_PROGRESS_COPY.to_string());
        for own in [
            PG_DATABASE,
            PG_ROLES,
            PG_INDEXES,
            PG_POLICIES,
            PG_AVAILABLE_EXTENSIONS,
        ] {
            if !names.iter().any(|n| n == own) {
                names.push(own.to_string());
            }
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.table_with_names(name).await? {
            Some(t) => Ok(Some(self.with_regproc_oids(t).await?)),
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.exists(name)
    }
}

impl WithPgUser {
    /// The table `name`, its `regproc` columns as the catalog crate has
    /// them (names).
    async fn table_with_names(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name == PG_PROC {
            return self.pg_proc().await;
        }
        if name == PG_USER {
            return self.pg_user().map(Some);
        }
        if name == PG_DATABASE {
            return self.pg_database().map(Some);
        }
        if name == PG_ROLES {
            return self.pg_roles().map(Some);
        }
        if name == PG_STAT_PROGRESS_COPY {
            return crate::backends::pg_stat_progress_copy(
                &self.activity,
                &self.catalog,
                &self.viewer,
            )
            .map(Some);
        }
        if name == PG_STAT_ACTIVITY {
            return crate::backends::pg_stat_activity(&self.activity, &self.catalog, &self.viewer)
                .map(Some);
        }
        if name == PG_TYPE {
            return self.pg_type().await;
        }
        if name == PG_POLICIES {
            return crate::pg_relations::pg_policies().map(Some);
        }
        if name == PG_AVAILABLE_EXTENSIONS {
            return crate::pg_relations::Relations {
                inner: self.inner.as_ref(),
                catalog: &self.catalog,
                database: &self.database,
            }
            .pg_available_extensions()
            .await;
        }
        if name == PG_INDEXES {
            return crate::pg_relations::pg_indexes(&self.catalog, &self.database, &self.viewer)
                .map(Some);
        }
        if crate::pg_relations::Relations::TABLES.contains(&name) {
            return crate::pg_relations::Relations {
                inner: self.inner.as_ref(),
                catalog: &self.catalog,
                database: &self.database,
            }
            .table(name)
            .await;
        }
        self.inner.table(name).await
    }

    fn exists(&self, name: &str) -> bool {
        name == PG_USER
            || name == PG_STAT_ACTIVITY
            || name == PG_DATABASE
            || name == PG_STAT_PROGRESS_COPY
            || name == PG_ROLES
            || name == PG_INDEXES
            || name == PG_POLICIES
            || name == PG_AVAILABLE_EXTENSIONS
            || self.inner.table_exist(name)
    }
}

/// `pg_get_userbyid(oid)`: the name of the user or role with that oid
/// ([`role_oids`]; datafusion-pg-catalog's own answers `postgres` for
/// every oid), and `pg_encoding_to_char`, which names UTF8 as PostgreSQL
/// does (`UTF8`, not `UTF-8`).
#[derive(Debug)]
struct UserById {
    catalog: Arc<Catalog>,
    signature: Signature,
}

impl PartialEq for UserById {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}
impl Eq for UserById {}
impl std::hash::Hash for UserById {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "pg_get_userbyid".hash(state);
    }
}

impl ScalarUDFImpl for UserById {
    fn name(&self) -> &str {
        "pg_get_userbyid"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let oids = args.args[0].to_array(args.number_rows)?;
        let oids = arrow::compute::cast(&oids, &DataType::Int64)?;
        let oids = oids.as_primitive::<arrow::datatypes::Int64Type>();
        let names: StringArray = self
            .catalog
            .security(|s| oids.iter().map(|o| o.map(|o| user_by_oid(s, o))).collect());
        Ok(ColumnarValue::Array(Arc::new(names)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct EncodingName {
    signature: Signature,
}

impl ScalarUDFImpl for EncodingName {
    fn name(&self) -> &str {
        "pg_encoding_to_char"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let codes = args.args[0].to_array(args.number_rows)?;
        let codes = arrow::compute::cast(&codes, &DataType::Int64)?;
        let names: StringArray = codes
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .map(|c| match c {
                Some(c) if c == UTF8_ENCODING as i64 => Some("UTF8"),
                // PostgreSQL names an unknown encoding with an empty string.
                Some(_) => Some(""),
                None => None,
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(names)))
    }
}

/// The catalog functions whose answers come from quiver's users.
pub fn udfs(catalog: &Arc<Catalog>) -> Vec<ScalarUDF> {
    let integer = || {
        Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Int32]),
                TypeSignature::Exact(vec![DataType::Int64]),
                TypeSignature::Exact(vec![DataType::UInt32]),
            ],
            Volatility::Stable,
        )
    };
    vec![
        ScalarUDF::new_from_impl(UserById {
            catalog: catalog.clone(),
            signature: integer(),
        }),
        ScalarUDF::new_from_impl(EncodingName {
            signature: integer(),
        }),
    ]
}
