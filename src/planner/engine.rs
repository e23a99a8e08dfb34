//! The engine: owns the catalog, the storage and the shared DataFusion setup,
//! and executes statements for sessions.

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, UInt64Type};
use datafusion::catalog::CatalogProviderList;
use datafusion::common::ParamValues;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{collect, displayable, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables, create_current_database_udf, setup_pg_catalog,
};
use tracing::debug;

use super::access::{self, Need};
use super::ann_rule::{AnnSearchRule, QuiverQueryPlanner};
use super::catalog_provider::{PUBLIC_SCHEMA, QuiverCatalogList};
use super::ddl;
use super::pg_users::{QuiverRoles, WithPgUser};
use super::session::Session;
use super::vector_sql::{VectorCastRule, VectorOperatorPlanner, VectorTypePlanner};
use super::{Output, QueryError};
use crate::vector_udf::all_udfs;
use datafusion::optimizer::{OptimizerContext, OptimizerRule};
use quiver_auth::acl::Privilege;
use quiver_catalog::{Catalog, CollectionDef, DEFAULT_DATABASE, FieldType};
use quiver_exec::copy::CopyIn;
use quiver_sql::Statement;
use quiver_sql::statement::{AccessStatement, ConflictAction, MaintainVerb};
use quiver_storage::Storage;
use quiver_storage::{Conflict, Mutation};

mod cursor;
mod dispatch;
mod rewrite;
mod show;
mod transaction;
mod upsert;

use rewrite::*;
use show::*;

pub struct Engine {
    catalog: Arc<Catalog>,
    storage: Arc<Storage>,
    base: SessionState,
    catalogs: QuiverCatalogList,
    pg_tables: Arc<PgCatalogStaticTables>,
    /// The shipped catalog rows' types, functions and comments.
    system_rows: Arc<super::pg_relations::SystemRows>,
    /// Every connection and what it runs.
    activity: Arc<super::activity::Activity>,
    memory: super::memory::QueryMemory,
    /// Server-wide defaults of session settings.
    session_defaults: parking_lot::RwLock<Arc<std::collections::BTreeMap<String, String>>>,
    /// `pg_advisory_lock` and its family.
    advisory: Arc<super::advisory::AdvisoryLocks>,
}

/// A statement prepared for the extended protocol.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub statement: Statement,
    /// The logical plan, for statements planned by DataFusion.
    pub plan: Option<LogicalPlan>,
    /// The plan analysed and optimised once, with its parameters still open:
    /// executions only bind values and plan physically.
    optimized: Option<LogicalPlan>,
    /// The result columns' types as execution gives them: the analysed
    /// plan's (type coercion can widen a column: `SELECT 1::int UNION ALL
    /// SELECT 5` is bigint, which a Describe from the bare plan called
    /// int4, so binary results read 0).
    analyzed_schema: Option<datafusion::common::DFSchemaRef>,
    /// The physical plan of the last execution of a plain search, for the
    /// next one with another query vector.
    search: Arc<parking_lot::Mutex<Option<super::search_cache::CachedSearch>>>,
    /// [`Prepared::parameter_fields`], worked out on first use.
    parameters: Arc<std::sync::OnceLock<Vec<Option<FieldRef>>>>,
    /// The result columns' names as PostgreSQL gives them (queries only).
    names: Option<Vec<super::colnames::ColumnName>>,
    /// The SQL it was prepared from (for pg_stat_activity).
    pub text: String,
    /// The RETURNING clause of an INSERT, UPDATE or DELETE (`plan` is the
    /// statement without it).
    returning: Option<super::returning::Returning>,
    /// The rows of a FETCH: its cursor's, when it was prepared.
    fetches: Option<SchemaRef>,
    /// It calls `current_setting` or `set_config`: planned again at each
    /// execution with the values then.
    reads_settings: bool,
    /// The table and column each result column comes from (see
    /// [`super::origins`]).
    origins: Vec<Option<(i64, usize)>>,
    /// The catalog version it was planned at: after DDL it is planned
    /// again (the plan holds the collections it read then).
    version: u64,
    /// An upsert's INSERT, planned only to type its parameters (the
    /// upsert itself is planned when it runs).
    parameter_plan: Option<LogicalPlan>,
    /// The statement planned again at a later catalog version.
    replanned: Replanned,
}

/// A prepared statement planned again, with the catalog version it was.
type Replanned = Arc<parking_lot::Mutex<Option<(u64, Arc<Prepared>)>>>;

/// A `SEARCH ... WITH (ef = ..)` setting: its number, or the value of
/// its parameter.
pub(crate) fn knob_value(
    knob: Option<quiver_sql::statement::Knob>,
    params: Option<&ParamValues>,
) -> Result<Option<u64>, QueryError> {
    use quiver_sql::statement::Knob;
    let n = match knob {
        None => return Ok(None),
        Some(Knob::Value(v)) => return Ok(Some(v)),
        Some(Knob::Param(n)) => n,
    };
    let value = match params {
        Some(ParamValues::List(values)) => n.checked_sub(1).and_then(|i| values.get(i)),
        _ => None,
    }
    .ok_or_else(|| QueryError::InvalidParameter(format!("no value for parameter ${n}")))?;
    match value.value.cast_to(&DataType::UInt64) {
        Ok(datafusion::common::ScalarValue::UInt64(Some(v))) => Ok(Some(v)),
        _ => Err(QueryError::InvalidParameter(format!(
            "parameter ${n} of a SEARCH setting must be a positive integer, not {}",
            value.value
        ))),
    }
}

/// LIMIT and OFFSET given as parameters (`LIMIT $1`): planned as a cast of
/// the parameter to bigint, bound to a cast of a literal, which physical
/// planning (and the vector search rewrite) want as the literal itself.
fn fold_limit_casts(plan: LogicalPlan) -> Result<LogicalPlan, QueryError> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::{Cast, Expr, TryCast};
    fn fold(e: Expr, offset: bool) -> Result<Expr, QueryError> {
        Ok(match e {
            Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                match fold(*expr, offset)? {
                    Expr::Literal(v, _) => {
                        let v = v.cast_to(field.data_type())?;
                        if matches!(&v, datafusion::common::ScalarValue::Int64(Some(n)) if *n < 0) {
                            use quiver_common::sqlstate;
                            return Err(QueryError::Data {
                                message: format!(
                                    "{} must not be negative",
                                    if offset { "OFFSET" } else { "LIMIT" }
                                ),
                                code: if offset {
                                    sqlstate::INVALID_ROW_COUNT_IN_RESULT_OFFSET_CLAUSE
                                } else {
                                    sqlstate::INVALID_ROW_COUNT_IN_LIMIT_CLAUSE
                                },
                            });
                        }
                        Expr::Literal(v, None)
                    }
                    other => Expr::Cast(Cast {
                        expr: Box::new(other),
                        field,
                    }),
                }
            }
            other => other,
        })
    }
    let folded = plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::Limit(mut limit) => {
            limit.skip = limit
                .skip
                .map(|e| fold(*e, true).map(Box::new))
                .transpose()
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            limit.fetch = limit
                .fetch
                .map(|e| fold(*e, false).map(Box::new))
                .transpose()
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            // LIMIT 0: no rows (DataFusion's top-k operator requires k > 0;
            // its optimizer removes such a limit, but ran before binding).
            if matches!(
                limit.fetch.as_deref(),
                Some(Expr::Literal(
                    datafusion::common::ScalarValue::Int64(Some(0)),
                    _
                ))
            ) {
                return Ok(Transformed::yes(LogicalPlan::EmptyRelation(
                    datafusion::logical_expr::EmptyRelation {
                        produce_one_row: false,
                        schema: limit.input.schema().clone(),
                    },
                )));
            }
            Ok(Transformed::yes(LogicalPlan::Limit(limit)))
        }
        other => Ok(Transformed::no(other)),
    });
    match folded {
        Ok(t) => Ok(t.data),
        Err(datafusion::error::DataFusionError::External(e)) => match e.downcast::<QueryError>() {
            Ok(q) => Err(*q),
            Err(e) => Err(datafusion::error::DataFusionError::External(e).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// DataFusion's plan of `stmt`. A query it refuses for naming two select
/// items alike (`1::int, 1::bigint`) is planned again with every item
/// aliased; the client sees the names `colnames` gave them.
pub(crate) async fn plan_statement(
    session: &Session,
    stmt: Box<ast::Statement>,
) -> datafusion::error::Result<LogicalPlan> {
    let query = matches!(stmt.as_ref(), ast::Statement::Query(_));
    let again = query.then(|| stmt.clone());
    let planned = match (
        session
            .state()
            .statement_to_plan(DfStatement::Statement(stmt))
            .await,
        again,
    ) {
        (Err(e), Some(mut again)) if super::colnames::is_duplicate_name_error(&e) => {
            super::colnames::alias_all(&mut again);
            session
                .state()
                .statement_to_plan(DfStatement::Statement(again))
                .await
        }
        (planned, _) => planned,
    };
    // Result columns typed as PostgreSQL types them (`SELECT 1` is int4).
    match planned {
        Ok(plan) if query => super::int_types::narrow_result_integers(plan),
        other => other,
    }
}

/// The types of parameters that DataFusion leaves open but whose place
/// fixes, as PostgreSQL infers them: a cast (`$1::int` is int4), LIMIT and
/// OFFSET (bigint).
fn implied_parameter_types(plan: &LogicalPlan) -> std::collections::HashMap<String, FieldRef> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Cast, Expr, TryCast};
    let mut found = std::collections::HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Limit(limit) = node {
            for e in [&limit.skip, &limit.fetch].into_iter().flatten() {
                if let Expr::Placeholder(p) = e.as_ref() {
                    found
                        .entry(p.id.clone())
                        .or_insert_with(|| Arc::new(Field::new(&p.id, DataType::Int64, true)));
                }
            }
        }
        let schema = datafusion::logical_expr::utils::merge_schema(&node.inputs());
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) = e
                    && let Expr::Placeholder(p) = expr.as_ref()
                {
                    found.entry(p.id.clone()).or_insert_with(|| field.clone());
                }
                // `x = ANY($1)` and `x <> ALL($1)` (DataFusion's
                // `array_has($1, x)`): an array of x's type.
                if let Expr::ScalarFunction(f) = e
                    && f.func.name() == "array_has"
                    && let [Expr::Placeholder(p), needle] = f.args.as_slice()
                    && !matches!(needle, Expr::Placeholder(_))
                    && let Ok(item) =
                        datafusion::logical_expr::ExprSchemable::get_type(needle, &schema)
                {
                    found.entry(p.id.clone()).or_insert_with(|| {
                        Arc::new(Field::new(
                            &p.id,
                            DataType::List(Arc::new(Field::new_list_field(item, true))),
                            true,
                        ))
                    });
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

impl Prepared {
    /// Parameter fields `$1..$n` in order (`None` where the type is unknown).
    pub fn parameter_fields(&self) -> Result<Vec<Option<FieldRef>>, QueryError> {
        if let Some(known) = self.parameters.get() {
            return Ok(known.clone());
        }
        let fields = self.find_parameter_fields()?;
        let _ = self.parameters.set(fields.clone());
        Ok(fields)
    }

    fn find_parameter_fields(&self) -> Result<Vec<Option<FieldRef>>, QueryError> {
        let Some(plan) = self.plan.as_ref().or(self.parameter_plan.as_ref()) else {
            return Ok(vec![]);
        };
        let mut fields = plan.get_parameter_fields()?;
        for (id, field) in fields.iter_mut() {
            if field.is_none() {
                *field = implied_parameter_types(plan).remove(id);
            }
        }
        let mut numbered: Vec<(usize, Option<FieldRef>)> = fields
            .into_iter()
            .filter_map(|(id, f)| {
                id.trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .map(|n| (n, f))
            })
            .collect();
        // `SEARCH ... WITH (ef = $3)`: integers the plan does not see.
        if let Statement::Tuned {
            ef,
            nprobe,
            refine_k,
            ..
        } = &self.statement
        {
            for knob in [ef, nprobe, refine_k].into_iter().flatten() {
                if let quiver_sql::statement::Knob::Param(n) = knob
                    && !numbered.iter().any(|(m, _)| m == n)
                {
                    numbered.push((*n, Some(Arc::new(Field::new("", DataType::Int64, true)))));
                }
            }
        }
        numbered.sort_by_key(|(n, _)| *n);
        let max = numbered.last().map(|(n, _)| *n).unwrap_or(0);
        let mut out = vec![None; max];
        for (n, f) in numbered {
            if n >= 1 {
                out[n - 1] = f;
            }
        }
        Ok(out)
    }

    /// The schema of the rows this statement returns, if it returns rows.
    pub fn result_schema(&self) -> Option<SchemaRef> {
        if matches!(self.statement, Statement::DeclareCursor { .. }) {
            return None;
        }
        if let Some(r) = &self.returning {
            return Some(r.schema.clone());
        }
        if let Some(s) = &self.fetches {
            return Some(s.clone());
        }
        match (&self.plan, &self.statement) {
            (Some(LogicalPlan::Dml(_)), _) => None,
            (Some(plan), _) => {
                let schema = self.analyzed_schema.as_ref().unwrap_or(plan.schema());
                let schema = Arc::new(schema.as_arrow().clone());
                let schema = super::origins::mark(schema, &self.origins);
                Some(match &self.names {
                    Some(names) => super::colnames::rename(&schema, names),
                    None => schema,
                })
            }
            (None, Statement::DescribeCollection { .. }) => {
                Some(ddl::describe(&empty_def()).schema())
            }
            (None, Statement::ShowCollections) => Some(collections_schema()),
            (None, Statement::ShowSegments { .. }) => Some(segments_schema()),
            (None, Statement::Show { name }) => Some(show_schema(name)),
            (None, Statement::Index(quiver_sql::statement::IndexStatement::Show { .. })) => {
                Some(super::index_ddl::indexes_schema())
            }
            (None, Statement::Alias(quiver_sql::statement::AliasStatement::Show { .. })) => {
                Some(super::alter_ddl::aliases_schema())
            }
            (None, Statement::Access(AccessStatement::ShowUsers)) => Some(access::users_schema()),
            (None, Statement::Access(AccessStatement::ShowRoles)) => Some(access::roles_schema()),
            (None, Statement::Access(AccessStatement::ShowGrants { .. })) => {
                Some(access::grants_schema())
            }
            _ => None,
        }
    }
}

impl Engine {
    pub fn new(
        catalog: Arc<Catalog>,
        storage: Arc<Storage>,
        memory: super::memory::QueryMemory,
    ) -> Result<Engine, QueryError> {
        // information_schema is quiver's (its `columns` in PostgreSQL's
        // form), registered per session in `state_for`.
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(DEFAULT_DATABASE, PUBLIC_SCHEMA)
            .set_str("datafusion.sql_parser.dialect", "postgres")
            // Row-count estimates (a search's k, a segment's rows) decide
            // whether repartitioning for parallelism is worth it.
            .set_bool(
                "datafusion.execution.use_row_number_estimates_to_optimize_partitioning",
                true,
            );
        let catalogs = QuiverCatalogList::new(catalog.clone(), storage.clone());
        let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(memory.server_pool());
        runtime = match &memory.spill_dir {
            Some(dir) => runtime.with_temp_file_path(dir),
            None => runtime.with_disk_manager_builder(
                datafusion::execution::disk_manager::DiskManagerBuilder::default()
                    .with_mode(datafusion::execution::disk_manager::DiskManagerMode::Disabled),
            ),
        };
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.build_arc()?)
            .with_default_features()
            .with_catalog_list(Arc::new(catalogs.clone()))
            .build();
        let ctx = SessionContext::new_with_state(state);
        // Scans of flushed segments read Parquet through the storage's store.
        let scan_url =
            datafusion::execution::object_store::ObjectStoreUrl::parse(quiver_storage::SCAN_URL)?;
        ctx.runtime_env()
            .register_object_store(scan_url.as_ref(), storage.io().store().clone());
        for udf in all_udfs() {
            ctx.register_udf(udf);
        }
        // avg / sum over vectors too (pgvector's), wrapping DataFusion's.
        for udaf in super::vector_agg::aggregates(
            datafusion::execution::FunctionRegistry::udaf(&ctx, "avg")?,
            datafusion::execution::FunctionRegistry::udaf(&ctx, "sum")?,
        ) {
            ctx.register_udaf(udaf);
        }
        let roles = QuiverRoles {
            catalog: catalog.clone(),
        };
        setup_pg_catalog(&ctx, DEFAULT_DATABASE, roles).map_err(|e| QueryError::DataFusion(*e))?;
        let state = ctx.state();
        let mut planners = vec![Arc::new(VectorOperatorPlanner) as _];
        planners.extend(state.expr_planners().iter().cloned());
        let base = SessionStateBuilder::new_from_existing(state)
            .with_expr_planners(planners)
            .with_type_planner(Arc::new(VectorTypePlanner))
            .with_analyzer_rule(Arc::new(VectorCastRule))
            .with_analyzer_rule(Arc::new(crate::uuid_sql::UuidRule))
            .with_analyzer_rule(Arc::new(crate::correlated::CorrelatedSubqueryAnalyzer))
            .with_optimizer_rule(Arc::new(crate::correlated::CorrelatedSubqueryRule))
            .with_optimizer_rule(Arc::new(AnnSearchRule))
            .with_query_planner(Arc::new(QuiverQueryPlanner))
            .build();
        let pg_tables = Arc::new(PgCatalogStaticTables::try_new()?);
        let system_rows = Arc::new(super::pg_relations::SystemRows::load(&pg_tables)?);
        Ok(Engine {
            system_rows,
            catalog,
            storage,
            base,
            catalogs,
            pg_tables,
            session_defaults: Default::default(),
            activity: Default::default(),
            memory,
            advisory: Default::default(),
        })
    }

    /// Bytes the server's query operators hold now.
    pub fn query_memory_reserved(&self) -> usize {
        self.base.runtime_env().memory_pool.reserved()
    }

    /// Every connection and what it runs.
    pub fn activity(&self) -> &Arc<super::activity::Activity> {
        &self.activity
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    fn state_for(&self, database: &str, user: &str) -> Result<SessionState, QueryError> {
        let interrupt = Arc::new(quiver_common::interrupt::Interrupt::default());
        let config = self
            .base
            .config()
            .clone()
            .with_extension(Arc::new(quiver_exec::ann_search::SearchSettings::default()))
            .with_extension(interrupt.clone())
            .with_extension(Arc::new(quiver_storage::TxSlot::default()));
        let advisory =
            super::advisory::SessionLocks::new(self.advisory.clone(), database, interrupt.clone());
        let mut config = config.with_extension(advisory.clone());
        config.options_mut().catalog.default_catalog = database.to_string();
        // A session sees its own database only, in queries and in pg_catalog.
        let visible = self.catalogs.for_database(database, user);
        let pg_catalog = PgCatalogSchemaProvider::try_new(
            Arc::new(visible.clone()) as Arc<dyn CatalogProviderList>,
            self.pg_tables.clone(),
            QuiverRoles {
                catalog: self.catalog.clone(),
            },
        )?;
        let pg_catalog = WithPgUser {
            inner: Arc::new(pg_catalog),
            catalog: self.catalog.clone(),
            activity: self.activity.clone(),
            viewer: user.to_string(),
            database: database.to_string(),
            system: self.system_rows.clone(),
        };
        let visible = visible.with_schema("pg_catalog", Arc::new(pg_catalog));
        let information_schema = super::information_schema::InformationSchema::new(
            Arc::new(visible.clone()),
            self.catalog.clone(),
            database,
            self.system_rows.clone(),
        );
        let visible = visible.with_schema("information_schema", Arc::new(information_schema));
        // The session's share of the server's query memory.
        let server_env = self.base.runtime_env();
        let pool = Arc::new(super::memory::SessionPool::new(
            server_env.memory_pool.clone(),
            self.memory.per_query,
        ));
        let runtime =
            datafusion::execution::runtime_env::RuntimeEnvBuilder::from_runtime_env(server_env)
                .with_memory_pool(pool)
                .build_arc()?;
        let mut state = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_config(config)
            .with_runtime_env(runtime)
            .with_catalog_list(Arc::new(visible))
            .build();
        // DataFusion ships functions with some of our names (`inner_product`,
        // `cosine_distance`); registering ours last makes them win.
        let udfs = all_udfs()
            .into_iter()
            .chain(super::pg_compat::all_udfs())
            .chain(super::json_udf::all_udfs())
            .chain(super::uuid_sql::all_udfs())
            .chain(super::vector_ops::all_udfs())
            .chain([super::regexp_split::udf()])
            .chain(super::pg_users::udfs(&self.catalog))
            .chain(super::pg_relations::udfs(
                &self.catalog,
                database,
                &self.system_rows,
            ))
            .chain(super::pg_functions::size_udfs(
                &self.catalog,
                &self.storage,
                user,
            ))
            .chain([create_current_database_udf(database)])
            .chain(super::backends::udfs(
                &self.activity,
                &self.catalog,
                user,
                &interrupt,
            ))
            .chain(super::advisory::udfs(&advisory));
        for udf in udfs {
            let _ =
                datafusion::execution::FunctionRegistry::register_udf(&mut state, Arc::new(udf));
        }
        Ok(state)
    }

    /// Open a session for `user` on `database`.
    pub fn new_session(&self, user: &str, database: &str) -> Result<Session, QueryError> {
        if !self.catalog.database_exists(database) {
            return Err(QueryError::UnknownDatabase(database.to_string()));
        }
        Ok(Session::new(
            user,
            database,
            self.state_for(database, user)?,
            self.session_defaults.read().clone(),
        )
        .with_catalog(self.catalog.clone(), self.storage.clone()))
    }

    /// Set the default of a session setting for sessions that start from
    /// now on (`statement_timeout` from the configuration, say); the value
    /// is checked as a SET would check it.
    pub fn set_session_default(&self, name: &str, value: &str) -> Result<(), QueryError> {
        let name = name.to_ascii_lowercase();
        let value = super::session::check_default(&name, value)?;
        let mut defaults = self.session_defaults.write();
        let mut next = defaults.as_ref().clone();
        next.insert(name, value);
        *defaults = Arc::new(next);
        Ok(())
    }

    /// Parse-time planning for the extended protocol.
    pub async fn prepare(
        &self,
        session: &Session,
        statement: Statement,
    ) -> Result<Prepared, QueryError> {
        self.admit(session, &statement)?;
        let version = self.catalog.version();
        let planned = match &statement {
            Statement::Tuned { inner, .. } => inner.as_ref(),
            other => other,
        };
        let names = match planned {
            Statement::Query(stmt) => super::colnames::of_statement(stmt),
            // A cursor's rows are named as the query's (psycopg's named
            // cursors declare it with parameters).
            Statement::DeclareCursor { query, .. } => super::colnames::of_statement(query),
            _ => None,
        };
        // An upsert runs whole at execution; its RETURNING is planned here
        // only to describe its rows.
        let mut returning = match planned {
            Statement::Upsert { insert, .. } => {
                self.plan_returning(session, &mut insert.as_ref().clone())?
            }
            _ => None,
        };
        let plan =
            match planned {
                Statement::Query(stmt) => {
                    let mut stmt = stmt.clone();
                    // Planned with the settings' values now, to describe
                    // its rows; each execution plans it again.
                    super::settings_fn::rewrite(session, &mut stmt, false, None)?;
                    returning = self.plan_returning(session, &mut stmt)?;
                    crate::colnames::alias_duplicates(&mut stmt);
                    rewrite_insert_vectors(&mut stmt, &self.catalog, &session.database())?;
                    let target = crate::insert_values::insert_targets(self, session, &stmt);
                    let _planning = session.reserve_plan()?;
                    Some(plan_statement(session, stmt).await.map_err(|e| {
                        crate::insert_values::insert_error(target.as_ref(), e.into())
                    })?)
                }
                _ => None,
            };
        // A DECLARE's query, planned to be bound at execution.
        let (plan, declares) = match (plan, planned) {
            (None, Statement::DeclareCursor { query, .. }) => {
                let mut query = query.clone();
                super::colnames::alias_duplicates(&mut query);
                (
                    Some(
                        session
                            .state()
                            .statement_to_plan(DfStatement::Statement(query))
                            .await?,
                    ),
                    true,
                )
            }
            (plan, _) => (plan, false),
        };
        // Plans that only read can be optimised before their parameters are
        // known; a rule that cannot handle a parameter leaves it to execution.
        let optimized = match &plan {
            _ if declares => None,
            Some(p @ LogicalPlan::Projection(_))
            | Some(p @ LogicalPlan::Sort(_))
            | Some(p @ LogicalPlan::Limit(_))
            | Some(p @ LogicalPlan::Filter(_))
            // A plan that reads the clock is optimised when it runs:
            // `now()` is folded to a constant then.
            | Some(p @ LogicalPlan::Aggregate(_)) if !super::session::reads_clock(p) => {
                super::session::optimize(session.state(), p).ok()
            }
            _ => None,
        };
        let fetches = match planned {
            Statement::Fetch {
                name,
                move_only: false,
                ..
            } => session.cursors.schema(name),
            _ => None,
        };
        let analyzed_schema = match (&optimized, &plan) {
            (Some(o), _) => Some(o.schema().clone()),
            (None, Some(LogicalPlan::Dml(_))) | (None, None) => None,
            (None, Some(p)) => {
                let state = session.state();
                state
                    .analyzer()
                    .execute_and_check(p.clone(), state.config_options(), |_, _| {})
                    .ok()
                    .map(|a| a.schema().clone())
            }
        };
        let reads_settings = match &statement {
            Statement::Query(q) => super::settings_fn::uses(q),
            _ => false,
        };
        // An upsert's parameters take the types of the columns they fill
        // (a vector sent as text is read as a vector, not guessed at).
        let parameter_plan = match planned {
            Statement::Upsert { insert, .. } => {
                let mut insert = insert.as_ref().clone();
                self.plan_returning(session, &mut insert)?;
                self.plan_dml(session, insert).await.ok()
            }
            _ => None,
        };
        let origins = match &plan {
            Some(p) if !matches!(p, LogicalPlan::Dml(_)) => {
                super::origins::origins(p, &self.catalog, &session.database())
            }
            _ => Vec::new(),
        };
        Ok(Prepared {
            origins,
            parameter_plan,
            statement,
            plan,
            optimized,
            analyzed_schema,
            search: Default::default(),
            parameters: Default::default(),
            names,
            text: String::new(),
            returning,
            fetches,
            version,
            replanned: Default::default(),
            reads_settings,
        })
    }

    /// The plan of an INSERT, UPDATE or DELETE whose RETURNING clause was
    /// taken off.
    pub(crate) async fn plan_dml(
        &self,
        session: &Session,
        mut stmt: ast::Statement,
    ) -> Result<LogicalPlan, QueryError> {
        crate::colnames::alias_duplicates(&mut stmt);
        rewrite_insert_vectors(&mut stmt, &self.catalog, &session.database())?;
        Ok(session
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
            .await?)
    }

    /// Run `plan` (an INSERT, UPDATE or DELETE, its parameters bound), then
    /// evaluate `returning` over the rows it wrote or deleted.
    pub(crate) async fn run_returning(
        &self,
        session: &Session,
        plan: LogicalPlan,
        returning: &super::returning::Returning,
    ) -> Result<Output, QueryError> {
        let returned = Arc::new(quiver_exec::dml::Returned::default());
        let rows = match self
            .run_plan_with(session, plan, Some(returned.clone()))
            .await?
        {
            Output::Command { rows, .. } => rows.unwrap_or(0),
            _ => 0,
        };
        let batches = returning.evaluate(session.state(), &returned)?;
        Ok(Output::Returning {
            schema: returning.schema.clone(),
            batches,
            tag: returning.tag,
            rows,
        })
    }

    /// The RETURNING clause of `stmt`, taken off it and planned against
    /// the collection it writes; SELECT on the collection is required, as
    /// PostgreSQL requires it for the columns RETURNING reads.
    pub(crate) fn plan_returning(
        &self,
        session: &Session,
        stmt: &mut ast::Statement,
    ) -> Result<Option<super::returning::Returning>, QueryError> {
        let Some(clause) = super::returning::take(stmt) else {
            return Ok(None);
        };
        let (db, coll) = ddl::resolve_name(&clause.table, &session.database())?;
        let def = self.catalog.get_collection(&db, &coll)?;
        access::authorize(
            &self.catalog,
            session,
            &[Need::on(Privilege::Select, &def)].into(),
        )?;
        let columns = self.storage.open_collection(&def)?.schema();
        Ok(Some(clause.plan(session.state(), columns)?))
    }

    /// Run a prepared statement with its parameter values.
    pub async fn execute_prepared(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: ParamValues,
    ) -> Result<Output, QueryError> {
        let current = self.catalog.version();
        if prepared.version != current && prepared.plan.is_some() {
            let fresh = self.replan(session, prepared, current).await?;
            return Box::pin(self.execute_prepared(session, &fresh, params)).await;
        }
        let output = self
            .execute_prepared_as_planned(session, prepared, params)
            .await?;
        Ok(named(output, prepared.names.as_deref()))
    }

    /// `prepared` planned again at catalog version `current` (a collection
    /// it reads may have been dropped and created again); its rows must
    /// keep the shape the client was told, as PostgreSQL requires.
    async fn replan(
        &self,
        session: &Session,
        prepared: &Prepared,
        current: u64,
    ) -> Result<Arc<Prepared>, QueryError> {
        let cached = prepared.replanned.lock().clone();
        if let Some((v, fresh)) = cached
            && v == current
        {
            return Ok(fresh);
        }
        let mut fresh = self.prepare(session, prepared.statement.clone()).await?;
        fresh.text = prepared.text.clone();
        fresh.version = current;
        let shape = |s: Option<SchemaRef>| {
            s.map(|s| {
                s.fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect::<Vec<_>>()
            })
        };
        if shape(fresh.result_schema()) != shape(prepared.result_schema()) {
            return Err(QueryError::Unsupported(
                "cached plan must not change result type: prepare the statement again".into(),
            ));
        }
        let fresh = Arc::new(fresh);
        *prepared.replanned.lock() = Some((current, fresh.clone()));
        Ok(fresh)
    }

    async fn execute_prepared_as_planned(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: ParamValues,
    ) -> Result<Output, QueryError> {
        let _tuned = match &prepared.statement {
            Statement::Tuned {
                ef,
                nprobe,
                refine_k,
                ..
            } => session.tune(
                knob_value(*ef, Some(&params))?,
                knob_value(*nprobe, Some(&params))?,
                knob_value(*refine_k, Some(&params))?,
            ),
            _ => None,
        };
        self.admit(session, &prepared.statement)?;
        self.lock_for_update(session, &prepared.statement).await?;
        if let (Statement::DeclareCursor { .. }, Some(plan)) = (&prepared.statement, &prepared.plan)
        {
            return self
                .declare_prepared(
                    session,
                    &prepared.statement,
                    plan,
                    params,
                    prepared.names.as_deref(),
                )
                .await;
        }
        if prepared.reads_settings
            && let Statement::Query(stmt) = &prepared.statement
        {
            let mut stmt = stmt.clone();
            super::settings_fn::rewrite(session, &mut stmt, true, Some(&params))?;
            crate::colnames::alias_duplicates(&mut stmt);
            let plan = plan_statement(session, stmt).await?;
            let plan = fold_limit_casts(plan.with_param_values(params)?)?;
            return self.run_plan(session, plan).await;
        }
        if let Some(optimized) = &prepared.optimized {
            let version = self.catalog.version();
            // A transaction's searches read its own view: never the cache.
            let cached = match session.transaction() {
                None => prepared.search.lock().clone(),
                Some(_) => None,
            };
            if let Some(cached) = cached {
                let knobs = session.search_knobs();
                if let Some(stream) = cached.stream_for(version, &params, knobs, session.task_ctx())
                {
                    access::authorize(&self.catalog, session, &cached.needs)?;
                    return Ok(Output::Rows {
                        schema: cached.schema.clone(),
                        stream: stream?,
                    });
                }
            }
            let kept_params = params.clone();
            let plan = super::ann_rule::bind_params(optimized.clone(), &params)?;
            let plan = fold_limit_casts(plan.with_param_values(params)?)?;
            // The ANN rewrite needs the query vector, known only now.
            let plan = AnnSearchRule.rewrite(plan, &OptimizerContext::new())?.data;
            let needs = access::plan_needs(&plan);
            access::authorize(&self.catalog, session, &needs)?;
            let plain = super::ann_rule::is_plain_search(&plan);
            let state = if super::ann_rule::skips_physical_optimizer(&plan) {
                session.search_state()
            } else {
                session.state()
            };
            let physical = state
                .query_planner()
                .create_physical_plan(&plan, state)
                .await?;
            debug!(plan = %displayable(physical.as_ref()).indent(true), "prepared execution");
            let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
            let schema = super::origins::mark(schema, &prepared.origins);
            if plain {
                *prepared.search.lock() = super::search_cache::CachedSearch::new(
                    version,
                    &kept_params,
                    physical.clone(),
                    schema.clone(),
                    needs,
                );
            }
            let stream = execute_stream(physical, session.task_ctx())?;
            return Ok(Output::Rows { schema, stream });
        }
        match &prepared.plan {
            Some(plan) => {
                let target = match &prepared.statement {
                    Statement::Query(stmt) => {
                        crate::insert_values::insert_targets(self, session, stmt)
                    }
                    _ => None,
                };
                let insert_error = |e| crate::insert_values::insert_error(target.as_ref(), e);
                let plan = fold_limit_casts(plan.clone().with_param_values(params)?)?;
                match &prepared.returning {
                    Some(returning) => self.run_returning(session, plan, returning).await,
                    None => self.run_plan(session, plan).await,
                }
                .map_err(insert_error)
            }
            None => match prepared.statement.clone() {
                // Its rows may hold parameters (psycopg's `VALUES (%s, %s)`).
                Statement::Upsert {
                    insert,
                    action,
                    target,
                } => {
                    self.upsert(session, insert, action, target, Some(params))
                        .await
                }
                statement => self.execute(session, statement).await,
            },
        }
    }

    /// `schema` with the table and column each result column comes from
    /// (see [`super::origins`]).
    fn with_origins(&self, session: &Session, schema: SchemaRef, plan: &LogicalPlan) -> SchemaRef {
        super::origins::with_origins(schema, plan, &self.catalog, &session.database())
    }

    async fn run_plan(&self, session: &Session, plan: LogicalPlan) -> Result<Output, QueryError> {
        self.run_plan_with(session, plan, None).await
    }

    /// [`Self::run_plan`]; a DML plan given `returned` keeps there the rows
    /// it writes or deletes (RETURNING).
    async fn run_plan_with(
        &self,
        session: &Session,
        plan: LogicalPlan,
        returned: Option<Arc<quiver_exec::dml::Returned>>,
    ) -> Result<Output, QueryError> {
        match &plan {
            LogicalPlan::Ddl(ddl) => {
                return Err(QueryError::Unsupported(format!(
                    "{} is not supported yet",
                    ddl.name()
                )));
            }
            LogicalPlan::Statement(s) => {
                return Err(QueryError::Unsupported(format!(
                    "{} is not supported yet",
                    s.name()
                )));
            }
            LogicalPlan::Copy(_) => {
                return Err(QueryError::Unsupported("COPY is not supported yet".into()));
            }
            _ => {}
        }
        let state = session.state();
        let planned = plan;
        let plan = super::session::optimize(state, &planned)?;
        access::authorize(&self.catalog, session, &access::plan_needs(&plan))?;
        // A search typed in psql is planned as a prepared one is.
        let state = if super::ann_rule::skips_physical_optimizer(&plan) {
            session.search_state()
        } else {
            state
        };
        let physical = state
            .query_planner()
            .create_physical_plan(&plan, state)
            .await?;
        let mut task = session.task_ctx();
        if let Some(returned) = returned {
            task = Arc::new(datafusion::execution::TaskContext::new(
                task.task_id(),
                task.session_id(),
                task.session_config().clone().with_extension(returned),
                task.scalar_functions().clone(),
                task.higher_order_functions().clone(),
                task.aggregate_functions().clone(),
                task.window_functions().clone(),
                task.runtime_env(),
            ));
        }
        if let LogicalPlan::Dml(DmlStatement { op, .. }) = &plan {
            let batches = collect(physical, task).await?;
            let n: u64 = batches
                .iter()
                .filter_map(|b| b.column_by_name("count"))
                .filter_map(|c| {
                    c.as_primitive_opt::<UInt64Type>()
                        .map(|a| a.values().iter().sum::<u64>())
                })
                .sum();
            let n = n as usize;
            let tag = match op {
                WriteOp::Insert(_) => "INSERT".to_string(),
                WriteOp::Delete => "DELETE".to_string(),
                WriteOp::Update => "UPDATE".to_string(),
                WriteOp::Truncate => return Ok(command("TRUNCATE TABLE")),
                other => other.to_string(),
            };
            return Ok(Output::Command { tag, rows: Some(n) });
        }
        let stream = execute_stream(physical, task)?;
        Ok(Output::Rows {
            schema: self.with_origins(
                session,
                Arc::new(plan.schema().as_arrow().clone()),
                &planned,
            ),
            stream,
        })
    }
}
