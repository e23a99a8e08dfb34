//! Rewrites of a statement's syntax before planning: values bound for vector
//! and bit columns wrapped in their conversions, DEFAULT filled in, `B'0101'`
//! literals, and PostgreSQL's column names for functions in FROM.

use super::*;

/// DataFusion refuses at planning time to put text into a vector column, so
/// the values of `INSERT ... VALUES` bound for vector fields are wrapped in
/// `to_vector(value, dim)`, which parses text, converts arrays and checks the
/// dimension; values for `BIT(n)` fields likewise in `to_bit(value, n)`.
/// Parameters are left alone: their type is then inferred from the column,
/// so clients are told they are vectors (or bit strings).
pub(super) fn rewrite_insert_vectors(
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
            let values = match source.body.as_mut() {
                ast::SetExpr::Values(values) => values,
                // `INSERT ... SELECT '[1,2]'`: a string literal takes the
                // type of the column it fills, as PostgreSQL's unknown-typed
                // literals do (a text expression stays text, and is refused).
                body => {
                    return select_literals(body, &mut |j, expr| match targets.get(j) {
                        Some(Some(field)) => wrap_value(&def.fields[*field].field_type, expr),
                        _ => Ok(()),
                    });
                }
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
pub(super) struct NameFunctionColumns;

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
pub(super) fn rewrite_bit_literals<V: ast::VisitMut>(node: &mut V) {
    let _ = ast::visit_expressions_mut(node, |expr| {
        if let ast::Expr::Value(v) = expr
            && let ast::Value::SingleQuotedByteStringLiteral(digits) = &v.value
        {
            let bits = digits
                .chars()
                .count()
                .clamp(1, quiver_vector::column::MAX_BITS as usize);
            *expr = ast::Expr::Function(ast::Function {
                name: ast::ObjectName::from(vec![ast::Ident::new(crate::vector_udf::TO_BIT)]),
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
pub(super) fn fill_default(
    default: &Option<String>,
    expr: &mut ast::Expr,
) -> Result<(), QueryError> {
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
/// Call `f` with the position and expression of every select item of
/// `body`, a plain SELECT, that is a string literal.
fn select_literals(
    body: &mut ast::SetExpr,
    f: &mut dyn FnMut(usize, &mut ast::Expr) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    match body {
        ast::SetExpr::Select(select) => {
            for (j, item) in select.projection.iter_mut().enumerate() {
                let expr = match item {
                    ast::SelectItem::UnnamedExpr(e)
                    | ast::SelectItem::ExprWithAlias { expr: e, .. } => e,
                    _ => continue,
                };
                if let ast::Expr::Value(v) = expr
                    && matches!(
                        v.value,
                        ast::Value::SingleQuotedString(_)
                            | ast::Value::EscapedStringLiteral(_)
                            | ast::Value::DollarQuotedString(_)
                    )
                {
                    f(j, expr)?;
                }
            }
            Ok(())
        }
        ast::SetExpr::Query(query) => select_literals(&mut query.body, f),
        // A UNION's branches resolve their literals to text first
        // (PostgreSQL then refuses text for a vector column, and so does
        // quiver).
        _ => Ok(()),
    }
}

pub(super) fn wrap_value(field_type: &FieldType, expr: &mut ast::Expr) -> Result<(), QueryError> {
    // A timestamp written without seconds, as PostgreSQL reads it.
    if let (FieldType::Timestamp | FieldType::TimestampTz, ast::Expr::Value(v)) =
        (field_type, &mut *expr)
        && let ast::Value::SingleQuotedString(s) = &mut v.value
        && let Some(fixed) = quiver_common::timestamp_text::with_seconds(s)
    {
        *s = fixed;
        return Ok(());
    }
    let (function, size) = match field_type {
        FieldType::Vector { dim } => (crate::vector_udf::TO_VECTOR, *dim),
        FieldType::Bit { bits } => (crate::vector_udf::TO_BIT, *bits),
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
