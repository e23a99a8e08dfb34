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
use crate::auth::acl::Privilege;
use crate::catalog::{Catalog, CollectionDef, DEFAULT_DATABASE, FieldType};
use crate::exec::copy::CopyIn;
use crate::sql::Statement;
use crate::sql::statement::{AccessStatement, ConflictAction, MaintainVerb};
use crate::storage::Conflict;
use crate::storage::Storage;
use crate::vector::udf::all_udfs;
use datafusion::optimizer::{OptimizerContext, OptimizerRule};

pub struct Engine {
    catalog: Arc<Catalog>,
    storage: Arc<Storage>,
    base: SessionState,
    catalogs: QuiverCatalogList,
    pg_tables: Arc<PgCatalogStaticTables>,
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
    /// The physical plan of the last execution of a plain search, for the
    /// next one with another query vector.
    search: Arc<parking_lot::Mutex<Option<super::search_cache::CachedSearch>>>,
    /// [`Prepared::parameter_fields`], worked out on first use.
    parameters: Arc<std::sync::OnceLock<Vec<Option<FieldRef>>>>,
    /// The result columns' names as PostgreSQL gives them (queries only).
    names: Option<Vec<super::colnames::ColumnName>>,
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
        let Some(plan) = &self.plan else {
            return Ok(vec![]);
        };
        let fields = plan.get_parameter_fields()?;
        let mut numbered: Vec<(usize, Option<FieldRef>)> = fields
            .into_iter()
            .filter_map(|(id, f)| {
                id.trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .map(|n| (n, f))
            })
            .collect();
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
        match (&self.plan, &self.statement) {
            (Some(LogicalPlan::Dml(_)), _) => None,
            (Some(plan), _) => {
                let schema = Arc::new(plan.schema().as_arrow().clone());
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
            (None, Statement::Index(crate::sql::statement::IndexStatement::Show { .. })) => {
                Some(super::index_ddl::indexes_schema())
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

fn empty_def() -> crate::catalog::CollectionDef {
    crate::catalog::CollectionDef {
        id: 0,
        database: String::new(),
        name: String::new(),
        fields: vec![],
        primary_key: None,
        owner: None,
        indexes: vec![],
    }
}

fn collections_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("row_count", DataType::Int64, false),
    ]))
}

fn segments_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("segment_id", DataType::Int64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("deleted_rows", DataType::Int64, false),
        Field::new("size_bytes", DataType::Int64, false),
        Field::new("index_state", DataType::Utf8, false),
    ]))
}

type SegmentRow = (u64, &'static str, u64, u64, u64, &'static str);

fn segments_batch(segs: &[SegmentRow]) -> Result<RecordBatch, QueryError> {
    Ok(RecordBatch::try_new(
        segments_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                segs.iter().map(|s| s.0 as i64),
            )),
            Arc::new(StringArray::from_iter_values(segs.iter().map(|s| s.1))),
            Arc::new(Int64Array::from_iter_values(
                segs.iter().map(|s| s.2 as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                segs.iter().map(|s| s.3 as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                segs.iter().map(|s| s.4 as i64),
            )),
            Arc::new(StringArray::from_iter_values(segs.iter().map(|s| s.5))),
        ],
    )?)
}

/// The rows an `ON CONFLICT (pk) DO UPDATE` writes: proposed rows whose key
/// is new, and existing rows with the assignments applied (`excluded.col`
/// is the proposed value), where the optional WHERE holds.
async fn upsert_rows(
    state: &SessionState,
    def: &crate::catalog::CollectionDef,
    data: &crate::storage::CollectionData,
    pk: usize,
    proposed: RecordBatch,
    assignments: &[ast::Assignment],
    selection: Option<Box<ast::Expr>>,
) -> Result<RecordBatch, QueryError> {
    use arrow::array::{Array, UInt32Array};
    use datafusion::common::DFSchema;
    use datafusion::sql::sqlparser::ast::ExprWithAlias;
    let schema = data.schema();
    let existing = data.rows_by_key(proposed.column(pk)).await?;
    let key_of = |a: &arrow::array::ArrayRef, i: usize| -> String {
        arrow::util::display::array_value_to_string(a, i).unwrap_or_default()
    };
    let mut by_key = std::collections::HashMap::new();
    for i in 0..existing.num_rows() {
        by_key.insert(key_of(existing.column(pk), i), i as u32);
    }
    let (mut fresh, mut hit_new, mut hit_old) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..proposed.num_rows() {
        match by_key.get(&key_of(proposed.column(pk), i)) {
            Some(&j) => {
                hit_new.push(i as u32);
                hit_old.push(j);
            }
            None => fresh.push(i as u32),
        }
    }
    let take = |b: &RecordBatch, idx: &[u32]| -> Result<RecordBatch, QueryError> {
        let idx = UInt32Array::from(idx.to_vec());
        let cols = (0..schema.fields().len())
            .map(|c| arrow::compute::take(b.column(c).as_ref(), &idx, None))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    };
    let fresh = take(&proposed, &fresh)?;
    if hit_new.is_empty() {
        return Ok(fresh);
    }
    let old = take(&existing, &hit_old)?;
    let new = take(&proposed, &hit_new)?;
    // Both rows side by side: the collection's columns, then `excluded`'s.
    let df_schema = DFSchema::try_from_qualified_schema(def.name.as_str(), &schema)?
        .join(&DFSchema::try_from_qualified_schema("excluded", &schema)?)?;
    let mut cols = old.columns().to_vec();
    cols.extend(new.columns().iter().cloned());
    let both = RecordBatch::try_new(Arc::new(df_schema.as_arrow().clone()), cols)?;
    let eval = |expr: ast::Expr| -> Result<arrow::array::ArrayRef, QueryError> {
        let logical = state
            .create_logical_expr_from_sql_expr(ExprWithAlias { expr, alias: None }, &df_schema)?;
        let physical = state.create_physical_expr(logical, &df_schema)?;
        Ok(physical.evaluate(&both)?.into_array(both.num_rows())?)
    };
    let mut out = old.columns().to_vec();
    for a in assignments {
        let ast::AssignmentTarget::ColumnName(name) = &a.target else {
            return Err(QueryError::Unsupported(
                "ON CONFLICT DO UPDATE assigns one column at a time".into(),
            ));
        };
        let column = name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.clone())
            .unwrap_or_default();
        let Some(c) = def.field_index(&column) else {
            return Err(QueryError::UnknownColumn {
                column,
                collection: def.name.clone(),
            });
        };
        // `SET v = '[1,2]'`, `SET b = B'01'`: read as the column's type.
        let mut expr = a.value.clone();
        rewrite_bit_literals(&mut expr);
        wrap_value(&def.fields[c].field_type, &mut expr)?;
        let value = eval(expr)?;
        out[c] = arrow::compute::cast(&value, schema.field(c).data_type())?;
    }
    let mut updated = RecordBatch::try_new(schema.clone(), out)?;
    if let Some(mut cond) = selection {
        rewrite_bit_literals(cond.as_mut());
        let keep = eval(*cond)?;
        let keep = keep
            .as_boolean_opt()
            .ok_or_else(|| QueryError::Unsupported("ON CONFLICT WHERE must be boolean".into()))?;
        let keep = arrow::array::BooleanArray::from_iter(
            (0..keep.len()).map(|i| Some(keep.is_valid(i) && keep.value(i))),
        );
        updated = arrow::compute::filter_record_batch(&updated, &keep)?;
    }
    Ok(arrow::compute::concat_batches(&schema, [&fresh, &updated])?)
}

fn show_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]))
}

fn rows(batch: RecordBatch) -> Result<Output, QueryError> {
    let schema = batch.schema();
    let stream = MemoryStream::try_new(vec![batch], schema.clone(), None)?;
    Ok(Output::Rows {
        schema,
        stream: Box::pin(stream),
    })
}

/// `output` with its columns named as PostgreSQL names them (see
/// [`super::colnames`]).
fn named(output: Output, names: Option<&[super::colnames::ColumnName]>) -> Output {
    match (output, names) {
        (Output::Rows { schema, stream }, Some(names)) => Output::Rows {
            schema: super::colnames::rename(&schema, names),
            stream,
        },
        (output, _) => output,
    }
}

fn command(tag: impl Into<String>) -> Output {
    Output::Command {
        tag: tag.into(),
        rows: None,
    }
}

/// DataFusion refuses at planning time to put text into a vector column, so
/// the values of `INSERT ... VALUES` bound for vector fields are wrapped in
/// `to_vector(value, dim)`, which parses text, converts arrays and checks the
/// dimension; values for `BIT(n)` fields likewise in `to_bit(value, n)`.
/// Parameters are left alone: their type is then inferred from the column,
/// so clients are told they are vectors (or bit strings).
fn rewrite_insert_vectors(
    stmt: &mut ast::Statement,
    catalog: &Catalog,
    database: &str,
) -> Result<(), QueryError> {
    let collection = |name: &ast::ObjectName| {
        let (db, coll) = ddl::resolve_name(name, database).ok()?;
        catalog.collection(&db, &coll)
    };
    let column = |def: &CollectionDef, c: &ast::ObjectName| {
        c.0.last()
            .and_then(|p| p.as_ident())
            .and_then(|i| def.field_index(&ddl::ident_name(i)))
    };
    rewrite_bit_literals(stmt);
    let _ = ast::VisitMut::visit(stmt, &mut NameFunctionColumns);
    match stmt {
        ast::Statement::Insert(insert) => {
            let ast::TableObject::TableName(name) = &insert.table else {
                return Ok(());
            };
            let Some(def) = collection(name) else {
                return Ok(());
            };
            let targets: Vec<Option<usize>> = if insert.columns.is_empty() {
                (0..def.fields.len()).map(Some).collect()
            } else {
                insert.columns.iter().map(|c| column(&def, c)).collect()
            };
            let Some(source) = insert.source.as_mut() else {
                return Ok(());
            };
            let ast::SetExpr::Values(values) = source.body.as_mut() else {
                return Ok(());
            };
            for row in values.rows.iter_mut() {
                for (j, expr) in row.iter_mut().enumerate() {
                    if let Some(Some(field)) = targets.get(j) {
                        let field = &def.fields[*field];
                        fill_default(&field.default, expr)?;
                        wrap_value(&field.field_type, expr)?;
                    }
                }
            }
        }
        // `UPDATE c SET v = '[1,2]'`: the same for assigned values.
        ast::Statement::Update(update) => {
            let ast::TableFactor::Table { name, .. } = &update.table.relation else {
                return Ok(());
            };
            let Some(def) = collection(name) else {
                return Ok(());
            };
            for a in update.assignments.iter_mut() {
                let ast::AssignmentTarget::ColumnName(c) = &a.target else {
                    continue;
                };
                if let Some(field) = column(&def, c) {
                    wrap_value(&def.fields[field].field_type, &mut a.value)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `FROM generate_series(1, 3) i`: PostgreSQL names the one column of a
/// function that returns single values after the alias (DataFusion would
/// name it `value`), so the alias names that column too, as `AS i(i)`.
struct NameFunctionColumns;

impl ast::VisitorMut for NameFunctionColumns {
    type Break = ();

    fn pre_visit_table_factor(
        &mut self,
        factor: &mut ast::TableFactor,
    ) -> std::ops::ControlFlow<()> {
        if let ast::TableFactor::Table {
            name,
            alias: Some(alias),
            args: Some(_),
            ..
        } = factor
            && alias.columns.is_empty()
            && name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                i.value.eq_ignore_ascii_case("generate_series")
                    || i.value.eq_ignore_ascii_case("range")
            })
        {
            alias.columns.push(ast::TableAliasColumnDef::from_name(
                alias.name.value.clone(),
            ));
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// PostgreSQL's bit-string literals, `B'0101'`, become `to_bit('0101', 4)`
/// (which checks the digits).
fn rewrite_bit_literals<V: ast::VisitMut>(node: &mut V) {
    let _ = ast::visit_expressions_mut(node, |expr| {
        if let ast::Expr::Value(v) = expr
            && let ast::Value::SingleQuotedByteStringLiteral(digits) = &v.value
        {
            let bits = digits
                .chars()
                .count()
                .clamp(1, crate::vector::udf::MAX_BITS as usize);
            *expr = ast::Expr::Function(ast::Function {
                name: ast::ObjectName::from(vec![ast::Ident::new(crate::vector::udf::TO_BIT)]),
                uses_odbc_syntax: false,
                parameters: ast::FunctionArguments::None,
                args: ast::FunctionArguments::List(ast::FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::value(
                            ast::Value::SingleQuotedString(digits.clone()),
                        ))),
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::value(
                            ast::Value::Number(bits.to_string(), false),
                        ))),
                    ],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// `DEFAULT` in a VALUES row: the column's default, or NULL (which an
/// auto-increment column fills in).
fn fill_default(default: &Option<String>, expr: &mut ast::Expr) -> Result<(), QueryError> {
    let is_default = matches!(expr, ast::Expr::Identifier(i)
        if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"));
    if !is_default {
        return Ok(());
    }
    *expr = match default {
        Some(text) => Parser::new(&PostgreSqlDialect {})
            .try_with_sql(text)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| QueryError::Unsupported(format!("cannot use the default {text}: {e}")))?,
        None => ast::Expr::value(ast::Value::Null),
    };
    Ok(())
}

/// Wrap a value bound for a field of type `field_type` in `to_vector` or
/// `to_bit`; parameters and DEFAULT are left alone.
fn wrap_value(field_type: &FieldType, expr: &mut ast::Expr) -> Result<(), QueryError> {
    let (function, size) = match field_type {
        FieldType::Vector { dim } => (crate::vector::udf::TO_VECTOR, *dim),
        FieldType::Bit { bits } => (crate::vector::udf::TO_BIT, *bits),
        _ => return Ok(()),
    };
    let skip = match expr {
        ast::Expr::Value(v) => matches!(v.value, ast::Value::Placeholder(_)),
        ast::Expr::Identifier(i) => i.value.eq_ignore_ascii_case("default"),
        _ => false,
    };
    if skip {
        return Ok(());
    }
    let call = format!("{function}({expr}, {size})");
    *expr = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&call)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| QueryError::Unsupported(format!("cannot store {expr}: {e}")))?;
    Ok(())
}

impl Engine {
    pub fn new(catalog: Arc<Catalog>, storage: Arc<Storage>) -> Result<Engine, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
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
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_catalog_list(Arc::new(catalogs.clone()))
            .build();
        let ctx = SessionContext::new_with_state(state);
        // Scans of flushed segments read Parquet through the storage's store.
        let scan_url =
            datafusion::execution::object_store::ObjectStoreUrl::parse(crate::storage::SCAN_URL)?;
        ctx.runtime_env()
            .register_object_store(scan_url.as_ref(), storage.io().store().clone());
        for udf in all_udfs() {
            ctx.register_udf(udf);
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
            .with_optimizer_rule(Arc::new(AnnSearchRule))
            .with_query_planner(Arc::new(QuiverQueryPlanner))
            .build();
        let pg_tables = Arc::new(PgCatalogStaticTables::try_new()?);
        Ok(Engine {
            catalog,
            storage,
            base,
            catalogs,
            pg_tables,
        })
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    fn state_for(&self, database: &str, user: &str) -> Result<SessionState, QueryError> {
        let mut config = self
            .base
            .config()
            .clone()
            .with_extension(Arc::new(crate::exec::ann_search::SearchSettings::default()));
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
        };
        let visible = visible.with_schema("pg_catalog", Arc::new(pg_catalog));
        let mut state = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_config(config)
            .with_catalog_list(Arc::new(visible))
            .build();
        // DataFusion ships functions with some of our names (`inner_product`,
        // `cosine_distance`); registering ours last makes them win.
        let udfs = all_udfs()
            .into_iter()
            .chain(super::pg_compat::all_udfs())
            .chain([create_current_database_udf(database)]);
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
        ))
    }

    /// Parse-time planning for the extended protocol.
    pub async fn prepare(
        &self,
        session: &Session,
        statement: Statement,
    ) -> Result<Prepared, QueryError> {
        let planned = match &statement {
            Statement::Tuned { inner, .. } => inner.as_ref(),
            other => other,
        };
        let names = match planned {
            Statement::Query(stmt) => super::colnames::of_statement(stmt),
            _ => None,
        };
        let plan = match planned {
            Statement::Query(stmt) => {
                let mut stmt = stmt.clone();
                rewrite_insert_vectors(&mut stmt, &self.catalog, &session.database())?;
                Some(
                    session
                        .state()
                        .statement_to_plan(DfStatement::Statement(stmt))
                        .await?,
                )
            }
            _ => None,
        };
        // Plans that only read can be optimised before their parameters are
        // known; a rule that cannot handle a parameter leaves it to execution.
        let optimized = match &plan {
            Some(p @ LogicalPlan::Projection(_))
            | Some(p @ LogicalPlan::Sort(_))
            | Some(p @ LogicalPlan::Limit(_))
            | Some(p @ LogicalPlan::Filter(_))
            | Some(p @ LogicalPlan::Aggregate(_)) => session.state().optimize(p).ok(),
            _ => None,
        };
        Ok(Prepared {
            statement,
            plan,
            optimized,
            search: Default::default(),
            parameters: Default::default(),
            names,
        })
    }

    /// Run a prepared statement with its parameter values.
    pub async fn execute_prepared(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: ParamValues,
    ) -> Result<Output, QueryError> {
        let output = self
            .execute_prepared_as_planned(session, prepared, params)
            .await?;
        Ok(named(output, prepared.names.as_deref()))
    }

    async fn execute_prepared_as_planned(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: ParamValues,
    ) -> Result<Output, QueryError> {
        let _tuned = match &prepared.statement {
            Statement::Tuned { ef, nprobe, .. } => session.tune(*ef, *nprobe),
            _ => None,
        };
        if let Some(optimized) = &prepared.optimized {
            let version = self.catalog.version();
            let cached = prepared.search.lock().clone();
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
            let plan = plan.with_param_values(params)?;
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
                let plan = plan.clone().with_param_values(params)?;
                self.run_plan(session, plan).await
            }
            None => self.execute(session, prepared.statement.clone()).await,
        }
    }

    /// Run one statement.
    #[tracing::instrument(skip_all)]
    pub async fn execute(
        &self,
        session: &Session,
        statement: Statement,
    ) -> Result<Output, QueryError> {
        debug!(?statement, "execute");
        match statement {
            Statement::Query(mut stmt) => {
                let names = super::colnames::of_statement(&stmt);
                rewrite_insert_vectors(&mut stmt, &self.catalog, &session.database())?;
                let plan = session
                    .state()
                    .statement_to_plan(DfStatement::Statement(stmt))
                    .await?;
                Ok(named(self.run_plan(session, plan).await?, names.as_deref()))
            }
            Statement::CreateCollection(ct) => {
                let mut def = ddl::collection_def(&ct, &session.database())?;
                access::authorize_database(
                    &self.catalog,
                    session,
                    Privilege::Create,
                    &def.database,
                )?;
                def.owner = Some(session.user().to_string());
                if let Some(def) = self.catalog.create_collection(def, ct.if_not_exists)? {
                    self.storage.open_collection(&def)?;
                }
                Ok(command("CREATE TABLE"))
            }
            Statement::DropCollection { names, if_exists } => {
                // Every name is checked before anything is dropped.
                let mut needs = std::collections::BTreeSet::new();
                for name in &names {
                    let (db, coll) = ddl::resolve_name(name, &session.database())?;
                    if let Some(def) = self.catalog.collection(&db, &coll) {
                        needs.insert(Need::on(Privilege::Drop, &def));
                    }
                }
                access::authorize(&self.catalog, session, &needs)?;
                for name in &names {
                    let (db, coll) = ddl::resolve_name(name, &session.database())?;
                    if let Some(def) = self.catalog.drop_collection(&db, &coll, if_exists)? {
                        self.storage.drop_collection(def.id);
                    }
                }
                Ok(command("DROP TABLE"))
            }
            Statement::DescribeCollection { name } => {
                let (db, coll) = ddl::resolve_name(&name, &session.database())?;
                let def = self.catalog.get_collection(&db, &coll)?;
                self.require_visible(session, &def)?;
                rows(ddl::describe(&def))
            }
            Statement::ShowCollections => {
                let db = session.database();
                let names: Vec<String> = self
                    .catalog
                    .collection_names(&db)
                    .into_iter()
                    .filter(|n| {
                        self.catalog
                            .collection(&db, n)
                            .is_some_and(|d| access::sees(&self.catalog, session.user(), &d))
                    })
                    .collect();
                let counts: Vec<i64> = names
                    .iter()
                    .map(|n| {
                        self.catalog
                            .collection(&db, n)
                            .and_then(|d| self.storage.open_collection(&d).ok())
                            .map(|d| d.snapshot().live_rows() as i64)
                            .unwrap_or(0)
                    })
                    .collect();
                rows(RecordBatch::try_new(
                    collections_schema(),
                    vec![
                        Arc::new(StringArray::from(names)),
                        Arc::new(Int64Array::from(counts)),
                    ],
                )?)
            }
            Statement::CreateDatabase {
                name,
                if_not_exists,
            } => {
                access::authorize_global(&self.catalog, session, Privilege::Create)?;
                self.catalog
                    .create_database_owned(&name, if_not_exists, Some(session.user()))?;
                Ok(command("CREATE DATABASE"))
            }
            Statement::DropDatabase { name, if_exists } => {
                if name == session.database() {
                    return Err(crate::catalog::CatalogError::DropCurrentDatabase { name }.into());
                }
                if self.catalog.database_exists(&name) {
                    access::authorize_database(&self.catalog, session, Privilege::Drop, &name)?;
                }
                self.catalog.drop_database(&name, if_exists)?;
                Ok(command("DROP DATABASE"))
            }
            Statement::CreateExtension { name } => {
                if name.eq_ignore_ascii_case("vector") {
                    Ok(command("CREATE EXTENSION"))
                } else {
                    Err(QueryError::Unsupported(format!(
                        "extension \"{name}\" is not available (vectors are built in)"
                    )))
                }
            }
            Statement::Set { name, value } => {
                session.set_var(&name, &value)?;
                Ok(command("SET"))
            }
            Statement::Show { name } => {
                let value = session.var(&name).ok_or_else(|| {
                    QueryError::InvalidParameter(format!(
                        "unrecognized configuration parameter \"{name}\""
                    ))
                })?;
                rows(RecordBatch::try_new(
                    show_schema(&name),
                    vec![Arc::new(StringArray::from(vec![value]))],
                )?)
            }
            Statement::Transaction(kind) => Ok(Output::Transaction(kind)),
            Statement::CopyFrom(copy) => {
                let (db, coll) = ddl::resolve_name(&copy.table, &session.database())?;
                let def = self.catalog.get_collection(&db, &coll)?;
                access::authorize(
                    &self.catalog,
                    session,
                    &[Need::on(Privilege::Insert, &def)].into(),
                )?;
                let targets = if copy.columns.is_empty() {
                    (0..def.fields.len()).collect()
                } else {
                    copy.columns
                        .iter()
                        .map(|c| {
                            let name = ddl::ident_name(c);
                            def.field_index(&name).ok_or(QueryError::UnknownColumn {
                                column: name,
                                collection: def.name.clone(),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?
                };
                let data = self.storage.open_collection(&def)?;
                Ok(Output::CopyIn(Box::new(CopyIn::new(
                    def,
                    data,
                    targets,
                    copy.options,
                ))))
            }
            Statement::NoOp { tag } => Ok(command(tag)),
            Statement::Maintain { verb, name } => {
                let (db, coll) = ddl::resolve_name(&name, &session.database())?;
                let def = self.catalog.get_collection(&db, &coll)?;
                access::authorize(
                    &self.catalog,
                    session,
                    &[Need::on(Privilege::Maintain, &def)].into(),
                )?;
                let data = self.storage.open_collection(&def)?;
                match verb {
                    MaintainVerb::Flush => data.flush().await?,
                    MaintainVerb::Compact => {
                        data.compact().await?;
                    }
                    MaintainVerb::Load => {
                        data.snapshot().chunks().await?;
                    }
                    MaintainVerb::Release => data.release(),
                }
                Ok(command(verb.tag()))
            }
            Statement::ShowSegments { name } => {
                let (db, coll) = ddl::resolve_name(&name, &session.database())?;
                let def = self.catalog.get_collection(&db, &coll)?;
                self.require_visible(session, &def)?;
                let data = self.storage.open_collection(&def)?;
                rows(segments_batch(&data.segment_rows())?)
            }
            Statement::Upsert { insert, action } => self.upsert(session, insert, action).await,
            Statement::Tuned { ef, nprobe, inner } => {
                let _tuned = session.tune(ef, nprobe);
                Box::pin(self.execute(session, *inner)).await
            }
            Statement::Index(stmt) => {
                match super::index_ddl::execute(&self.catalog, &self.storage, session, stmt).await?
                {
                    super::index_ddl::IndexOutput::Tag(tag) => Ok(command(tag)),
                    super::index_ddl::IndexOutput::Rows(batch) => rows(batch),
                }
            }
            Statement::Access(stmt) => match access::execute(&self.catalog, session, stmt)? {
                access::AccessOutput::Tag(tag) => Ok(command(tag)),
                access::AccessOutput::Rows(batch) => rows(batch),
            },
        }
    }

    /// DESCRIBE and SHOW SEGMENTS need some privilege on the collection.
    fn require_visible(
        &self,
        session: &Session,
        def: &crate::catalog::CollectionDef,
    ) -> Result<(), QueryError> {
        if access::sees(&self.catalog, session.user(), def) {
            Ok(())
        } else {
            Err(
                crate::catalog::CatalogError::from(crate::auth::acl::AccessError::Denied(format!(
                    "{} holds no privilege on collection {}",
                    session.user(),
                    def.name
                )))
                .into(),
            )
        }
    }

    /// `UPSERT INTO` and `INSERT ... ON CONFLICT`.
    async fn upsert(
        &self,
        session: &Session,
        mut insert: Box<ast::Statement>,
        action: ConflictAction,
    ) -> Result<Output, QueryError> {
        rewrite_insert_vectors(&mut insert, &self.catalog, &session.database())?;
        let state = session.state();
        let plan = state
            .statement_to_plan(DfStatement::Statement(insert))
            .await?;
        let LogicalPlan::Dml(DmlStatement {
            table_name, input, ..
        }) = plan
        else {
            return Err(QueryError::Unsupported("expected an INSERT".into()));
        };
        let db = table_name
            .catalog()
            .map(str::to_string)
            .unwrap_or_else(|| session.database());
        let def = self.catalog.get_collection(&db, table_name.table())?;
        let mut needs = access::plan_needs(&input);
        needs.insert(Need::on(Privilege::Insert, &def));
        if !matches!(action, ConflictAction::Nothing) {
            needs.insert(Need::on(Privilege::Update, &def));
        }
        access::authorize(&self.catalog, session, &needs)?;
        let Some(pk) = def.primary_key else {
            return Err(QueryError::NoConflictTarget(def.name.clone()));
        };
        let data = self.storage.open_collection(&def)?;
        let physical = state.create_physical_plan(&input).await?;
        let batches = collect(physical, session.task_ctx()).await?;
        let schema = data.schema();
        let batches = batches
            .into_iter()
            .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = arrow::compute::concat_batches(&schema, &batches)?;
        let n = match action {
            ConflictAction::Replace => data.insert_with(batch, Conflict::Replace).await?,
            ConflictAction::Nothing => data.insert_with(batch, Conflict::Skip).await?,
            ConflictAction::Update {
                assignments,
                selection,
            } => {
                let merged =
                    upsert_rows(state, &def, &data, pk, batch, &assignments, selection).await?;
                data.insert_with(merged, Conflict::Replace).await?
            }
        };
        Ok(Output::Command {
            tag: "INSERT".into(),
            rows: Some(n),
        })
    }

    async fn run_plan(&self, session: &Session, plan: LogicalPlan) -> Result<Output, QueryError> {
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
        let plan = state.optimize(&plan)?;
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
        let task = session.task_ctx();
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
            schema: Arc::new(plan.schema().as_arrow().clone()),
            stream,
        })
    }
}
