//! The physical plan of a prepared vector search, kept for its next
//! executions.
//!
//! A prepared plain search (projections and limits over one `AnnSearch`,
//! e.g. `SELECT id FROM c ORDER BY v <-> $1 LIMIT 10`) usually changes only
//! its query vector from one execution to the next. Binding, the ANN
//! rewrite and physical planning cost about as much as a search over an
//! HNSW index, so the plan of the last execution is kept, and the next one
//! with the same other parameters and the same catalog version swaps the
//! query vector into it: in the search and in any expression that used it
//! (a distance in the select list).
//!
//! Plans of projections and limits over the search (the usual shape) are
//! not even rebuilt: the search runs directly for the new query and the
//! kept projection expressions are evaluated on its rows, without a
//! DataFusion stream per node.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ParamValues, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};

use super::access::Need;
use quiver_exec::ann_search::AnnSearchExec;
use quiver_vector::Query;
use quiver_vector::index::SearchKnobs;

/// A kept plan and what it was made for.
#[derive(Debug, Clone)]
pub struct CachedSearch {
    catalog_version: u64,
    /// The parameters, the query vector's included (its slot is compared
    /// by position only).
    params: Vec<ScalarValue>,
    /// Which parameter is the query vector.
    slot: usize,
    plan: Arc<dyn ExecutionPlan>,
    /// The plan as a direct run, when every node above the search is one
    /// that [`Step`] knows.
    direct: Option<Direct>,
    pub schema: SchemaRef,
    pub needs: BTreeSet<Need>,
}

/// A plain search run without DataFusion streams: the search, then the
/// nodes above it, bottom-up.
#[derive(Debug, Clone)]
struct Direct {
    search: Arc<dyn ExecutionPlan>,
    steps: Vec<Step>,
    schema: SchemaRef,
}

#[derive(Debug, Clone)]
enum Step {
    /// Expressions over the rows below, with the schema of the result.
    Project {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    Limit {
        skip: usize,
        fetch: Option<usize>,
    },
}

impl Direct {
    /// `plan` as a direct run, if it is projections and limits over the
    /// search.
    fn of(plan: &Arc<dyn ExecutionPlan>) -> Option<Direct> {
        let mut steps = Vec::new();
        let mut node = Arc::clone(plan);
        loop {
            let any = node.as_ref() as &dyn Any;
            if any.is::<AnnSearchExec>() {
                break;
            }
            if let Some(p) = any.downcast_ref::<ProjectionExec>() {
                steps.push(Step::Project {
                    exprs: p.expr().iter().map(|e| Arc::clone(&e.expr)).collect(),
                    schema: p.schema(),
                });
            } else if let Some(l) = any.downcast_ref::<GlobalLimitExec>() {
                steps.push(Step::Limit {
                    skip: l.skip(),
                    fetch: l.fetch(),
                });
            } else if let Some(l) = any.downcast_ref::<LocalLimitExec>() {
                steps.push(Step::Limit {
                    skip: 0,
                    fetch: Some(l.fetch()),
                });
            } else if !any.is::<CooperativeExec>() {
                return None;
            }
            let child = match node.children().as_slice() {
                [child] => Arc::clone(child),
                _ => return None,
            };
            node = child;
        }
        steps.reverse();
        let (search, steps) = narrowed(node, steps);
        Some(Direct {
            search,
            steps,
            schema: plan.schema(),
        })
    }

    /// The rows of this plan for the query `new_query`: the literal `old`
    /// in a projection stands for the query and becomes `new`.
    fn stream(
        &self,
        old: &ScalarValue,
        new: &ScalarValue,
        new_query: Vec<f32>,
        knobs: SearchKnobs,
    ) -> Option<SendableRecordBatchStream> {
        let search = (self.search.as_ref() as &dyn Any).downcast_ref::<AnnSearchExec>()?;
        if search.spec().filter.as_ref().is_some_and(|f| uses(f, old)) {
            return None;
        }
        let search = Arc::clone(&self.search);
        let mut steps = self.steps.clone();
        for step in &mut steps {
            if let Step::Project { exprs, .. } = step {
                for e in exprs.iter_mut().filter(|e| uses(e, old)) {
                    *e = replace_literal(e, old, new)?;
                }
            }
        }
        let rows = async move {
            let search = (search.as_ref() as &dyn Any)
                .downcast_ref::<AnnSearchExec>()
                .ok_or_else(|| DataFusionError::Internal("not a search".into()))?;
            let mut batch = search.run_with(Query::Float(new_query), knobs).await?;
            for step in &steps {
                batch = match step {
                    Step::Project { exprs, schema } => {
                        let n = batch.num_rows();
                        let columns = exprs
                            .iter()
                            .map(|e| e.evaluate(&batch)?.into_array(n))
                            .collect::<Result<Vec<_>>>()?;
                        RecordBatch::try_new_with_options(
                            Arc::clone(schema),
                            columns,
                            &RecordBatchOptions::new().with_row_count(Some(n)),
                        )?
                    }
                    Step::Limit { skip, fetch } => {
                        let n = batch.num_rows();
                        let from = (*skip).min(n);
                        let len = fetch.map_or(n - from, |f| f.min(n - from));
                        batch.slice(from, len)
                    }
                };
            }
            Ok(batch)
        };
        Some(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::once(rows),
        )))
    }
}

/// The search returning only the columns its first projection reads, and
/// the steps with that projection's columns renumbered. A search of
/// `SELECT id ... ORDER BY v <-> $1` reads `v` to order but need not copy
/// it out. Unchanged when every column is read or no projection comes
/// first (limits aside).
fn narrowed(
    search: Arc<dyn ExecutionPlan>,
    mut steps: Vec<Step>,
) -> (Arc<dyn ExecutionPlan>, Vec<Step>) {
    let Some(first) = steps.iter().position(|s| !matches!(s, Step::Limit { .. })) else {
        return (search, steps);
    };
    let Step::Project { exprs, .. } = &steps[first] else {
        return (search, steps);
    };
    let width = search.schema().fields().len();
    let mut read = vec![false; width];
    for e in exprs {
        for c in collect_columns(e) {
            match read.get_mut(c.index()) {
                Some(r) => *r = true,
                None => return (search, steps),
            }
        }
    }
    let keep: Vec<usize> = (0..width).filter(|&i| read[i]).collect();
    if keep.len() == width {
        return (search, steps);
    }
    let Some(narrow) = (search.as_ref() as &dyn Any)
        .downcast_ref::<AnnSearchExec>()
        .and_then(|s| s.narrowed(&keep))
    else {
        return (search, steps);
    };
    let renumbered: Option<Vec<Arc<dyn PhysicalExpr>>> = exprs
        .iter()
        .map(|e| {
            Arc::clone(e)
                .transform_up(
                    |e| match (e.as_ref() as &dyn Any).downcast_ref::<Column>() {
                        Some(c) => {
                            let at = keep.partition_point(|&k| k < c.index());
                            Ok(Transformed::yes(
                                Arc::new(Column::new(c.name(), at)) as Arc<dyn PhysicalExpr>
                            ))
                        }
                        None => Ok(Transformed::no(e)),
                    },
                )
                .ok()
                .map(|t| t.data)
        })
        .collect();
    let Some(renumbered) = renumbered else {
        return (search, steps);
    };
    if let Step::Project { exprs, .. } = &mut steps[first] {
        *exprs = renumbered;
    }
    (Arc::new(narrow), steps)
}

/// `expr` with the literal `old` replaced by `new`.
fn replace_literal(
    expr: &Arc<dyn PhysicalExpr>,
    old: &ScalarValue,
    new: &ScalarValue,
) -> Option<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(
            |e| match (e.as_ref() as &dyn Any).downcast_ref::<Literal>() {
                Some(l) if l.value() == old => Ok(Transformed::yes(Arc::new(Literal::new(
                    new.clone(),
                ))
                    as Arc<dyn PhysicalExpr>)),
                _ => Ok(Transformed::no(e)),
            },
        )
        .ok()
        .map(|t| t.data)
}

fn param_list(params: &ParamValues) -> Option<Vec<ScalarValue>> {
    match params {
        ParamValues::List(list) => Some(list.iter().map(|p| p.value.clone()).collect()),
        ParamValues::Map(_) => None,
    }
}

/// The floats of a vector parameter, if `value` is one without NULLs.
fn floats(value: &ScalarValue) -> Option<Vec<f32>> {
    if !matches!(
        value,
        ScalarValue::List(_) | ScalarValue::FixedSizeList(_) | ScalarValue::LargeList(_)
    ) {
        return None;
    }
    let column = crate::vector_udf::vector_column_of_scalar(value).ok()?;
    column.get(0).map(<[f32]>::to_vec)
}

/// The AnnSearchExec of a plain search plan.
fn search_of(plan: &Arc<dyn ExecutionPlan>) -> Option<&AnnSearchExec> {
    if let Some(s) = (plan.as_ref() as &dyn Any).downcast_ref::<AnnSearchExec>() {
        return Some(s);
    }
    match plan.children().as_slice() {
        [child] => search_of(child),
        _ => None,
    }
}

impl CachedSearch {
    /// Keep `plan`, made for `params`, if it is a plain search whose query
    /// is one of the parameters.
    pub fn new(
        catalog_version: u64,
        params: &ParamValues,
        plan: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        needs: BTreeSet<Need>,
    ) -> Option<CachedSearch> {
        let params = param_list(params)?;
        let Query::Float(query) = &search_of(&plan)?.spec().query else {
            return None;
        };
        let slot = params
            .iter()
            .position(|p| floats(p).is_some_and(|f| &f == query))?;
        Some(CachedSearch {
            catalog_version,
            params,
            slot,
            direct: Direct::of(&plan),
            plan,
            schema,
            needs,
        })
    }

    /// The new query vector and its parameter value, if the kept plan
    /// serves `params`: the catalog is unchanged and every other parameter
    /// is the same.
    fn serves<'p>(
        &self,
        catalog_version: u64,
        params: &'p ParamValues,
    ) -> Option<(&'p ScalarValue, Vec<f32>)> {
        if catalog_version != self.catalog_version {
            return None;
        }
        let ParamValues::List(list) = params else {
            return None;
        };
        if list.len() != self.params.len() {
            return None;
        }
        let same_others = list
            .iter()
            .zip(&self.params)
            .enumerate()
            .all(|(i, (new, old))| i == self.slot || &new.value == old);
        if !same_others {
            return None;
        }
        let new_value = &list[self.slot].value;
        if new_value.data_type() != self.params[self.slot].data_type() {
            return None;
        }
        Some((new_value, floats(new_value)?))
    }

    /// The rows of the kept plan for the query of `params`, if it serves
    /// them (see [`Self::serves`]); the search runs with `knobs`.
    pub fn stream_for(
        &self,
        catalog_version: u64,
        params: &ParamValues,
        knobs: SearchKnobs,
        context: Arc<TaskContext>,
    ) -> Option<Result<SendableRecordBatchStream>> {
        let (new_value, query) = self.serves(catalog_version, params)?;
        let old = &self.params[self.slot];
        if let Some(direct) = &self.direct {
            return direct.stream(old, new_value, query, knobs).map(Ok);
        }
        let plan = swap(&self.plan, old, new_value, &query)?;
        Some(execute_stream(plan, context))
    }
}

/// `plan` with the query `new_query` in its search, and the literal `old`
/// replaced by `new` in its projections. `None` if another node uses the
/// old query.
fn swap(
    plan: &Arc<dyn ExecutionPlan>,
    old: &ScalarValue,
    new: &ScalarValue,
    new_query: &[f32],
) -> Option<Arc<dyn ExecutionPlan>> {
    if let Some(search) = (plan.as_ref() as &dyn Any).downcast_ref::<AnnSearchExec>() {
        if search.spec().filter.as_ref().is_some_and(|f| uses(f, old)) {
            return None;
        }
        return Some(Arc::new(
            search.with_query(Query::Float(new_query.to_vec())),
        ));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan
        .children()
        .into_iter()
        .map(|c| swap(c, old, new, new_query))
        .collect::<Option<_>>()?;
    if let Some(projection) = (plan.as_ref() as &dyn Any).downcast_ref::<ProjectionExec>() {
        let exprs: Vec<ProjectionExpr> = projection
            .expr()
            .iter()
            .map(|p| {
                Some(ProjectionExpr {
                    expr: replace_literal(&p.expr, old, new)?,
                    alias: p.alias.clone(),
                })
            })
            .collect::<Option<_>>()?;
        let child = children.into_iter().next()?;
        return ProjectionExec::try_new(exprs, child)
            .ok()
            .map(|p| Arc::new(p) as Arc<dyn ExecutionPlan>);
    }
    let mut found = false;
    let _ = plan.apply_expressions(&mut |e| {
        found |= uses(e, old);
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if found {
        return None;
    }
    replace_children_if_necessary(Arc::clone(plan), children).ok()
}

/// Whether `expr` holds the literal `value`.
fn uses(expr: &Arc<dyn PhysicalExpr>, value: &ScalarValue) -> bool {
    let mut found = false;
    let _ = expr.apply(|e| {
        if (e.as_ref() as &dyn Any)
            .downcast_ref::<Literal>()
            .is_some_and(|l| l.value() == value)
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}
