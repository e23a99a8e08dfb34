//! The ANN rewrite: `ORDER BY distance(col, const) LIMIT k` over a collection
//! scan (with or without a filter) becomes an `AnnSearch` logical node, which
//! is planned into `AnnSearchExec`. `SEARCH` statements are planned as that
//! same SELECT, so both spellings share one plan.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DFSchemaRef, Result, TableReference};
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, TableScan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
    utils::conjunction,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use crate::vector_udf::{metric_of_udf, vector_column_of_scalar};
use quiver_catalog::FieldType;
use quiver_exec::CollectionTable;
use quiver_exec::ann_search::{AnnSearchExec, AnnSearchSpec, DistanceRange};
use quiver_vector::column::BitColumn;
use quiver_vector::{Metric, Query};

/// Logical top-k vector search over one collection.
#[derive(Debug, Clone)]
pub struct AnnSearchNode {
    pub table: Arc<CollectionTable>,
    pub table_name: TableReference,
    pub projection: Option<Vec<usize>>,
    /// The output schema (the replaced scan's projected schema).
    pub schema: DFSchemaRef,
    /// Index of the vector field in the collection schema.
    pub vector_column: usize,
    pub metric: Metric,
    pub query: Query,
    pub k: usize,
    /// Filter over the scan's columns, applied before ranking.
    pub filter: Option<Expr>,
    /// Bounds on the ordering distance, taken out of the filter.
    pub range: Option<DistanceRange>,
}

/// A distance bound by its bits, for equality and hashing.
type BoundKey = Option<(u64, bool)>;

/// What identifies an [`AnnSearchNode`] besides its filter.
type NodeKey = (
    u64,
    String,
    Option<Vec<usize>>,
    usize,
    Metric,
    Vec<u32>,
    usize,
    Option<[BoundKey; 2]>,
);

impl AnnSearchNode {
    fn key(&self) -> NodeKey {
        (
            self.table.def().id,
            self.table_name.to_string(),
            self.projection.clone(),
            self.vector_column,
            self.metric,
            self.query.key(),
            self.k,
            self.range.map(|r| {
                [
                    r.upper.map(|(v, i)| (v.to_bits(), i)),
                    r.lower.map(|(v, i)| (v.to_bits(), i)),
                ]
            }),
        )
    }
}

impl PartialEq for AnnSearchNode {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key() && self.filter == other.filter
    }
}
impl Eq for AnnSearchNode {}
impl Hash for AnnSearchNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
        self.filter.hash(state);
    }
}
impl PartialOrd for AnnSearchNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal)
    }
}

impl UserDefinedLogicalNodeCore for AnnSearchNode {
    fn name(&self) -> &str {
        "AnnSearch"
    }
    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }
    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }
    /// None: the filter is evaluated against the collection's own schema
    /// (the node has no inputs), so rules that resolve expressions against
    /// inputs (e.g. `simplify_expressions`) must leave it alone; it was
    /// simplified before the rewrite.
    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }
    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let field = &self.table.def().fields[self.vector_column].name;
        write!(
            f,
            "AnnSearch: {}, column={field}, metric={}, k={}",
            self.table_name,
            self.metric.name(),
            self.k
        )?;
        if let Some(range) = &self.range {
            write!(f, ", range={range}")?;
        }
        if let Some(filter) = &self.filter {
            write!(f, ", filter={filter}")?;
        }
        Ok(())
    }
    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(self.clone())
    }
}

/// The optimizer rule producing [`AnnSearchNode`].
#[derive(Debug, Default)]
pub struct AnnSearchRule;

/// A distance call `f(column, constant)` resolved down to a table scan.
struct Match {
    metric: Metric,
    column: datafusion::common::Column,
    query: Query,
}

fn match_distance(expr: &Expr) -> Option<Match> {
    let Expr::ScalarFunction(f) = expr else {
        return None;
    };
    let metric = metric_of_udf(&f.func)?;
    let [a, b] = f.args.as_slice() else {
        return None;
    };
    let (column, value) = match (a, b) {
        (Expr::Column(c), other) | (other, Expr::Column(c)) => (c, constant(other)?),
        _ => return None,
    };
    let query = if metric.is_binary() {
        let bits = BitColumn::try_from_array(&value.to_array_of_size(1).ok()?, None).ok()?;
        let (bytes, n) = bits.get(0)?;
        Query::Bits {
            bits: n,
            bytes: bytes.to_vec(),
        }
    } else {
        Query::Float(vector_column_of_scalar(&value).ok()?.get(0)?.to_vec())
    };
    Some(Match {
        metric,
        column: column.clone(),
        query,
    })
}

/// The value of an expression without columns (a literal, or a cast of a
/// bound parameter such as `$1::vector`), folded as the simplifier would.
fn constant(expr: &Expr) -> Option<datafusion::common::ScalarValue> {
    if let Expr::Literal(v, _) = expr {
        return Some(v.clone());
    }
    if !expr.column_refs().is_empty() || expr.is_volatile() {
        return None;
    }
    let simplifier = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(
        datafusion::optimizer::simplify_expressions::SimplifyContext::default(),
    );
    match simplifier.simplify(expr.clone()).ok()? {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

/// Walk from the sort's input down through projections to `[Filter] ->
/// TableScan`, resolving `expr` to the scan's columns on the way.
fn try_ann(expr: &Expr, input: &LogicalPlan, k: usize) -> Result<Option<LogicalPlan>> {
    let mut expr = expr.clone();
    let mut node = input;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                expr = through(&expr, p)?;
                node = p.input.as_ref();
            }
            LogicalPlan::Filter(_) | LogicalPlan::TableScan(_) => break,
            _ => return Ok(None),
        }
    }
    let (scan, filter) = match node {
        LogicalPlan::Filter(f) => match f.input.as_ref() {
            LogicalPlan::TableScan(s) => (s, Some(f.predicate.clone())),
            // Common subexpressions of the filter (a distance bounded on
            // both sides) computed by a projection below it.
            LogicalPlan::Projection(p) => match p.input.as_ref() {
                LogicalPlan::TableScan(s) => (s, Some(through(&f.predicate, p)?)),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        },
        LogicalPlan::TableScan(s) => (s, None),
        _ => return Ok(None),
    };
    // Aliases kept for column names (e.g. by the cast rewrite) do not matter here.
    let expr = expr.unalias_nested().data;
    let Some(m) = match_distance(&expr) else {
        return Ok(None);
    };
    let (filter, range) = split_range(filter, &m);
    let Some(ann) = ann_node(scan, filter, range, m, k)? else {
        return Ok(None);
    };
    // Above the filter, nothing may need a column the scan lacks.
    Ok(replace_leaf(input, &ann).ok())
}

/// `expr` over the output of projection `p`, rewritten over its input.
fn through(expr: &Expr, p: &datafusion::logical_expr::Projection) -> Result<Expr> {
    Ok(expr
        .clone()
        .transform(|e| match &e {
            Expr::Column(c) => match p.schema.index_of_column(c) {
                Ok(i) => Ok(Transformed::yes(p.expr[i].clone().unalias())),
                Err(_) => Ok(Transformed::no(e)),
            },
            _ => Ok(Transformed::no(e)),
        })?
        .data)
}

/// `plan` with the node the walk in [`try_ann`] stopped at (below its
/// projections) replaced by `ann`. Rebuilt along the path: comparing plans
/// for equality would compare the query vector element by element.
fn replace_leaf(plan: &LogicalPlan, ann: &LogicalPlan) -> Result<LogicalPlan> {
    match plan {
        LogicalPlan::Projection(p) => {
            let input = replace_leaf(&p.input, ann)?;
            Ok(LogicalPlan::Projection(
                datafusion::logical_expr::Projection::try_new_with_schema(
                    p.expr.clone(),
                    Arc::new(input),
                    p.schema.clone(),
                )?,
            ))
        }
        _ => Ok(ann.clone()),
    }
}

/// Take the bounds on the distance `m` out of `filter`: conjuncts such as
/// `distance <= 0.5` (what `SEARCH ... WITH (radius, range_filter)`
/// becomes) turn into a range search.
fn split_range(filter: Option<Expr>, m: &Match) -> (Option<Expr>, Option<DistanceRange>) {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Some(filter) = filter else {
        return (None, None);
    };
    let is_distance = |e: &Expr| {
        // Widening to a float keeps the comparison; other casts (to an
        // integer, numeric or text) change it, so they stay in the filter.
        let mut e = e;
        while let Expr::Cast(c) = e {
            if !matches!(
                c.field.data_type(),
                &datafusion::arrow::datatypes::DataType::Float32
                    | &datafusion::arrow::datatypes::DataType::Float64
            ) {
                return false;
            }
            e = &c.expr;
        }
        match_distance(e).is_some_and(|d| {
            d.metric == m.metric && d.column.name == m.column.name && d.query == m.query
        })
    };
    let bound = |e: &Expr| {
        constant(e)?
            .cast_to(&datafusion::arrow::datatypes::DataType::Float64)
            .ok()
            .and_then(|v| match v {
                datafusion::common::ScalarValue::Float64(Some(x)) if !x.is_nan() => Some(x),
                _ => None,
            })
    };
    let mut range = DistanceRange::default();
    let mut rest = Vec::new();
    for c in datafusion::logical_expr::utils::split_conjunction_owned(filter) {
        let taken = match &c {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                // Normalise to `distance op value`.
                let op = if is_distance(left) {
                    Some(*op)
                } else if is_distance(right) {
                    op.swap()
                } else {
                    None
                };
                let value = if is_distance(left) {
                    bound(right)
                } else {
                    bound(left)
                };
                match (op, value) {
                    (Some(Operator::LtEq), Some(v)) if range.upper.is_none() => {
                        range.upper = Some((v, true));
                        true
                    }
                    (Some(Operator::Lt), Some(v)) if range.upper.is_none() => {
                        range.upper = Some((v, false));
                        true
                    }
                    (Some(Operator::GtEq), Some(v)) if range.lower.is_none() => {
                        range.lower = Some((v, true));
                        true
                    }
                    (Some(Operator::Gt), Some(v)) if range.lower.is_none() => {
                        range.lower = Some((v, false));
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !taken {
            rest.push(c);
        }
    }
    let range = (range != DistanceRange::default()).then_some(range);
    (conjunction(rest), range)
}

fn ann_node(
    scan: &TableScan,
    filter: Option<Expr>,
    range: Option<DistanceRange>,
    m: Match,
    k: usize,
) -> Result<Option<LogicalPlan>> {
    if scan.fetch.is_some() || !scan.filters.is_empty() {
        return Ok(None);
    }
    let Ok(provider) = source_as_provider(&scan.source) else {
        return Ok(None);
    };
    let Some(table) = (provider.as_ref() as &dyn std::any::Any).downcast_ref::<CollectionTable>()
    else {
        return Ok(None);
    };
    if scan.projected_schema.index_of_column(&m.column).is_err() {
        return Ok(None);
    }
    let Some(vector_column) = table.def().field_index(&m.column.name) else {
        return Ok(None);
    };
    // A bit operator on a vector column (or the reverse) is left to the
    // distance function, which says what is wrong.
    let is_bit = matches!(
        table.def().fields[vector_column].field_type,
        FieldType::Bit { .. }
    );
    if is_bit != m.metric.is_binary() {
        return Ok(None);
    }
    let table = Arc::new(CollectionTable::new(
        table.def().clone(),
        table.data().clone(),
        Default::default(),
    ));
    let node = AnnSearchNode {
        table,
        table_name: scan.table_name.clone(),
        projection: scan.projection.clone(),
        schema: scan.projected_schema.clone(),
        vector_column,
        metric: m.metric,
        query: m.query,
        k,
        filter,
        range,
    };
    Ok(Some(LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    })))
}

impl OptimizerRule for AnnSearchRule {
    fn name(&self) -> &str {
        "ann_search"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_down(|node| {
            let LogicalPlan::Sort(sort) = &node else {
                return Ok(Transformed::no(node));
            };
            let (Some(k), [order]) = (sort.fetch, sort.expr.as_slice()) else {
                return Ok(Transformed::no(node));
            };
            if !order.asc || order.nulls_first {
                return Ok(Transformed::no(node));
            }
            // AnnSearch emits its rows in this order (NULL distances
            // last), so the sort goes: planning a sort on a distance to a
            // literal vector costs more than the search.
            match try_ann(&order.expr, &sort.input, k)? {
                Some(input) => Ok(Transformed::new(input, true, TreeNodeRecursion::Jump)),
                None => Ok(Transformed::no(node)),
            }
        })
    }
}

/// Plans [`AnnSearchNode`] into [`AnnSearchExec`].
#[derive(Debug, Default)]
pub struct AnnSearchPlanner;

#[async_trait]
impl ExtensionPlanner for AnnSearchPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<AnnSearchNode>() else {
            return Ok(None);
        };
        let def = node.table.def();
        let table_schema = def.arrow_schema();
        let filter = match &node.filter {
            Some(f) => {
                let df_schema =
                    DFSchema::try_from_qualified_schema(node.table_name.clone(), &table_schema)?;
                Some(session.create_physical_expr(f.clone(), &df_schema)?)
            }
            None => None,
        };
        let projection = node
            .projection
            .clone()
            .unwrap_or_else(|| (0..def.fields.len()).collect());
        let spec = AnnSearchSpec {
            collection: def.name.clone(),
            data: node.table.data().clone(),
            vector_column: node.vector_column,
            vector_name: def.fields[node.vector_column].name.clone(),
            projection,
            filter,
            metric: node.metric,
            query: node.query.clone(),
            k: node.k,
            range: node.range,
            index: def.index_for(node.vector_column, node.metric).cloned(),
        };
        let schema = Arc::new(node.schema.as_arrow().clone());
        Ok(Some(Arc::new(AnnSearchExec::new(spec, schema))))
    }
}

/// The physical planner with quiver's extension planners.
#[derive(Debug, Default)]
pub struct QuiverQueryPlanner;

#[async_trait]
impl QueryPlanner for QuiverQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![
            Arc::new(AnnSearchPlanner),
            Arc::new(crate::correlated::CorrelatedApplyPlanner),
        ])
        .create_physical_plan(logical_plan, session)
        .await
    }
}

/// Whether `plan` is projections and limits over one `AnnSearch`: nothing
/// the physical optimizer would change.
pub fn is_plain_search(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => is_plain_search(&p.input),
        LogicalPlan::Limit(l) => is_plain_search(&l.input),
        LogicalPlan::Extension(e) => e.node.as_any().is::<AnnSearchNode>(),
        _ => false,
    }
}

/// Whether the physical optimizer can be skipped for `plan`: a plain
/// search or a plan reading no table, both single-partitioned as planned.
pub fn skips_physical_optimizer(plan: &LogicalPlan) -> bool {
    is_plain_search(plan) || reads_no_table(plan)
}

/// Whether `plan` reads no table: projections and limits over one row or
/// VALUES (`SELECT $1::int`, `SELECT 1`), with no subquery. Such plans are
/// single-partitioned as planned; the physical optimizer has nothing to do
/// in them and costs as much as the rest of the query.
pub fn reads_no_table(plan: &LogicalPlan) -> bool {
    let subquery = plan.expressions().iter().any(|e| {
        e.exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
            ))
        })
        .unwrap_or(true)
    });
    if subquery {
        return false;
    }
    match plan {
        LogicalPlan::Projection(p) => reads_no_table(&p.input),
        LogicalPlan::Limit(l) => reads_no_table(&l.input),
        LogicalPlan::SubqueryAlias(a) => reads_no_table(&a.input),
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => true,
        _ => false,
    }
}

/// Bind parameter values inside `AnnSearch` filters. The node keeps its
/// filter out of [`UserDefinedLogicalNodeCore::expressions`], so
/// `LogicalPlan::with_param_values` does not see it.
pub fn bind_params(
    plan: LogicalPlan,
    params: &datafusion::common::ParamValues,
) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up(|p| {
            let LogicalPlan::Extension(ext) = &p else {
                return Ok(Transformed::no(p));
            };
            if let Some(apply) = ext
                .node
                .as_any()
                .downcast_ref::<crate::correlated::CorrelatedApplyNode>()
            {
                let apply = apply.map_subquery_plans(|sub| {
                    bind_params(sub, params)?.with_param_values(params.clone())
                })?;
                return Ok(Transformed::yes(LogicalPlan::Extension(
                    datafusion::logical_expr::Extension {
                        node: Arc::new(apply),
                    },
                )));
            }
            let Some(node) = ext.node.as_any().downcast_ref::<AnnSearchNode>() else {
                return Ok(Transformed::no(p));
            };
            let Some(filter) = &node.filter else {
                return Ok(Transformed::no(p));
            };
            let bound = filter
                .clone()
                .transform(|e| match &e {
                    Expr::Placeholder(ph) => {
                        let v = params.get_placeholders_with_values(&ph.id)?;
                        Ok(Transformed::yes(Expr::Literal(v.value, v.metadata)))
                    }
                    _ => Ok(Transformed::no(e)),
                })?
                .data;
            let mut node = node.clone();
            node.filter = Some(bound);
            Ok(Transformed::yes(LogicalPlan::Extension(
                datafusion::logical_expr::Extension {
                    node: Arc::new(node),
                },
            )))
        })?
        .data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn plan(ctx: &SessionContext, sql: &str) -> LogicalPlan {
        let df = ctx.sql(sql).await.expect("plans");
        ctx.state().optimize(df.logical_plan()).expect("optimizes")
    }

    #[tokio::test]
    async fn plans_reading_no_table() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT) AS VALUES (1), (2)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        for sql in [
            "SELECT 1",
            "SELECT 1 AS a, 'x' || 'y' AS b",
            "SELECT * FROM (VALUES (1), (2)) AS v(n) LIMIT 1",
        ] {
            assert!(reads_no_table(&plan(&ctx, sql).await), "{sql}");
        }
        for sql in [
            "SELECT a FROM t",
            "SELECT (SELECT max(a) FROM t)",
            "SELECT * FROM (VALUES (3), (1)) AS v(n) ORDER BY n",
        ] {
            assert!(!reads_no_table(&plan(&ctx, sql).await), "{sql}");
        }
    }
}
