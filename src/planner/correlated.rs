//! Correlated scalar subqueries that DataFusion cannot turn into joins.
//!
//! DataFusion decorrelates a scalar subquery only when it is an aggregate
//! correlated by equality. PostgreSQL runs any other one as a subplan, once
//! per outer row: `SELECT id, (SELECT val FROM b WHERE b.k = a.k) FROM a`,
//! `(SELECT count(*) FROM b WHERE b.k < a.k)`, `(... ORDER BY x LIMIT 1)`.
//! quiver does the same: [`CorrelatedSubqueryRule`] runs after DataFusion's
//! own rules and moves each correlated scalar subquery still left in a
//! projection or a filter into a [`CorrelatedApplyNode`] below it, which
//! adds the subquery's value as a column. [`CorrelatedApplyExec`] computes
//! that value per distinct set of outer values: it puts them in the
//! subquery as literals, plans it and runs it. Zero rows give NULL; more
//! than one is 21000, as in PostgreSQL.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use arrow::array::{ArrayRef, RecordBatch, new_empty_array};
use arrow::datatypes::{Field, FieldRef, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    Column, DFSchema, DFSchemaRef, DataFusionError, ParamValues, Result, ScalarValue,
};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::logical_plan::{Filter, Projection, Subquery};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    ColumnarValue, DmlStatement, Expr, Extension, LogicalPlan, LogicalPlanBuilder, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, UserDefinedLogicalNode,
    UserDefinedLogicalNodeCore, Volatility, WriteOp, check_subquery_expr,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerContext, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions, collect,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;
use parking_lot::Mutex;
use quiver_common::interrupt::Interrupt;

/// PostgreSQL's words (SQLSTATE 21000).
pub const MORE_THAN_ONE_ROW: &str =
    "more than one row returned by a subquery used as an expression";

/// Distinct outer values remembered per subquery; past this the memory is
/// let go of and filled again.
const CACHE_ENTRIES: usize = 4096;

/// `input` with one column more per subquery: its value for the row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelatedApplyNode {
    input: LogicalPlan,
    /// `Expr::ScalarSubquery`s, each correlated with `input`'s columns.
    subqueries: Vec<Expr>,
    /// The names of the added columns, in `subqueries`' order.
    names: Vec<String>,
    schema: DFSchemaRef,
}

impl PartialOrd for CorrelatedApplyNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal)
    }
}

impl CorrelatedApplyNode {
    fn try_new(input: LogicalPlan, subqueries: Vec<Expr>, names: Vec<String>) -> Result<Self> {
        let mut fields = Vec::with_capacity(subqueries.len());
        for (subquery, name) in subqueries.iter().zip(&names) {
            let Expr::ScalarSubquery(sq) = subquery else {
                return Err(DataFusionError::Internal(format!(
                    "a correlated apply holds a scalar subquery, not {subquery}"
                )));
            };
            let data_type = sq.subquery.schema().field(0).data_type().clone();
            fields.push(Field::new(name, data_type, true));
        }
        let added = DFSchema::from_unqualified_fields(fields.into(), HashMap::new())?;
        let schema = Arc::new(input.schema().join(&added)?);
        Ok(CorrelatedApplyNode {
            input,
            subqueries,
            names,
            schema,
        })
    }
}

impl CorrelatedApplyNode {
    /// The subqueries' plans, which [`UserDefinedLogicalNodeCore::expressions`]
    /// keeps to itself.
    pub fn subquery_plans(&self) -> impl Iterator<Item = &LogicalPlan> {
        self.subqueries
            .iter()
            .filter_map(subquery_of)
            .map(|sq| sq.subquery.as_ref())
    }

    /// This node with `f` applied to each subquery's plan.
    pub fn map_subquery_plans(
        &self,
        mut f: impl FnMut(LogicalPlan) -> Result<LogicalPlan>,
    ) -> Result<Self> {
        let subqueries = self
            .subqueries
            .iter()
            .map(|e| match e {
                Expr::ScalarSubquery(sq) => {
                    let mut sq = sq.clone();
                    sq.subquery = Arc::new(f(sq.subquery.as_ref().clone())?);
                    Ok(Expr::ScalarSubquery(sq))
                }
                other => Ok(other.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        CorrelatedApplyNode::try_new(self.input.clone(), subqueries, self.names.clone())
    }
}

/// `plan` with `f` applied to every expression, in subqueries too, those
/// that [`CorrelatedApplyNode`]s hold included.
pub fn map_all_expressions(
    plan: LogicalPlan,
    f: &mut dyn FnMut(Expr) -> Result<Transformed<Expr>>,
) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let node = match &node {
            LogicalPlan::Extension(ext) => {
                match ext.node.as_any().downcast_ref::<CorrelatedApplyNode>() {
                    Some(apply) => LogicalPlan::Extension(Extension {
                        node: Arc::new(apply.map_subquery_plans(|p| map_all_expressions(p, f))?),
                    }),
                    None => node,
                }
            }
            _ => node,
        };
        // A node's outputs keep their names (`max(b.k * outer_ref(a.k))`
        // stays the aggregate's name once `a.k` is a value), as
        // `LogicalPlan::with_param_values` keeps them.
        let names = NamePreserver::new(&node);
        node.map_expressions(|e| {
            let saved = names.save(&e);
            Ok(e.transform_up(&mut *f)?.update_data(|e| saved.restore(e)))
        })
    })
    .map(|t| t.data)
}

fn subquery_of(e: &Expr) -> Option<&Subquery> {
    match e {
        Expr::ScalarSubquery(sq) => Some(sq),
        _ => None,
    }
}

/// The input columns `sq` reads from the outer row, if all are `schema`'s.
fn outer_columns(sq: &Subquery, schema: &DFSchema) -> Option<Vec<Column>> {
    let mut out = Vec::new();
    for e in &sq.outer_ref_columns {
        match e {
            Expr::OuterReferenceColumn(_, c) if schema.has_column(c) => {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

impl UserDefinedLogicalNodeCore for CorrelatedApplyNode {
    fn name(&self) -> &str {
        "CorrelatedSubquery"
    }
    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }
    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }
    /// None: DataFusion's plan checks refuse a correlated subquery outside
    /// a projection, filter or aggregate, and its rules must not try to
    /// decorrelate it again. [`Self::subquery_plans`] gives them to those
    /// who must see them (privileges, parameters).
    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }
    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CorrelatedSubquery: {}", self.names.join(", "))
    }
    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let input = inputs
            .pop()
            .ok_or_else(|| DataFusionError::Internal("a correlated apply has one input".into()))?;
        CorrelatedApplyNode::try_new(input, self.subqueries.clone(), self.names.clone())
    }
    /// The input columns asked for, and those the subqueries read.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let input = self.input.schema();
        let n = input.fields().len();
        let mut needed: BTreeSet<usize> =
            output_columns.iter().copied().filter(|&i| i < n).collect();
        for sq in self.subqueries.iter().filter_map(subquery_of) {
            for c in outer_columns(sq, input)? {
                needed.insert(input.index_of_column(&c).ok()?);
            }
        }
        Some(vec![needed.into_iter().collect()])
    }
    /// Filters on the input's columns may go below; those on a subquery's
    /// value may not.
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        self.names.iter().cloned().collect()
    }
}

/// Moves the correlated scalar subqueries DataFusion left in projections
/// and filters into [`CorrelatedApplyNode`]s.
#[derive(Debug, Default)]
pub struct CorrelatedSubqueryRule;

/// Moves, before DataFusion's plan checks refuse them, the correlated scalar
/// subqueries that those checks refuse (one that is not an aggregate, such
/// as `(SELECT val FROM b WHERE b.k = a.k)`). The rest are left to
/// DataFusion's decorrelation, and [`CorrelatedSubqueryRule`] takes what it
/// leaves.
#[derive(Debug, Default)]
pub struct CorrelatedSubqueryAnalyzer;

/// The scalar subqueries of `exprs` correlated with `schema` and picked
/// (first seen first, each once).
fn correlated_in<'a>(
    exprs: impl IntoIterator<Item = &'a Expr>,
    schema: &DFSchema,
    pick: &dyn Fn(&Expr) -> bool,
) -> Vec<Expr> {
    let mut found: Vec<Expr> = Vec::new();
    for e in exprs {
        let _ = e.apply(|e| {
            if let Expr::ScalarSubquery(sq) = e
                && !sq.outer_ref_columns.is_empty()
                && outer_columns(sq, schema).is_some()
                && !found.contains(e)
                && pick(e)
            {
                found.push(e.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    found
}

fn replace(e: Expr, found: &[Expr], names: &[String]) -> Result<Expr> {
    e.transform_down(|e| match found.iter().position(|f| f == &e) {
        Some(i) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
            names[i].clone(),
        )))),
        None => Ok(Transformed::no(e)),
    })
    .map(|t| t.data)
}

fn apply_node(input: LogicalPlan, found: Vec<Expr>) -> Result<(LogicalPlan, Vec<String>)> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let names: Vec<String> = found
        .iter()
        .map(|_| {
            format!(
                "__quiver_subquery_{}",
                NEXT.fetch_add(1, AtomicOrdering::Relaxed)
            )
        })
        .collect();
    let node = CorrelatedApplyNode::try_new(input, found, names.clone())?;
    Ok((
        LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }),
        names,
    ))
}

/// `plan` (a projection or a filter) with the picked correlated subqueries
/// moved into a [`CorrelatedApplyNode`] below it.
fn move_subqueries(
    plan: LogicalPlan,
    pick: &dyn Fn(&LogicalPlan, &Expr) -> bool,
) -> Result<Transformed<LogicalPlan>> {
    match plan {
        LogicalPlan::Projection(p) => {
            let found = {
                let whole = LogicalPlan::Projection(p.clone());
                correlated_in(&p.expr, p.input.schema(), &|e| pick(&whole, e))
            };
            if found.is_empty() {
                return Ok(Transformed::no(LogicalPlan::Projection(p)));
            }
            let preserver = NamePreserver::new_for_projection();
            let (input, names) = apply_node(p.input.as_ref().clone(), found.clone())?;
            let exprs = p
                .expr
                .into_iter()
                .map(|e| {
                    let saved = preserver.save(&e);
                    Ok(saved.restore(replace(e, &found, &names)?))
                })
                .collect::<Result<Vec<_>>>()?;
            let projection = Projection::try_new(exprs, Arc::new(input))?;
            Ok(Transformed::yes(LogicalPlan::Projection(projection)))
        }
        LogicalPlan::Filter(f) => {
            let found = {
                let whole = LogicalPlan::Filter(f.clone());
                correlated_in([&f.predicate], f.input.schema(), &|e| pick(&whole, e))
            };
            if found.is_empty() {
                return Ok(Transformed::no(LogicalPlan::Filter(f)));
            }
            let columns: Vec<Expr> = f
                .input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            let (input, names) = apply_node(f.input.as_ref().clone(), found.clone())?;
            let predicate = replace(f.predicate, &found, &names)?;
            let filter = Filter::try_new(predicate, Arc::new(input))?;
            // The filter's parents see the columns they saw before.
            let projection = Projection::try_new(columns, Arc::new(LogicalPlan::Filter(filter)))?;
            Ok(Transformed::yes(LogicalPlan::Projection(projection)))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// Whether `plan` is an UPDATE or DELETE: DataFusion hands their WHERE and
/// SET to the table as expressions over its columns, where a subquery's
/// value as a column of another node cannot be seen.
fn changes_rows(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Dml(DmlStatement {
            op: WriteOp::Update | WriteOp::Delete,
            ..
        })
    )
}

impl OptimizerRule for CorrelatedSubqueryRule {
    fn name(&self) -> &str {
        "quiver_correlated_subquery"
    }
    fn apply_order(&self) -> Option<ApplyOrder> {
        None
    }
    fn supports_rewrite(&self) -> bool {
        true
    }
    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if changes_rows(&plan) {
            return Ok(Transformed::no(plan));
        }
        plan.transform_up_with_subqueries(|node| move_subqueries(node, &|_, _| true))
    }
}

impl AnalyzerRule for CorrelatedSubqueryAnalyzer {
    fn name(&self) -> &str {
        "quiver_correlated_subquery"
    }
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let plan = nullable_subqueries(plan)?;
        if changes_rows(&plan) && refers_to_outer(&plan) {
            // DataFusion would make a join of it, whose columns the table's
            // UPDATE or DELETE does not see ("No field named ...").
            return Err(DataFusionError::NotImplemented(
                "ScalarSubquery that refers to the target of an UPDATE or DELETE".into(),
            ));
        }
        // Also a subquery that unnests a value of the outer row (psql's
        // `ARRAY(SELECT ... FROM unnest(tc.reloptions) x)`): DataFusion
        // accepts it but cannot decorrelate it, leaving the outer column
        // inside the join it makes.
        let refused = |outer: &LogicalPlan, e: &Expr| match e {
            Expr::ScalarSubquery(sq) => {
                check_subquery_expr(outer, &sq.subquery, e).is_err()
                    || (!sq.outer_ref_columns.is_empty()
                        && sq
                            .subquery
                            .exists(|p| Ok(matches!(p, LogicalPlan::Unnest(_))))
                            .unwrap_or(false))
            }
            _ => false,
        };
        if changes_rows(&plan) {
            return Ok(plan);
        }
        plan.transform_up_with_subqueries(|node| move_subqueries(node, &refused))
            .map(|t| t.data)
    }
}

/// Whether `plan` holds a scalar subquery that refers to an outer query.
fn refers_to_outer(plan: &LogicalPlan) -> bool {
    crate::session::any_expr(
        plan,
        &mut |e| matches!(e, Expr::ScalarSubquery(sq) if !sq.outer_ref_columns.is_empty()),
    )
}

/// Whether `plan` returns one row whatever its input (an aggregate without
/// GROUP BY, under projections).
fn one_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => one_row(&p.input),
        LogicalPlan::SubqueryAlias(a) => one_row(&a.input),
        LogicalPlan::Aggregate(a) => a.group_expr.is_empty(),
        _ => false,
    }
}

/// `plan` with every scalar subquery that may find no row made nullable:
/// it is NULL then. DataFusion takes its nullability from the subquery's
/// column, so `(SELECT b.id FROM b WHERE ...) IS NULL` over a NOT NULL
/// `b.id` was folded to false, and `SELECT (SELECT 1 WHERE false)` failed
/// ("declared as non-nullable but contains null values").
fn nullable_subqueries(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let changed = node.map_expressions(|e| {
            e.transform_up(|e| match e {
                Expr::ScalarSubquery(mut sq)
                    if !one_row(&sq.subquery)
                        && sq.subquery.schema().fields().len() == 1
                        && !sq.subquery.schema().field(0).is_nullable() =>
                {
                    let (qualifier, field) = sq.subquery.schema().qualified_field(0);
                    let column = Expr::Column(Column::from((qualifier, field)));
                    let value = Nullable::udf()
                        .call(vec![column])
                        .alias(field.name().clone());
                    let projection = Projection::try_new(vec![value], sq.subquery.clone())?;
                    sq.subquery = Arc::new(LogicalPlan::Projection(projection));
                    Ok(Transformed::yes(Expr::ScalarSubquery(sq)))
                }
                other => Ok(Transformed::no(other)),
            })
        })?;
        if changed.transformed {
            Ok(Transformed::yes(changed.data.recompute_schema()?))
        } else {
            Ok(changed)
        }
    })
    .map(|t| t.data)
}

/// Its argument, as a nullable value ([`nullable_subqueries`]).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Nullable {
    signature: Signature,
}

impl Nullable {
    fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Nullable {
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for Nullable {
    fn name(&self) -> &str {
        "quiver_subquery_value"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(
        &self,
        arg_types: &[arrow::datatypes::DataType],
    ) -> Result<arrow::datatypes::DataType> {
        arg_types
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("a subquery value has one argument".into()))
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let field = args
            .arg_fields
            .first()
            .ok_or_else(|| DataFusionError::Internal("a subquery value has one argument".into()))?;
        Ok(Arc::new(field.as_ref().clone().with_nullable(true)))
    }
    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        args.args
            .pop()
            .ok_or_else(|| DataFusionError::Internal("a subquery value has one argument".into()))
    }
}

/// One subquery as [`CorrelatedApplyExec`] runs it.
#[derive(Debug)]
struct Sub {
    plan: LogicalPlan,
    /// The outer columns it reads and where they are in the input.
    keys: Vec<(Column, usize)>,
    /// The type each outer value has in the plan (an input column can be
    /// wider: `SELECT 1::int UNION ALL SELECT 2` is bigint).
    key_types: Vec<Option<arrow::datatypes::DataType>>,
    field: Arc<Field>,
    /// The plan optimised once, the outer values as parameters `$1..$n`
    /// bound per run; `None` where that failed (then each run is planned
    /// whole).
    prepared: Option<LogicalPlan>,
    /// Whether it calls a volatile function (`random()`): then it runs for
    /// every row, as in PostgreSQL, not once per distinct outer values.
    volatile: bool,
    cache: Mutex<HashMap<Vec<ScalarValue>, ScalarValue>>,
}

impl Sub {
    fn new(
        plan: LogicalPlan,
        keys: Vec<(Column, usize)>,
        field: Arc<Field>,
        state: &SessionState,
    ) -> Sub {
        let mut key_types = vec![None; keys.len()];
        let prepared = Sub::prepare(&plan, &keys, &mut key_types, state).ok();
        let volatile = crate::session::any_expr(&plan, &mut |e| e.is_volatile_node());
        Sub {
            plan,
            keys,
            key_types,
            field,
            prepared,
            volatile,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The plan with parameters for the outer values; `key_types` gets
    /// each one's type as the plan reads it.
    fn prepare(
        plan: &LogicalPlan,
        keys: &[(Column, usize)],
        key_types: &mut [Option<arrow::datatypes::DataType>],
        state: &SessionState,
    ) -> Result<LogicalPlan> {
        let with_params = map_all_expressions(plan.clone(), &mut |e| {
            let Expr::OuterReferenceColumn(field, c) = &e else {
                return Ok(Transformed::no(e));
            };
            match keys.iter().position(|(k, _)| k == c) {
                Some(i) => {
                    key_types[i] = Some(field.data_type().clone());
                    Ok(Transformed::yes(Expr::Placeholder(
                        datafusion::logical_expr::expr::Placeholder::new_with_field(
                            format!("${}", i + 1),
                            Some(field.clone()),
                        ),
                    )))
                }
                None => Ok(Transformed::no(e)),
            }
        })?;
        let with_params = without_relation_subqueries(with_params)?;
        // Two rows tell "more than one" from "one".
        let limited = LogicalPlanBuilder::from(with_params)
            .limit(0, Some(2))?
            .build()?;
        crate::session::optimize(state, &limited)
    }
}

/// Plans [`CorrelatedApplyNode`] into [`CorrelatedApplyExec`].
#[derive(Debug, Default)]
pub struct CorrelatedApplyPlanner;

#[async_trait]
impl ExtensionPlanner for CorrelatedApplyPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<CorrelatedApplyNode>() else {
            return Ok(None);
        };
        let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
            return Err(DataFusionError::Internal(
                "a correlated subquery is planned in a session".into(),
            ));
        };
        let [input] = physical_inputs else {
            return Err(DataFusionError::Internal(
                "a correlated apply has one input".into(),
            ));
        };
        let in_schema = node.input.schema();
        let mut subs = Vec::new();
        for (e, field) in node
            .subqueries
            .iter()
            .zip(node.schema.fields().iter().skip(in_schema.fields().len()))
        {
            let Some(sq) = subquery_of(e) else {
                return Err(DataFusionError::Internal(format!(
                    "a correlated apply holds a scalar subquery, not {e}"
                )));
            };
            let Some(columns) = outer_columns(sq, in_schema) else {
                return Err(DataFusionError::Internal(
                    "a correlated subquery reads columns its input lacks".into(),
                ));
            };
            let keys = columns
                .into_iter()
                .map(|c| {
                    let i = in_schema.index_of_column(&c)?;
                    Ok((c, i))
                })
                .collect::<Result<Vec<_>>>()?;
            subs.push(Arc::new(Sub::new(
                sq.subquery.as_ref().clone(),
                keys,
                field.clone(),
                state,
            )));
        }
        let schema: SchemaRef = Arc::new(node.schema.as_arrow().clone());
        Ok(Some(Arc::new(CorrelatedApplyExec::new(
            input.clone(),
            subs,
            Arc::new(state.clone()),
            schema,
        ))))
    }
}

/// Adds each correlated subquery's value for every input row.
#[derive(Debug)]
pub struct CorrelatedApplyExec {
    input: Arc<dyn ExecutionPlan>,
    subs: Vec<Arc<Sub>>,
    state: Arc<SessionState>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl CorrelatedApplyExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        subs: Vec<Arc<Sub>>,
        state: Arc<SessionState>,
        schema: SchemaRef,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.properties().output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        CorrelatedApplyExec {
            input,
            subs,
            state,
            schema,
            properties,
        }
    }
}

impl DisplayAs for CorrelatedApplyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.subs.iter().map(|s| s.field.name().as_str()).collect();
        write!(f, "CorrelatedSubqueryExec: {}", names.join(", "))
    }
}

impl ExecutionPlan for CorrelatedApplyExec {
    fn name(&self) -> &str {
        "CorrelatedSubqueryExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("a correlated apply has one input".into()))?;
        let subs = self
            .subs
            .iter()
            .map(|s| {
                Arc::new(Sub {
                    plan: s.plan.clone(),
                    keys: s.keys.clone(),
                    key_types: s.key_types.clone(),
                    field: s.field.clone(),
                    prepared: s.prepared.clone(),
                    volatile: s.volatile,
                    cache: Mutex::new(HashMap::new()),
                })
            })
            .collect();
        Ok(Arc::new(CorrelatedApplyExec::new(
            input,
            subs,
            self.state.clone(),
            self.schema.clone(),
        )))
    }
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let subs = self.subs.clone();
        let state = self.state.clone();
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let stream = input.then(move |batch| {
            let subs = subs.clone();
            let state = state.clone();
            let schema = schema.clone();
            let context = context.clone();
            async move { add_values(batch?, &subs, &state, &context, schema).await }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}

async fn add_values(
    batch: RecordBatch,
    subs: &[Arc<Sub>],
    state: &SessionState,
    context: &Arc<TaskContext>,
    schema: SchemaRef,
) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    for sub in subs {
        let data_type = sub.field.data_type();
        if batch.num_rows() == 0 {
            columns.push(new_empty_array(data_type));
            continue;
        }
        let mut values = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let key = sub
                .keys
                .iter()
                .map(|(_, i)| ScalarValue::try_from_array(batch.column(*i), row))
                .collect::<Result<Vec<_>>>()?;
            let known = match sub.volatile {
                true => None,
                false => sub.cache.lock().get(&key).cloned(),
            };
            let value = match known {
                Some(v) => v,
                None => {
                    // A cancel or statement_timeout stops the rows too,
                    // not only the subqueries' scans.
                    if let Some(interrupt) = context.session_config().get_extension::<Interrupt>() {
                        interrupt
                            .check()
                            .map_err(|c| DataFusionError::External(Box::new(c)))?;
                    }
                    let v = run_once(sub, &key, state, context).await?;
                    if !sub.volatile {
                        let mut cache = sub.cache.lock();
                        if cache.len() >= CACHE_ENTRIES {
                            cache.clear();
                        }
                        cache.insert(key, v.clone());
                    }
                    v
                }
            };
            values.push(value);
        }
        let column: ArrayRef = ScalarValue::iter_to_array(values)?;
        columns.push(column);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The subquery's value for one set of outer values.
async fn run_once(
    sub: &Sub,
    key: &[ScalarValue],
    state: &SessionState,
    context: &Arc<TaskContext>,
) -> Result<ScalarValue> {
    let physical = match &sub.prepared {
        Some(prepared) => {
            let values = sub
                .key_types
                .iter()
                .zip(key)
                .map(|(t, v)| match t {
                    Some(t) => v.cast_to(t).map(Into::into),
                    None => Ok(v.clone().into()),
                })
                .collect::<Result<Vec<_>>>()?;
            let params = ParamValues::List(values);
            // A search's filter holds its parameters out of the plan's
            // expressions.
            let bound = crate::ann_rule::bind_params(prepared.clone(), &params)?
                .with_param_values(params)?;
            // The ANN rewrite needs the query vector, known only now.
            let bound = crate::ann_rule::AnnSearchRule
                .rewrite(bound, &OptimizerContext::new())?
                .data;
            state
                .query_planner()
                .create_physical_plan(&bound, state)
                .await?
        }
        None => plan_whole(sub, key, state).await?,
    };
    let batches = collect(physical, context.clone()).await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let value = match rows {
        0 => ScalarValue::try_from(sub.field.data_type())?,
        1 => {
            let b = batches
                .iter()
                .find(|b| b.num_rows() == 1)
                .ok_or_else(|| DataFusionError::Internal("a row was lost".into()))?;
            ScalarValue::try_from_array(b.column(0), 0)?
        }
        _ => return Err(DataFusionError::Execution(MORE_THAN_ONE_ROW.into())),
    };
    value.cast_to(sub.field.data_type())
}

/// `plan` with its relation subqueries (DataFusion's wrapping of a FROM
/// item that reads the outer row, `unnest(tc.reloptions)`) replaced by
/// their plans: once the outer values are in, they are plain relations,
/// which the physical planner plans and a Subquery node it refuses.
fn without_relation_subqueries(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|p| match p {
        LogicalPlan::Subquery(sq) => Ok(Transformed::yes(Arc::unwrap_or_clone(sq.subquery))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// The subquery planned whole for one set of outer values.
async fn plan_whole(
    sub: &Sub,
    key: &[ScalarValue],
    state: &SessionState,
) -> Result<Arc<dyn ExecutionPlan>> {
    let bound = map_all_expressions(sub.plan.clone(), &mut |e| {
        let Expr::OuterReferenceColumn(field, c) = &e else {
            return Ok(Transformed::no(e));
        };
        match sub.keys.iter().position(|(k, _)| k == c) {
            Some(i) => {
                let v = key[i].cast_to(field.data_type())?;
                Ok(Transformed::yes(Expr::Literal(v, None)))
            }
            None => Ok(Transformed::no(e)),
        }
    })?;
    let bound = without_relation_subqueries(bound)?;
    // Two rows tell "more than one" from "one".
    let bound = LogicalPlanBuilder::from(bound).limit(0, Some(2))?.build()?;
    let bound = crate::session::optimize(state, &bound)?;
    state
        .query_planner()
        .create_physical_plan(&bound, state)
        .await
}
