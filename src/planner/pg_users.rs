//! Users and roles in `pg_catalog`: `pg_roles` (through
//! datafusion-pg-catalog's context provider) and `pg_user`. Verifiers never
//! appear: the password columns read `********` as in PostgreSQL.

use std::sync::Arc;

use arrow::array::{BooleanArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider};
use datafusion::common::Result;
use datafusion::datasource::TableProvider;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};

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
}

const PG_USER: &str = "pg_user";
const PG_STAT_ACTIVITY: &str = "pg_stat_activity";
const PG_DATABASE: &str = "pg_database";
const PG_STAT_PROGRESS_COPY: &str = "pg_stat_progress_copy";

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

impl WithPgUser {
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
        let users: Vec<String> = self.catalog.security(|s| s.users.keys().cloned().collect());
        let databases = self.catalog.databases();
        let n = databases.len();
        let owner_oid = |owner: &Option<String>| {
            owner
                .as_ref()
                .and_then(|o| users.iter().position(|u| u == o))
                .map_or(BOOTSTRAP_SUPERUSER_OID, |i| 16384 + i as i32)
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

#[async_trait]
impl SchemaProvider for WithPgUser {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.push(PG_USER.to_string());
        names.push(PG_STAT_ACTIVITY.to_string());
        names.push(PG_STAT_PROGRESS_COPY.to_string());
        if !names.iter().any(|n| n == PG_DATABASE) {
            names.push(PG_DATABASE.to_string());
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name == PG_USER {
            return self.pg_user().map(Some);
        }
        if name == PG_DATABASE {
            return self.pg_database().map(Some);
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
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        name == PG_USER
            || name == PG_STAT_ACTIVITY
            || name == PG_DATABASE
            || name == PG_STAT_PROGRESS_COPY
            || self.inner.table_exist(name)
    }
}
