//! `ARRAY(SELECT x FROM ... WHERE ...)`, PostgreSQL's array of a
//! subquery's rows (psql's `\du` reads role memberships so), which
//! DataFusion does not plan: rewritten to `COALESCE((SELECT array_agg(x)
//! FROM ... WHERE ...), ARRAY[])`, the same array (empty, not NULL, when
//! there are no rows). Only a plain one-column subquery is rewritten.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, Expr, FunctionArguments, SetExpr};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

/// `text` as an expression.
fn parse_expr(text: &str) -> Result<Expr, ParserError> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
}

/// `text` as a query.
fn parse_query(text: &str) -> Result<Box<ast::Query>, ParserError> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_query())
}

/// Rewrite every `ARRAY(subquery)` of `stmt` that can be.
pub fn rewrite(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |e| {
        if let Some(new) = rewritten(e) {
            *e = new;
        }
        ControlFlow::<()>::Continue(())
    });
}

fn rewritten(e: &Expr) -> Option<Expr> {
    let Expr::Function(f) = e else { return None };
    let [name] = f.name.0.as_slice() else {
        return None;
    };
    let ident = name.as_ident()?;
    if ident.quote_style.is_some() || !ident.value.eq_ignore_ascii_case("array") {
        return None;
    }
    let FunctionArguments::Subquery(q) = &f.args else {
        return None;
    };
    if q.with.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let [item] = select.projection.as_slice() else {
        return None;
    };
    let value = match item {
        ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return None,
    };
    if select.distinct.is_some() || select.having.is_some() || select.from.is_empty() {
        return None;
    }
    if !matches!(&select.group_by, ast::GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty())
    {
        return None;
    }
    let from: Vec<String> = select.from.iter().map(|t| t.to_string()).collect();
    let filter = select
        .selection
        .as_ref()
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    // `ORDER BY` orders the elements (`ORDER BY 1`: by the value).
    let order = match &q.order_by {
        None => String::new(),
        Some(ast::OrderBy {
            kind: ast::OrderByKind::Expressions(keys),
            interpolate: None,
        }) => {
            let keys: Vec<String> = keys
                .iter()
                .map(|k| {
                    let by_position = matches!(&k.expr, Expr::Value(v)
                        if matches!(&v.value, ast::Value::Number(n, _) if n == "1"));
                    let expr = if by_position {
                        value.to_string()
                    } else {
                        k.expr.to_string()
                    };
                    format!("{expr}{}", k.options)
                })
                .collect();
            format!(" ORDER BY {}", keys.join(", "))
        }
        Some(_) => return None,
    };
    let text = format!(
        "COALESCE((SELECT array_agg({value}{order}) FROM {}{filter}), ARRAY[])",
        from.join(", ")
    );
    parse_expr(&text).ok()
}

/// `FROM unnest(a) x`: in PostgreSQL the alias of a function returning
/// one column names the column too (psql's `\d+` reads `unnest(reloptions)
/// x` so); DataFusion names only the relation. Written as `x(x)`.
pub fn name_unnest_columns(stmt: &mut ast::Statement) {
    use ast::{TableAliasColumnDef, TableFactor, VisitMut, VisitorMut};
    struct Names;
    impl VisitorMut for Names {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let alias = match factor {
                TableFactor::UNNEST {
                    alias: Some(alias),
                    array_exprs,
                    with_offset: false,
                    with_ordinality: false,
                    ..
                } if array_exprs.len() == 1 => alias,
                TableFactor::Table {
                    name,
                    args: Some(args),
                    alias: Some(alias),
                    ..
                } if args.args.len() == 1
                    && name
                        .0
                        .last()
                        .and_then(|p| p.as_ident())
                        .is_some_and(|i| i.value.eq_ignore_ascii_case("unnest")) =>
                {
                    alias
                }
                _ => return ControlFlow::Continue(()),
            };
            if alias.columns.is_empty() {
                alias.columns = vec![TableAliasColumnDef {
                    name: alias.name.clone(),
                    data_type: None,
                }];
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Names);
}

/// `ORDER BY CASE WHEN x IN (SELECT ...) THEN 0 ELSE 1 END` (Grafana's
/// table list puts the search path's tables first so): DataFusion plans no
/// subquery in a sort. A query whose sort keys hold one is written as a
/// query that computes those keys as hidden columns, sorted by them, and
/// selects the original columns by name:
/// `SELECT a FROM (SELECT x AS a, <key> AS __quiver_order_1 FROM ...)
/// AS __quiver_sorted ORDER BY __quiver_order_1`. Only plain selects whose
/// items all have names are rewritten.
pub fn order_by_subqueries(stmt: &mut ast::Statement) {
    use ast::{SelectItem, VisitMut, VisitorMut};
    fn has_subquery(e: &Expr) -> bool {
        let mut found = false;
        let _ = ast::visit_expressions(e, |e| {
            if matches!(
                e,
                Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. }
            ) {
                found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        found
    }
    fn rewritten(query: &ast::Query) -> Option<ast::Query> {
        let ast::OrderBy {
            kind: ast::OrderByKind::Expressions(keys),
            interpolate: None,
        } = query.order_by.as_ref()?
        else {
            return None;
        };
        if !keys.iter().any(|k| has_subquery(&k.expr)) || query.with.is_some() {
            return None;
        }
        let SetExpr::Select(select) = query.body.as_ref() else {
            return None;
        };
        if select.distinct.is_some() || select.having.is_some() {
            return None;
        }
        if !matches!(&select.group_by, ast::GroupByExpr::Expressions(g, _) if g.is_empty()) {
            return None;
        }
        let mut names = Vec::new();
        for item in &select.projection {
            names.push(match item {
                SelectItem::ExprWithAlias { alias, .. } => alias.clone(),
                SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.clone(),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => parts.last()?.clone(),
                _ => return None,
            });
        }
        let mut inner = select.as_ref().clone();
        let mut outer_keys = Vec::new();
        for (n, key) in keys.iter().enumerate() {
            let positional = matches!(&key.expr, Expr::Value(v)
                if matches!(&v.value, ast::Value::Number(..)));
            let by = if positional {
                key.expr.to_string()
            } else {
                let hidden = format!("__quiver_order_{}", n + 1);
                inner.projection.push(SelectItem::ExprWithAlias {
                    expr: key.expr.clone(),
                    alias: ast::Ident::new(hidden.clone()),
                });
                hidden
            };
            outer_keys.push(format!("{by}{}", key.options));
        }
        let columns: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let text = format!(
            "SELECT {} FROM ({inner}) AS __quiver_sorted ORDER BY {}{}",
            columns.join(", "),
            outer_keys.join(", "),
            query
                .limit_clause
                .as_ref()
                .map(|l| l.to_string())
                .unwrap_or_default(),
        );
        parse_query(&text).ok().map(|q| *q)
    }
    struct Sorts;
    impl VisitorMut for Sorts {
        type Break = ();
        fn post_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
            if let Some(new) = rewritten(query) {
                *query = new;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Sorts);
}

/// `x IN (SELECT ...)` in a select list (Grafana's table list: `CASE WHEN
/// schema IN (<search path>) THEN ...`), which DataFusion plans only in
/// WHERE: written as a test of `x` against the array of the subquery's
/// values (a scalar subquery), with PostgreSQL's three-valued answer (true on a match; false for no rows; NULL when
/// nothing matched and `x` or a row is NULL; false otherwise), `NOT IN`
/// its negation; `EXISTS (...)` likewise, as a count of the rows.
pub fn in_subqueries_in_select_lists(stmt: &mut ast::Statement) {
    use ast::{SelectItem, VisitMut, VisitorMut};
    /// A subquery's one value and its `FROM ... WHERE ...`: written in
    /// place for a plain select (a correlated one keeps its outer
    /// references where they were), else over the subquery as a derived
    /// table.
    fn parts(subquery: &ast::Query) -> (String, String) {
        if subquery.with.is_none()
            && subquery.order_by.is_none()
            && subquery.limit_clause.is_none()
            && subquery.fetch.is_none()
            && let SetExpr::Select(select) = subquery.body.as_ref()
            && select.distinct.is_none()
            && select.having.is_none()
            && !select.from.is_empty()
            && matches!(&select.group_by, ast::GroupByExpr::Expressions(g, _) if g.is_empty())
            && let [SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }] =
                select.projection.as_slice()
        {
            let from: Vec<String> = select.from.iter().map(|t| t.to_string()).collect();
            let filter = select
                .selection
                .as_ref()
                .map(|w| format!(" WHERE {w}"))
                .unwrap_or_default();
            return (
                value.to_string(),
                format!("FROM {}{filter}", from.join(", ")),
            );
        }
        (
            "__quiver_in.v".to_string(),
            format!("FROM ({subquery}) AS __quiver_in(v)"),
        )
    }
    fn rewrite_expr(e: &mut Expr) {
        let _ = ast::visit_expressions_mut(e, |e| {
            let text = match e {
                Expr::Exists { subquery, negated } => {
                    let op = if *negated { "=" } else { ">" };
                    let (_, from) = parts(subquery);
                    format!("((SELECT count(*) {from}) {op} 0)")
                }
                Expr::InSubquery {
                    expr,
                    subquery,
                    negated,
                } => {
                    // The subquery's values as an array (NULL for no rows);
                    // `x` stays outside, where its names resolve.
                    let (v, from) = parts(subquery);
                    let values = format!("(SELECT array_agg({v}) {from})");
                    let test = format!(
                        "(CASE WHEN {values} IS NULL THEN false \
                         WHEN ({expr}) IS NULL THEN NULL \
                         WHEN array_has({values}, {expr}) THEN true \
                         WHEN array_position({values}, NULL) IS NOT NULL THEN NULL \
                         ELSE false END)"
                    );
                    if *negated {
                        format!("(NOT {test})")
                    } else {
                        test
                    }
                }
                _ => return ControlFlow::<()>::Continue(()),
            };
            if let Ok(new) = parse_expr(&text) {
                *e = new;
            }
            ControlFlow::Continue(())
        });
    }
    struct Lists;
    impl VisitorMut for Lists {
        type Break = ();
        fn pre_visit_select(&mut self, select: &mut ast::Select) -> ControlFlow<()> {
            for item in &mut select.projection {
                // A bare EXISTS keeps PostgreSQL's column name `exists`
                // (an IN, `?column?`), which the rewritten form would lose.
                if let SelectItem::UnnamedExpr(e) = item {
                    let name = match e {
                        Expr::Exists { negated: false, .. } => Some("exists"),
                        Expr::Exists { negated: true, .. } | Expr::InSubquery { .. } => {
                            Some("?column?")
                        }
                        _ => None,
                    };
                    if let Some(name) = name {
                        *item = SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias: ast::Ident::with_quote('"', name),
                        };
                    }
                }
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                {
                    rewrite_expr(e);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Lists);
}

/// Functions of a relation's oid that psql calls with the oid quoted
/// (`pg_relation_is_publishable('16385')`, an unknown-typed literal
/// PostgreSQL reads as a regclass).
const OID_FUNCTIONS: [&str; 6] = [
    "pg_relation_is_publishable",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_get_viewdef",
];

/// Quoted oids in calls of [`OID_FUNCTIONS`] as oids (int4).
pub fn quoted_oid_arguments(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Function(f) = e
            && f.name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| OID_FUNCTIONS.contains(&i.value.to_ascii_lowercase().as_str()))
            && let FunctionArguments::List(list) = &mut f.args
            && let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))) =
                list.args.first_mut()
            && let Expr::Value(v) = arg
            && let ast::Value::SingleQuotedString(text) = &v.value
            && !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && let Ok(oid) = parse_expr(&format!("CAST({text} AS INT)"))
        {
            *arg = oid;
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Catalog columns quiver serves as arrays of numbers (oids, column
/// numbers), and as arrays of text.
const NUMERIC_CATALOG_ARRAYS: [&str; 10] = [
    "polroles",
    "indkey",
    "indclass",
    "indcollation",
    "indoption",
    "conkey",
    "confkey",
    "stxkeys",
    "prattrs",
    "extconfig",
];
const TEXT_CATALOG_ARRAYS: [&str; 3] = ["proargmodes", "proargnames", "stxkind"];

/// `pol.polroles = '{0}'` (psql's `\d`): an array literal compared with a
/// catalog array column is an array of that column's type, as PostgreSQL
/// reads it; DataFusion would compare a list with text.
pub fn catalog_array_literals(stmt: &mut ast::Statement) {
    fn column_kind(e: &Expr) -> Option<bool> {
        let name = match e {
            Expr::Identifier(i) => i,
            Expr::CompoundIdentifier(parts) => parts.last()?,
            _ => return None,
        };
        let lower = name.value.to_ascii_lowercase();
        if NUMERIC_CATALOG_ARRAYS.contains(&lower.as_str()) {
            Some(true)
        } else if TEXT_CATALOG_ARRAYS.contains(&lower.as_str()) {
            Some(false)
        } else {
            None
        }
    }
    fn array_of(literal: &Expr, numeric: bool) -> Option<Expr> {
        let Expr::Value(v) = literal else { return None };
        let ast::Value::SingleQuotedString(text) = &v.value else {
            return None;
        };
        let items = quiver_common::pg_array::parse(text).ok()?;
        let mut out = Vec::new();
        for item in items {
            out.push(match item {
                None => "NULL".to_string(),
                Some(i) if numeric => i.trim().parse::<i64>().ok()?.to_string(),
                Some(i) => format!("'{}'", i.replace('\'', "''")),
            });
        }
        let text = if out.is_empty() {
            format!(
                "CAST(ARRAY[] AS {}[])",
                if numeric { "INT" } else { "TEXT" }
            )
        } else {
            format!("ARRAY[{}]", out.join(", "))
        };
        parse_expr(&text).ok()
    }
    let _ = ast::visit_expressions_mut(stmt, |e| {
        if let Expr::BinaryOp { left, op, right } = e
            && matches!(op, ast::BinaryOperator::Eq | ast::BinaryOperator::NotEq)
        {
            if let Some(numeric) = column_kind(left)
                && let Some(array) = array_of(right, numeric)
            {
                **right = array;
            } else if let Some(numeric) = column_kind(right)
                && let Some(array) = array_of(left, numeric)
            {
                **left = array;
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// The functions DataFusion and quiver run in FROM as tables.
const TABLE_FUNCTIONS: [&str; 6] = [
    "generate_series",
    "range",
    "unnest",
    "pg_get_keywords",
    "generate_subscripts",
    "regexp_split_to_table",
];

/// `FROM string_to_array(s, ',') a` (Grafana's search-path lookup): a
/// function returning one value, in FROM, is in PostgreSQL a relation of
/// one row whose column is named by the alias (or, without one, by the
/// function). DataFusion runs only table functions there; the others are
/// written `(SELECT f(...) AS a) AS a`.
pub fn scalar_functions_in_from(stmt: &mut ast::Statement) {
    use ast::{TableFactor, VisitMut, VisitorMut};
    struct Scalars;
    impl VisitorMut for Scalars {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                args: Some(args),
                alias,
                with_hints,
                ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            let function = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.clone());
            let Some(function) = function else {
                return ControlFlow::Continue(());
            };
            let lower = function.to_ascii_lowercase();
            // `generate_series(0, array_upper(pr.prattrs, 1)) s` (psql's
            // `\d`): DataFusion's table function takes constants only; over
            // columns or a subquery it is the unnest of the series as an array.
            let reads_columns = args.args.iter().any(|a| {
                let mut found = false;
                let _ = ast::visit_expressions(a, |e| {
                    if matches!(
                        e,
                        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Subquery(_)
                    ) {
                        found = true;
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                });
                found
            });
            if (lower == "generate_series" || lower == "range") && reads_columns {
                let name_of = alias
                    .as_ref()
                    .map(|a| a.name.clone())
                    .unwrap_or_else(|| ast::Ident::new(function.clone()));
                let column = alias
                    .as_ref()
                    .and_then(|a| a.columns.first().map(|c| c.name.clone()))
                    .unwrap_or_else(|| name_of.clone());
                let text = format!(
                    "SELECT * FROM unnest({name}({})) AS {name_of}({column})",
                    args_text(&args.args)
                );
                if let Ok(query) = parse_query(&text)
                    && let SetExpr::Select(select) = *query.body
                    && let Some(from) = select.from.into_iter().next()
                {
                    *factor = from.relation;
                }
                return ControlFlow::Continue(());
            }
            // `generate_series(...) AS i`: one column, named by the alias.
            if (lower == "generate_series" || lower == "range")
                && let Some(alias) = alias.as_mut()
                && alias.columns.is_empty()
            {
                alias.columns = vec![ast::TableAliasColumnDef {
                    name: alias.name.clone(),
                    data_type: None,
                }];
            }
            if !with_hints.is_empty()
                || TABLE_FUNCTIONS.contains(&lower.as_str())
                || alias.as_ref().is_some_and(|a| a.columns.len() > 1)
            {
                return ControlFlow::Continue(());
            }
            let column = alias
                .as_ref()
                .and_then(|a| a.columns.first().map(|c| c.name.clone()))
                .or_else(|| alias.as_ref().map(|a| a.name.clone()))
                .unwrap_or_else(|| ast::Ident::new(function.clone()));
            let relation = alias
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_else(|| ast::Ident::new(function));
            let call = format!("{name}({})", args_text(&args.args));
            let text = format!("SELECT * FROM (SELECT {call} AS {column}) AS {relation}");
            let parsed = parse_query(&text);
            if let Ok(query) = parsed
                && let SetExpr::Select(select) = *query.body
                && let Some(from) = select.from.into_iter().next()
            {
                *factor = from.relation;
            }
            ControlFlow::Continue(())
        }
    }
    fn args_text(args: &[ast::FunctionArg]) -> String {
        args.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
    let _ = stmt.visit(&mut Scalars);
}

/// `generate_subscripts(a, dim)` in a select list (SQLAlchemy reads index
/// keys with it beside `unnest(a)`), which DataFusion lacks: written as
/// PostgreSQL defines it, `unnest(generate_series(array_lower(a, dim),
/// array_upper(a, dim)))`, which DataFusion's unnest pairs with
/// `unnest(a)` row by row as PostgreSQL does.
pub fn generate_subscripts(stmt: &mut ast::Statement) {
    expand_arrays(stmt);
    composite_fields(stmt);
    let _ = ast::visit_expressions_mut(stmt, |e| {
        let Expr::Function(f) = e else {
            return ControlFlow::<()>::Continue(());
        };
        let is_it = f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
            i.quote_style.is_none() && i.value.eq_ignore_ascii_case("generate_subscripts")
        });
        let FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        if !is_it || list.args.len() != 2 {
            return ControlFlow::Continue(());
        }
        let (
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(array)),
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(dim)),
        ) = (&list.args[0], &list.args[1])
        else {
            return ControlFlow::Continue(());
        };
        let text = format!(
            "unnest(generate_series(array_lower({array}, {dim}), array_upper({array}, {dim})))"
        );
        if let Ok(new) = parse_expr(&text) {
            *e = new;
        }
        ControlFlow::Continue(())
    });
}

/// `pg_index.indkey[0]`: the catalog's int2vector and oidvector columns
/// count from 0 in PostgreSQL; quiver keeps them as arrays, which count
/// from 1, so a subscript of one of them is moved up by one.
pub fn zero_based_catalog_vectors(stmt: &mut ast::Statement) {
    const VECTORS: [&str; 5] = [
        "indkey",
        "indclass",
        "indcollation",
        "indoption",
        "proargtypes",
    ];
    let _ = ast::visit_expressions_mut(stmt, |e| {
        let Expr::CompoundFieldAccess { root, access_chain } = e else {
            return ControlFlow::<()>::Continue(());
        };
        // `indkey[0]`, `i.indkey[0]` (its name in the root or as the last
        // `.name` before the subscript).
        let first = access_chain
            .iter()
            .position(|a| matches!(a, ast::AccessExpr::Subscript(_)));
        let Some(first) = first else {
            return ControlFlow::Continue(());
        };
        let name = match first.checked_sub(1).map(|i| &access_chain[i]) {
            Some(ast::AccessExpr::Dot(Expr::Identifier(i))) => Some(i.value.clone()),
            Some(_) => None,
            None => match root.as_ref() {
                Expr::Identifier(i) => Some(i.value.clone()),
                Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()),
                _ => None,
            },
        };
        if !name.is_some_and(|n| VECTORS.contains(&n.to_ascii_lowercase().as_str())) {
            return ControlFlow::Continue(());
        }
        if let Some(ast::AccessExpr::Subscript(ast::Subscript::Index { index })) =
            access_chain.get_mut(first)
        {
            let old = std::mem::replace(index, Expr::value(ast::Value::Null));
            *index = Expr::BinaryOp {
                left: Box::new(Expr::Nested(Box::new(old))),
                op: ast::BinaryOperator::Plus,
                right: Box::new(Expr::value(ast::Value::Number("1".into(), false))),
            };
        }
        ControlFlow::Continue(())
    });
}

/// The function a `regtype[]` cast of oids becomes: the types' names.
pub const REGTYPE_NAMES: &str = "quiver_regtype_names";

/// `x::regtype::text`: the name of the type with oid `x`, which is what
/// `format_type(x, NULL)` gives (pgcli reads column types so). quiver's
/// regtype is the oid itself, whose text would be the number.
pub fn regtype_text(stmt: &mut ast::Statement) {
    fn is_regtype(t: &ast::DataType) -> bool {
        match t {
            ast::DataType::Custom(name, args) if args.is_empty() => name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("regtype")),
            _ => false,
        }
    }
    fn is_text(t: &ast::DataType) -> bool {
        match t {
            ast::DataType::Text | ast::DataType::Varchar(_) | ast::DataType::String(_) => true,
            ast::DataType::Custom(name, args) if args.is_empty() => {
                name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                    i.value.eq_ignore_ascii_case("text") || i.value.eq_ignore_ascii_case("name")
                })
            }
            _ => false,
        }
    }
    let _ = ast::visit_expressions_mut(stmt, |e| {
        let Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = e
        else {
            return ControlFlow::<()>::Continue(());
        };
        // `proargtypes::regtype[]`: the names of the types, as the text of
        // a regtype[] prints them (pgcli's function completion).
        if let ast::DataType::Array(ast::ArrayElemTypeDef::SquareBracket(item, None)) = data_type
            && is_regtype(item)
            && !matches!(inner.as_ref(), Expr::Value(_))
        {
            let text = format!("{REGTYPE_NAMES}({inner})");
            if let Ok(new) = parse_expr(&text) {
                *e = new;
            }
            return ControlFlow::Continue(());
        }
        if !is_text(data_type) {
            return ControlFlow::Continue(());
        }
        let Expr::Cast {
            expr: oid,
            data_type: reg,
            ..
        } = inner.as_ref()
        else {
            return ControlFlow::Continue(());
        };
        if !is_regtype(reg) || matches!(oid.as_ref(), Expr::Value(_)) {
            return ControlFlow::Continue(());
        }
        let text = format!("format_type({oid}, NULL)");
        if let Ok(new) = parse_expr(&text) {
            *e = new;
        }
        ControlFlow::Continue(())
    });
}

/// `'pg_catalog.array_in'::regproc` (pgjdbc's type lookup compares
/// `typinput` with it): the catalog crate resolves a cast of a function
/// name to regproc by `proname`, so a name qualified with `pg_catalog`
/// loses its schema (every function there is found by its name alone).
/// Returns whether it rewrote anything.
pub fn regproc_names(stmt: &mut ast::Statement) -> bool {
    let mut changed = false;
    let _ = ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Cast {
            expr,
            data_type: ast::DataType::Custom(name, args),
            ..
        } = e
            && args.is_empty()
            && name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("regproc"))
            && let Expr::Value(v) = expr.as_mut()
            && let ast::Value::SingleQuotedString(text) = &mut v.value
            && let Some(bare) = text.strip_prefix("pg_catalog.")
        {
            *text = bare.to_string();
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// `information_schema._pg_expandarray(a)` (pgjdbc's key columns), a
/// set-returning function of records `(x, n)`: written as
/// `unnest(_pg_expandarray(a))`, the unnest of the list of records the
/// function of that name gives.
fn expand_arrays(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |e| {
        let Expr::Function(f) = e else {
            return ControlFlow::<()>::Continue(());
        };
        let is_it = f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| i.value.eq_ignore_ascii_case("_pg_expandarray"));
        if !is_it {
            return ControlFlow::Continue(());
        }
        let mut inner = f.clone();
        inner.name = ast::ObjectName::from(vec![ast::Ident::new("_pg_expandarray")]);
        let text = format!("unnest({inner})");
        if let Ok(new) = parse_expr(&text) {
            *e = new;
        }
        ControlFlow::Continue(())
    });
}

/// `(expr).field`, a field of a record value (pgjdbc's
/// `(information_schema._pg_expandarray(i.indkey)).n`), which DataFusion
/// reads only from columns: written as `get_field(expr, 'field')`.
fn composite_fields(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |e| {
        let Expr::CompoundFieldAccess { root, access_chain } = e else {
            return ControlFlow::<()>::Continue(());
        };
        let Expr::Nested(inner) = root.as_ref() else {
            return ControlFlow::Continue(());
        };
        let [ast::AccessExpr::Dot(Expr::Identifier(field))] = access_chain.as_slice() else {
            return ControlFlow::Continue(());
        };
        let text = format!(
            "get_field({inner}, '{}')",
            field.value.to_ascii_lowercase().replace('\'', "''")
        );
        if let Ok(new) = parse_expr(&text) {
            *e = new;
        }
        ControlFlow::Continue(())
    });
}

/// `x LIKE 'pg/_' || '%' ESCAPE '/'` (SQLAlchemy's schema list): a
/// constant pattern with an escape character other than the backslash,
/// which DataFusion's LIKE takes only, is written with the backslash.
/// A pattern that is not constant text cannot be written so: 0A000 naming
/// the escape. A constant pattern that ends with its escape character is
/// left as it is (DataFusion refuses it).
pub fn like_escapes(stmt: &mut ast::Statement) -> Result<(), crate::ParseError> {
    fn constant(e: &Expr) -> Option<String> {
        match e {
            Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            Expr::Nested(inner) => constant(inner),
            Expr::BinaryOp {
                left,
                op: ast::BinaryOperator::StringConcat,
                right,
            } => Some(constant(left)? + &constant(right)?),
            _ => None,
        }
    }
    let refused = ast::visit_expressions_mut(stmt, |e| {
        let (Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        }) = e
        else {
            return ControlFlow::<char>::Continue(());
        };
        let Some(esc) = escape_char.as_ref().and_then(|v| match &v.value {
            ast::Value::SingleQuotedString(s) if s.chars().count() == 1 && s != "\\" => {
                s.chars().next()
            }
            _ => None,
        }) else {
            return ControlFlow::Continue(());
        };
        let Some(text) = constant(pattern) else {
            return ControlFlow::Break(esc);
        };
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == esc {
                let Some(next) = chars.next() else {
                    return ControlFlow::Continue(());
                };
                out.push('\\');
                out.push(next);
            } else if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        **pattern = Expr::value(ast::Value::SingleQuotedString(out));
        *escape_char = None;
        ControlFlow::Continue(())
    });
    match refused {
        ControlFlow::Break(esc) => Err(crate::ParseError::Unsupported(format!(
            "LIKE ... ESCAPE '{esc}' with a pattern that is not a constant: only the backslash escapes such a pattern"
        ))),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// `regexp_split_to_table(s, p [, flags])`, a set-returning function,
/// becomes `unnest(regexp_split_to_array(s, p [, flags]))`, which
/// DataFusion runs in a select list as PostgreSQL runs the former.
pub fn regexp_split_to_table(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Function(f) = e
            && f.name.0.len() == 1
            && f.name.0[0]
                .as_ident()
                .is_some_and(|i| i.value.eq_ignore_ascii_case("regexp_split_to_table"))
        {
            let mut inner = f.clone();
            inner.name = ast::ObjectName::from(vec![ast::Ident::new("regexp_split_to_array")]);
            let mut outer = f.clone();
            outer.name = ast::ObjectName::from(vec![ast::Ident::new("unnest")]);
            outer.args = ast::FunctionArguments::List(ast::FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(
                    Expr::Function(inner),
                ))],
                clauses: Vec::new(),
            });
            *e = Expr::Function(outer);
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `CAST(format('%I.%I', s, t) AS regclass)` (Metabase's field sync): a
/// cast to regclass of a computed name, which datafusion-pg-catalog
/// resolves only for literals and parameters, becomes a lookup of the
/// relation by its quoted, qualified name (an unqualified name is looked
/// up in schema public). A name that is no relation gives NULL.
pub fn regclass_casts(stmt: &mut ast::Statement) {
    fn is_regclass(t: &ast::DataType) -> bool {
        match t {
            ast::DataType::Regclass => true,
            ast::DataType::Custom(name, args) if args.is_empty() => name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("regclass")),
            _ => false,
        }
    }
    let _ = ast::visit_expressions_mut(stmt, |e| {
        let Expr::Cast {
            expr: operand,
            data_type,
            ..
        } = e
        else {
            return ControlFlow::<()>::Continue(());
        };
        // A computed name: format(...), concat(...), a || b. (An oid
        // column cast to regclass is the other direction, left as it is.)
        let computed = match operand.as_ref() {
            Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                ["format", "concat", "concat_ws", "quote_ident"]
                    .iter()
                    .any(|n| i.value.eq_ignore_ascii_case(n))
            }),
            Expr::BinaryOp {
                op: ast::BinaryOperator::StringConcat,
                ..
            } => true,
            _ => false,
        };
        if !is_regclass(data_type) || !computed {
            return ControlFlow::Continue(());
        }
        let name = format!("CAST(({operand}) AS TEXT)");
        let text = format!(
            "(SELECT max(c.oid) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
             ON c.relnamespace = n.oid WHERE quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             = CASE WHEN strpos({name}, '.') > 0 THEN {name} ELSE 'public.' || {name} END)"
        );
        if let Ok(new) = parse_expr(&text) {
            *e = new;
        }
        ControlFlow::Continue(())
    });
}

#[cfg(test)]
mod tests {
    fn parsed(sql: &str) -> datafusion::sql::sqlparser::ast::Statement {
        datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            sql,
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn regexp_split_to_table_becomes_an_unnest() {
        let mut stmt = parsed("SELECT regexp_split_to_table(prosrc, '\\W+') AS w FROM p");
        super::regexp_split_to_table(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT unnest(regexp_split_to_array(prosrc, '\\W+')) AS w FROM p"
        );
    }

    #[test]
    fn like_escapes_become_backslashes() {
        let mut stmt = parsed("SELECT 1 WHERE n NOT LIKE 'pg/_' || '%' ESCAPE '/'");
        super::like_escapes(&mut stmt).unwrap();
        assert_eq!(stmt.to_string(), "SELECT 1 WHERE n NOT LIKE 'pg\\_%'");
        let mut other = parsed("SELECT 1 WHERE n LIKE p ESCAPE '/'");
        assert!(super::like_escapes(&mut other).is_err());
    }

    #[test]
    fn computed_regclass_casts_look_the_relation_up() {
        let mut stmt =
            parsed("SELECT CAST(format('%I.%I', s, t) AS REGCLASS), attrelid::regclass FROM x");
        super::regclass_casts(&mut stmt);
        let text = stmt.to_string();
        assert!(
            text.contains("SELECT max(c.oid) FROM pg_catalog.pg_class"),
            "{text}"
        );
        assert!(text.contains("attrelid::REGCLASS"), "{text}");
    }

    #[test]
    fn array_of_a_subquery_becomes_an_aggregate() {
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT ARRAY(SELECT b.x FROM t b WHERE b.y = r.y) AS m FROM r",
        )
        .unwrap()
        .remove(0);
        super::rewrite(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT COALESCE((SELECT array_agg(b.x) FROM t b WHERE b.y = r.y), ARRAY[]) AS m FROM r"
        );
    }

    #[test]
    fn an_unnest_alias_names_its_column() {
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT x FROM unnest(ARRAY['a']) x, unnest(ARRAY[1]) AS y(n)",
        )
        .unwrap()
        .remove(0);
        super::name_unnest_columns(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT x FROM UNNEST(ARRAY['a']) x (x), UNNEST(ARRAY[1]) AS y (n)"
        );
    }

    #[test]
    fn subscripts_of_an_array_are_a_series() {
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT unnest(i.indkey), generate_subscripts(i.indkey, 1) AS ord FROM pg_index i",
        )
        .unwrap()
        .remove(0);
        super::generate_subscripts(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT unnest(i.indkey), unnest(generate_series(array_lower(i.indkey, 1), array_upper(i.indkey, 1))) AS ord FROM pg_index i"
        );
    }

    #[test]
    fn catalog_vectors_count_from_zero() {
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT i.indclass[0], indkey[n], tags[0] FROM pg_index i",
        )
        .unwrap()
        .remove(0);
        super::zero_based_catalog_vectors(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT i.indclass[(0) + 1], indkey[(n) + 1], tags[0] FROM pg_index i"
        );
    }

    #[test]
    fn scalar_functions_in_from_are_one_row_relations() {
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT s[i] FROM generate_series(1, 2) AS i, string_to_array(current_setting('search_path'), ',') s, upper('x')",
        )
        .unwrap()
        .remove(0);
        super::scalar_functions_in_from(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT s[i] FROM generate_series(1, 2) AS i (i), (SELECT string_to_array(current_setting('search_path'), ',') AS s) AS s, (SELECT upper('x') AS upper) AS upper"
        );
    }

    #[test]
    fn subqueries_in_sort_keys_become_hidden_columns() {
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT a AS \"table\", b FROM t WHERE c > 0 ORDER BY CASE WHEN a IN (SELECT x FROM u) THEN 0 ELSE 1 END, 1 LIMIT 5",
        )
        .unwrap()
        .remove(0);
        super::order_by_subqueries(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT \"table\", b FROM (SELECT a AS \"table\", b, CASE WHEN a IN (SELECT x FROM u) THEN 0 ELSE 1 END AS __quiver_order_1 FROM t WHERE c > 0) AS __quiver_sorted ORDER BY __quiver_order_1, 1 LIMIT 5"
        );
    }

    #[test]
    fn a_regtype_as_text_is_its_name() {
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT att.atttypid::regtype::text, 'int4'::regtype::text FROM pg_attribute att",
        )
        .unwrap()
        .remove(0);
        super::regtype_text(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT format_type(att.atttypid, NULL), 'int4'::regtype::TEXT FROM pg_attribute att",
        );
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT COALESCE(proallargtypes::regtype[], proargtypes::regtype[])::text[] FROM pg_proc",
        )
        .unwrap()
        .remove(0);
        super::regtype_text(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT COALESCE(quiver_regtype_names(proallargtypes), quiver_regtype_names(proargtypes))::TEXT[] FROM pg_proc"
        );
    }

    #[test]
    fn expanded_arrays_are_unnested_records() {
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT (information_schema._pg_expandarray(i.indkey)).n, (r.keys).x FROM pg_index i, r",
        )
        .unwrap()
        .remove(0);
        super::generate_subscripts(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT get_field(unnest(_pg_expandarray(i.indkey)), 'n'), get_field(r.keys, 'x') FROM pg_index i, r"
        );
    }
}
