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

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use super::access::Need;
use crate::exec::ann_search::AnnSearchExec;
use crate::vector::Query;

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
    pub schema: SchemaRef,
    pub needs: BTreeSet<Need>,
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
    let column = crate::vector::udf::VectorColumn::try_from_scalar(value).ok()?;
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
            plan,
            schema,
            needs,
        })
    }

    /// The kept plan with the query of `params`, if it serves them: the
    /// catalog is unchanged and every other parameter is the same.
    pub fn plan_for(
        &self,
        catalog_version: u64,
        params: &ParamValues,
    ) -> Option<Arc<dyn ExecutionPlan>> {
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
        let query = floats(new_value)?;
        swap(&self.plan, &self.params[self.slot], new_value, &query)
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
                let expr = Arc::clone(&p.expr)
                    .transform_up(
                        |e| match (e.as_ref() as &dyn Any).downcast_ref::<Literal>() {
                            Some(l) if l.value() == old => Ok(Transformed::yes(Arc::new(
                                Literal::new(new.clone()),
                            )
                                as Arc<dyn PhysicalExpr>)),
                            _ => Ok(Transformed::no(e)),
                        },
                    )
                    .ok()?
                    .data;
                Some(ProjectionExpr {
                    expr,
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
