//! `RETURNING` on INSERT, UPDATE and DELETE.
//!
//! The clause is taken off the statement, which runs as it would without
//! it, with a [`Returned`] extension in its session config: the
//! collection's sink or DML action puts there the rows it wrote (inserted
//! rows with their server-assigned values, the new versions of updated
//! rows) or deleted. The clause's expressions are then planned against the
//! collection's columns (qualified by its name or alias) and evaluated on
//! those rows. The command tag stays the statement's (`INSERT 0 n`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, TableReference};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast;

use super::QueryError;
use quiver_exec::dml::Returned;

/// A statement's RETURNING clause, planned.
#[derive(Debug, Clone)]
pub struct Returning {
    /// The output: one field per item (`*` expanded).
    pub schema: SchemaRef,
    exprs: Vec<Expr>,
    /// The rows' schema, qualified by the collection's name or alias.
    input: Arc<DFSchema>,
    /// The command tag (`INSERT 0`, `UPDATE`, `DELETE`).
    pub tag: &'static str,
}

/// The parts of a RETURNING clause taken off its statement.
pub struct Clause {
    items: Vec<ast::SelectItem>,
    /// The collection written.
    pub table: ast::ObjectName,
    /// Its alias, if the statement gave one.
    alias: Option<String>,
    tag: &'static str,
}

/// Take the RETURNING clause off `stmt`, if it has one.
pub fn take(stmt: &mut ast::Statement) -> Option<Clause> {
    let table_of = |t: &ast::TableWithJoins| match &t.relation {
        ast::TableFactor::Table { name, alias, .. } => {
            Some((name.clone(), alias.as_ref().map(|a| a.name.value.clone())))
        }
        _ => None,
    };
    let (items, (table, alias), tag) = match stmt {
        ast::Statement::Insert(ins) => {
            let ast::TableObject::TableName(name) = &ins.table else {
                return None;
            };
            let items = ins.returning.take()?;
            // The alias only names the columns RETURNING reads (DataFusion
            // plans no INSERT with one).
            let alias = ins.table_alias.take().map(|a| a.alias.value);
            (items, (name.clone(), alias), "INSERT 0")
        }
        ast::Statement::Update(up) => {
            let target = table_of(&up.table)?;
            (up.returning.take()?, target, "UPDATE")
        }
        ast::Statement::Delete(del) => {
            let from = match &del.from {
                ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => t,
            };
            let target = table_of(from.first()?)?;
            (del.returning.take()?, target, "DELETE")
        }
        _ => return None,
    };
    Some(Clause {
        items,
        table,
        alias,
        tag,
    })
}

impl Clause {
    /// Plan the clause over the rows of a collection whose columns are
    /// `columns` (the collection's schema, without hidden columns).
    pub fn plan(self, state: &SessionState, columns: SchemaRef) -> Result<Returning, QueryError> {
        let qualifier = match &self.alias {
            Some(a) => a.clone(),
            None => self
                .table
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.clone())
                .unwrap_or_default(),
        };
        let input = Arc::new(DFSchema::try_from_qualified_schema(
            TableReference::bare(qualifier.as_str()),
            &columns,
        )?);
        let mut exprs = Vec::new();
        let mut fields = Vec::new();
        let all = |exprs: &mut Vec<Expr>, fields: &mut Vec<Field>| {
            for (q, f) in input.iter() {
                exprs.push(Expr::Column(datafusion::common::Column::new(
                    q.cloned(),
                    f.name(),
                )));
                fields.push(f.as_ref().clone());
            }
        };
        for item in &self.items {
            let (expr, name) = match item {
                ast::SelectItem::Wildcard(_) => {
                    all(&mut exprs, &mut fields);
                    continue;
                }
                ast::SelectItem::QualifiedWildcard(kind, _) => {
                    let named = match kind {
                        ast::SelectItemQualifiedWildcardKind::ObjectName(n) => {
                            n.0.last()
                                .and_then(|p| p.as_ident())
                                .map(|i| i.value.clone())
                        }
                        _ => None,
                    };
                    if named.as_deref() != Some(qualifier.as_str()) {
                        return Err(QueryError::Unsupported(format!(
                            "RETURNING {item}: only the written collection's columns can be returned"
                        )));
                    }
                    all(&mut exprs, &mut fields);
                    continue;
                }
                ast::SelectItem::UnnamedExpr(e) => (e, None),
                ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                other => {
                    return Err(QueryError::Unsupported(format!(
                        "RETURNING {other} is not supported"
                    )));
                }
            };
            // A subquery is not supported here (DataFusion would look its
            // collections up outside the privilege checks): say so.
            let text = expr.to_string();
            if has_subquery(&text) {
                return Err(QueryError::Unsupported(format!(
                    "subqueries in RETURNING are not supported: {item}"
                )));
            }
            let planned = state.create_logical_expr(&text, &input)?;
            let name = name.unwrap_or_else(|| match expr {
                ast::Expr::Identifier(i) => i.value.clone(),
                ast::Expr::CompoundIdentifier(parts) => {
                    parts.last().map(|i| i.value.clone()).unwrap_or_default()
                }
                ast::Expr::Function(f) => f
                    .name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.value.clone())
                    .unwrap_or_else(|| "?column?".into()),
                _ => "?column?".into(),
            });
            let (_, planned_field) = planned.to_field(&input)?;
            let (data_type, nullable) = (
                planned_field.data_type().clone(),
                planned_field.is_nullable(),
            );
            let field = match &planned {
                // A column keeps its metadata (a vector stays a vector).
                Expr::Column(c) => input
                    .field_with_name(c.relation.as_ref(), &c.name)?
                    .as_ref()
                    .clone()
                    .with_name(name),
                _ => Field::new(name, data_type, nullable),
            };
            fields.push(field);
            exprs.push(planned);
        }
        Ok(Returning {
            schema: Arc::new(Schema::new(fields)),
            exprs,
            input,
            tag: self.tag,
        })
    }
}

/// Whether the SQL text of an expression holds a SELECT (a subquery).
fn has_subquery(text: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    match Tokenizer::new(&PostgreSqlDialect {}, text).tokenize() {
        Ok(tokens) => tokens.iter().any(|t| {
            matches!(t, Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::SELECT)
        }),
        Err(_) => true,
    }
}

impl Returning {
    /// The clause's values for the rows `returned` holds.
    pub fn evaluate(
        &self,
        state: &SessionState,
        returned: &Returned,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let physical: Vec<Arc<dyn PhysicalExpr>> = self
            .exprs
            .iter()
            .map(|e| state.create_physical_expr(e.clone(), &self.input))
            .collect::<datafusion::common::Result<_>>()?;
        let mut out = Vec::new();
        for batch in returned.take() {
            let batch = RecordBatch::try_new(
                Arc::new(self.input.as_arrow().clone()),
                batch.columns().to_vec(),
            )?;
            let columns = physical
                .iter()
                .zip(self.schema.fields())
                .map(|(e, f)| {
                    let v = e.evaluate(&batch)?.into_array(batch.num_rows())?;
                    Ok(if v.data_type() == f.data_type() {
                        v
                    } else {
                        arrow::compute::cast(&v, f.data_type())?
                    })
                })
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            out.push(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        Ok(out)
    }
}
