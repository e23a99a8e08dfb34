//! The names PostgreSQL gives a query's result columns.
//!
//! DataFusion names an unaliased select item after its expression
//! (`count(*)`, `length(Utf8("abc"))`, `Int64(1)`); PostgreSQL names it
//! after the function called (`count`), the type cast to (`int4`), or
//! `?column?`, and clients read columns by those names (dict rows, ORMs, BI
//! tools). The names are worked out from the statement's syntax, as
//! PostgreSQL does, and put on the result schema sent to the client only:
//! PostgreSQL allows two columns of one name (`SELECT 1, 2`), a DataFusion
//! plan does not.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{
    self, DataType, Expr, ObjectNamePart, SelectItem, SetExpr, TimezoneInfo,
};

/// What to call one select item's column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnName {
    /// DataFusion's name (an item PostgreSQL names in ways not handled here).
    Keep,
    /// This name.
    Named(String),
    /// `*` or `t.*`: as many columns as it expands to, named as they are.
    Expand,
}

/// The result column names of `statement`, one per select item, or `None`
/// for statements whose columns DataFusion already names as PostgreSQL
/// does (or that return no rows).
pub fn of_statement(statement: &ast::Statement) -> Option<Vec<ColumnName>> {
    match statement {
        ast::Statement::Query(query) => of_query(query),
        _ => None,
    }
}

/// Gives the select items of `statement`'s outer query (or an INSERT's
/// source) that repeat an earlier item's name an alias of their own.
/// PostgreSQL allows `SELECT id, id` and `SELECT 1 AS x, 2 AS x`; a
/// DataFusion projection refuses two columns of one name. The names the
/// client sees are worked out before this ([`of_statement`]), so the
/// aliases are never shown.
pub fn alias_duplicates(statement: &mut ast::Statement) {
    name_nested_columns(statement);
    let query = match statement {
        ast::Statement::Query(query) => query,
        ast::Statement::Insert(insert) => match insert.source.as_mut() {
            Some(query) => query,
            None => return,
        },
        _ => return,
    };
    alias_in_set_expr(&mut query.body);
}

/// Gives the unnamed select items of the queries inside `statement`
/// (common table expressions, subqueries in FROM and in expressions) the
/// names PostgreSQL gives them, by which the enclosing query refers to
/// them: `WITH w AS (SELECT x, count(1) FROM t GROUP BY x) SELECT x FROM w
/// ORDER BY count` (pgcli's casing query). An item keeps DataFusion's name
/// where PostgreSQL's would repeat another item's of the same select, or
/// would be `?column?`.
pub fn name_nested_columns(statement: &mut ast::Statement) {
    struct Nested {
        depth: usize,
    }
    impl ast::VisitorMut for Nested {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
            self.depth += 1;
            if self.depth > 1 {
                visit_selects(&mut query.body, &mut name_items);
            }
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _query: &mut ast::Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(statement, &mut Nested { depth: 0 });
}

/// Aliases the unnamed, non-column items of one select by their
/// PostgreSQL names where those are unique in it.
fn name_items(items: &mut [SelectItem]) {
    let names: Vec<Option<String>> = items
        .iter()
        .map(|item| match of_item(item) {
            ColumnName::Named(n) => Some(n),
            _ => None,
        })
        .collect();
    for (i, item) in items.iter_mut().enumerate() {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            continue;
        }
        let Some(name) = names[i].as_ref().filter(|n| *n != "?column?") else {
            continue;
        };
        if names.iter().filter(|n| n.as_ref() == Some(name)).count() > 1 {
            continue;
        }
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: ast::Ident::with_quote('"', name.clone()),
        };
    }
}

fn alias_in_set_expr(body: &mut SetExpr) {
    visit_selects(body, &mut |items| alias_in_select(items));
}

/// [`alias_duplicates`] for every unnamed item: where DataFusion names two
/// different expressions alike (`1::int, 1::bigint`, `id, +id`), which
/// only its refusal tells.
pub fn alias_all(statement: &mut ast::Statement) {
    let ast::Statement::Query(query) = statement else {
        return;
    };
    visit_selects(&mut query.body, &mut |items| {
        for (i, item) in items.iter_mut().enumerate() {
            if let SelectItem::UnnamedExpr(expr) = item {
                *item = SelectItem::ExprWithAlias {
                    expr: expr.clone(),
                    alias: ast::Ident::with_quote('"', format!("?column{i}?")),
                };
            }
        }
    });
}

fn visit_selects(body: &mut SetExpr, f: &mut dyn FnMut(&mut [SelectItem])) {
    match body {
        SetExpr::Select(select) => f(&mut select.projection),
        SetExpr::Query(query) => visit_selects(&mut query.body, f),
        SetExpr::SetOperation { left, right, .. } => {
            visit_selects(left, f);
            visit_selects(right, f);
        }
        _ => {}
    }
}

/// Whether `e` is DataFusion's refusal of two select items it names alike.
pub fn is_duplicate_name_error(e: &datafusion::error::DataFusionError) -> bool {
    e.to_string()
        .contains("Projections require unique expression names")
}

/// An item is aliased when its text or the name PostgreSQL gives it repeats
/// an earlier item's: DataFusion also refuses `a.id, 5 AS id` (a qualified
/// and an unqualified `id`) and `id, id::text`.
fn alias_in_select(items: &mut [SelectItem]) {
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter_mut().enumerate() {
        let unique = |n: usize| ast::Ident::with_quote('"', format!("?column{n}?"));
        let pg_name = match of_item(item) {
            ColumnName::Named(name) if name != "?column?" => Some(name),
            _ => None,
        };
        let repeated_name = pg_name.is_some_and(|n| !seen.insert(format!("name:{n}")));
        match item {
            SelectItem::UnnamedExpr(expr) if !seen.insert(expr.to_string()) || repeated_name => {
                *item = SelectItem::ExprWithAlias {
                    expr: expr.clone(),
                    alias: unique(i),
                };
            }
            SelectItem::ExprWithAlias { alias, .. }
                if !seen.insert(ident_name(alias)) || repeated_name =>
            {
                *alias = unique(i);
            }
            _ => {}
        }
    }
}

fn of_query(query: &ast::Query) -> Option<Vec<ColumnName>> {
    of_set_expr(&query.body)
}

fn of_set_expr(body: &SetExpr) -> Option<Vec<ColumnName>> {
    match body {
        SetExpr::Select(select) => Some(select.projection.iter().map(of_item).collect()),
        SetExpr::Query(query) => of_query(query),
        // A set operation takes its names from its first branch.
        SetExpr::SetOperation { left, .. } => of_set_expr(left),
        _ => None,
    }
}

fn of_item(item: &SelectItem) -> ColumnName {
    match item {
        SelectItem::UnnamedExpr(expr) => match figure(expr) {
            Figure::Name(name, _) => ColumnName::Named(name),
            Figure::Unnamed => ColumnName::Named("?column?".into()),
        },
        // The compatibility rules alias a column that a wildcard beside it
        // also brings (`SELECT *, id`) as `__alias_id`: the client sees
        // its own name.
        SelectItem::ExprWithAlias { alias, expr } if alias.value.starts_with("__alias_") => {
            of_item(&SelectItem::UnnamedExpr(expr.clone()))
        }
        SelectItem::ExprWithAlias { alias, .. } => ColumnName::Named(ident_name(alias)),
        SelectItem::ExprWithAliases { .. } => ColumnName::Keep,
        SelectItem::QualifiedWildcard(..) | SelectItem::Wildcard(..) => ColumnName::Expand,
    }
}

/// A name figured from an expression, with how strongly it names it
/// (PostgreSQL's FigureColname): a cast names its column after its type
/// only when its operand gives no name of its own.
enum Figure {
    /// A name; `true` when it is a column's or a function's, which a cast
    /// keeps.
    Name(String, bool),
    /// Nothing: `?column?`.
    Unnamed,
}

fn figure(expr: &Expr) -> Figure {
    let named = |name: &str| Figure::Name(name.to_string(), false);
    match expr {
        Expr::Identifier(ident) => Figure::Name(ident_name(ident), true),
        Expr::CompoundIdentifier(parts) => parts.last().map_or(Figure::Unnamed, |ident| {
            Figure::Name(ident_name(ident), true)
        }),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => figure(inner),
        Expr::Function(f) => match f.name.0.last() {
            Some(ObjectNamePart::Identifier(ident)) => Figure::Name(ident_name(ident), true),
            _ => Figure::Unnamed,
        },
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => match figure(inner) {
            strong @ Figure::Name(_, true) => strong,
            _ => named(&type_name(data_type)),
        },
        Expr::TypedString(t) => named(&type_name(&t.data_type)),
        Expr::Interval(_) => named("interval"),
        Expr::Case { .. } => named("case"),
        Expr::Array(_) => named("array"),
        Expr::Exists { .. } => named("exists"),
        Expr::Tuple(_) => named("row"),
        Expr::Extract { .. } => Figure::Name("extract".into(), true),
        Expr::Substring { .. } => Figure::Name("substring".into(), true),
        Expr::Position { .. } => Figure::Name("position".into(), true),
        Expr::Overlay { .. } => Figure::Name("overlay".into(), true),
        Expr::Trim { .. } => Figure::Name("btrim".into(), true),
        Expr::Ceil { .. } => Figure::Name("ceil".into(), true),
        Expr::Floor { .. } => Figure::Name("floor".into(), true),
        // A scalar subquery is named after its own first column.
        Expr::Subquery(query) => match of_query(query).as_deref() {
            Some([ColumnName::Named(name), ..]) if name != "?column?" => {
                Figure::Name(name.clone(), true)
            }
            _ => Figure::Unnamed,
        },
        _ => Figure::Unnamed,
    }
}

/// An identifier as PostgreSQL keeps it: folded to lower case unless quoted.
fn ident_name(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// PostgreSQL's name of a type written in a cast (`int` is `int4`).
fn type_name(data_type: &DataType) -> String {
    let name = match data_type {
        DataType::SmallInt(_) | DataType::Int2(_) => "int2",
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4",
        DataType::BigInt(_) | DataType::Int8(_) => "int8",
        DataType::Real | DataType::Float4 => "float4",
        DataType::Float(_) | DataType::Float8 | DataType::Double(_) | DataType::DoublePrecision => {
            "float8"
        }
        DataType::Numeric(_) | DataType::Decimal(_) => "numeric",
        DataType::Bool | DataType::Boolean => "bool",
        DataType::Text | DataType::String(_) => "text",
        DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar",
        DataType::Char(_) | DataType::Character(_) => "bpchar",
        DataType::Date => "date",
        DataType::Time(_, tz) => match tz {
            TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => "timetz",
            _ => "time",
        },
        DataType::Timestamp(_, tz) => match tz {
            TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => "timestamptz",
            _ => "timestamp",
        },
        DataType::Interval { .. } => "interval",
        DataType::Bytea => "bytea",
        DataType::JSON => "json",
        DataType::JSONB => "jsonb",
        DataType::Uuid => "uuid",
        DataType::Regclass => "regclass",
        DataType::Bit(_) => "bit",
        DataType::BitVarying(_) => "varbit",
        // `int[]` names its column after the element type, as PostgreSQL does.
        DataType::Array(
            ast::ArrayElemTypeDef::SquareBracket(inner, _)
            | ast::ArrayElemTypeDef::AngleBracket(inner)
            | ast::ArrayElemTypeDef::Parenthesis(inner),
        ) => return type_name(inner),
        DataType::Custom(name, _) => {
            return match name.0.last() {
                Some(ObjectNamePart::Identifier(ident)) => ident_name(ident),
                _ => "?column?".into(),
            };
        }
        // Anything else: the type as written, lower case, without its
        // modifiers.
        other => {
            let written = other.to_string().to_lowercase();
            return written
                .split(['(', '['])
                .next()
                .unwrap_or("?column?")
                .trim()
                .to_string();
        }
    };
    name.to_string()
}

/// `schema` with the columns named by `names` (as [`of_statement`] gave
/// them). Items before the first `*` name the first columns, items after
/// the last `*` the last ones; when the counts cannot match, the schema is
/// returned as it is.
pub fn rename(schema: &SchemaRef, names: &[ColumnName]) -> SchemaRef {
    let fields = schema.fields();
    let n = fields.len();
    let mut new: Vec<Option<&str>> = vec![None; n];
    let expands = names.iter().filter(|c| **c == ColumnName::Expand).count();
    let fixed = names.len() - expands;
    if (expands == 0 && fixed != n) || fixed > n {
        return Arc::clone(schema);
    }
    let first = names
        .iter()
        .position(|c| *c == ColumnName::Expand)
        .unwrap_or(names.len());
    for (i, c) in names[..first].iter().enumerate() {
        if let ColumnName::Named(name) = c {
            new[i] = Some(name);
        }
    }
    if expands > 0 {
        let last = names
            .iter()
            .rposition(|c| *c == ColumnName::Expand)
            .unwrap_or(0);
        let tail = &names[last + 1..];
        for (j, c) in tail.iter().enumerate() {
            if let ColumnName::Named(name) = c {
                new[n - tail.len() + j] = Some(name);
            }
        }
    }
    if fields
        .iter()
        .zip(&new)
        .all(|(f, name)| name.is_none_or(|name| name == f.name()))
    {
        return Arc::clone(schema);
    }
    let renamed: Vec<Field> = fields
        .iter()
        .zip(new)
        .map(|(f, name)| match name {
            Some(name) if name != f.name() => f.as_ref().clone().with_name(name),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(
        renamed,
        schema.metadata().clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType as ArrowType;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn names(sql: &str) -> Vec<String> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        of_statement(&statement)
            .unwrap()
            .into_iter()
            .map(|c| match c {
                ColumnName::Keep => "(keep)".to_string(),
                ColumnName::Named(n) => n,
                ColumnName::Expand => "*".to_string(),
            })
            .collect()
    }

    #[test]
    fn nested_queries_name_their_columns_as_postgresql() {
        let mut statement = Parser::parse_sql(
            &PostgreSqlDialect {},
            "WITH w AS (SELECT x, count(1), max(y), max(z), 1 + 2 FROM t GROUP BY x) \
             SELECT count(*), c.n FROM w, (SELECT length(s) FROM u) c(n) \
             WHERE EXISTS (SELECT now()::date)",
        )
        .unwrap()
        .remove(0);
        name_nested_columns(&mut statement);
        assert_eq!(
            statement.to_string(),
            "WITH w AS (SELECT x, count(1) AS \"count\", max(y), max(z), 1 + 2 FROM t GROUP BY x) \
             SELECT count(*), c.n FROM w, (SELECT length(s) AS \"length\" FROM u) c (n) \
             WHERE EXISTS (SELECT now()::DATE AS \"now\")"
        );
    }

    #[test]
    fn names_follow_postgresql() {
        assert_eq!(
            names("SELECT count(*), COUNT(id), length('abc'), \"Upper\"(x), pg_catalog.now()"),
            ["count", "count", "length", "Upper", "now"]
        );
        assert_eq!(
            names("SELECT 1, 'a', 1 + 2, -x, x IS NULL, v <-> '[1,2]'"),
            ["?column?"; 6]
        );
        assert_eq!(
            names(
                "SELECT 1::int, '1'::bigint, 2::float, 'a'::text, 'x'::varchar(3), 1::numeric(4,1)"
            ),
            ["int4", "int8", "float8", "text", "varchar", "numeric"]
        );
        assert_eq!(
            names("SELECT '[1,2]'::vector(2), '101'::bit(3), CAST(1 AS smallint), now()::date"),
            ["vector", "bit", "int2", "now"]
        );
        assert_eq!(
            names("SELECT '{1}'::int[], '{a}'::text[]"),
            ["int4", "text"]
        );
        assert_eq!(
            names("SELECT id, t.ID, id::text, (id), id AS n, 1 AS \"One\", count(*)::int"),
            ["id", "id", "id", "id", "n", "One", "count"]
        );
        assert_eq!(
            names(
                "SELECT CASE WHEN true THEN 1 END, ARRAY[1], EXISTS (SELECT 1), DATE '2020-01-01'"
            ),
            ["case", "array", "exists", "date"]
        );
        assert_eq!(
            names("SELECT (SELECT max(id) FROM t), (SELECT id FROM t LIMIT 1), (SELECT 1)"),
            ["max", "id", "?column?"]
        );
        assert_eq!(names("SELECT *, 1 FROM t"), ["*", "?column?"]);
        assert_eq!(
            names("SELECT count(*) FROM a UNION ALL SELECT 1 FROM b"),
            ["count"]
        );
        assert!(
            of_statement(
                &Parser::parse_sql(&PostgreSqlDialect {}, "INSERT INTO t VALUES (1)")
                    .unwrap()
                    .remove(0)
            )
            .is_none()
        );
    }

    fn schema(names: &[&str]) -> SchemaRef {
        Arc::new(Schema::new(
            names
                .iter()
                .map(|n| Field::new(*n, ArrowType::Int64, true))
                .collect::<Vec<_>>(),
        ))
    }

    fn field_names(schema: &SchemaRef) -> Vec<String> {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    #[test]
    fn rename_puts_names_around_wildcards() {
        let named = |s: &str| ColumnName::Named(s.into());
        let s = schema(&["Int64(1)", "Int64(2)"]);
        assert_eq!(
            field_names(&rename(&s, &[named("?column?"), named("?column?")])),
            ["?column?", "?column?"]
        );
        let s = schema(&["count(*)", "a", "b", "Int64(1)"]);
        let r = rename(&s, &[named("count"), ColumnName::Expand, named("?column?")]);
        assert_eq!(field_names(&r), ["count", "a", "b", "?column?"]);
        // Counts that cannot match leave the schema alone.
        let s = schema(&["a", "b"]);
        assert_eq!(field_names(&rename(&s, &[named("x")])), ["a", "b"]);
        assert_eq!(
            field_names(&rename(
                &s,
                &[named("x"), named("y"), named("z"), ColumnName::Expand]
            )),
            ["a", "b"]
        );
        assert_eq!(
            field_names(&rename(&s, &[ColumnName::Keep, named("y")])),
            ["a", "y"]
        );
        // Names already right: the same schema, not a copy.
        assert!(Arc::ptr_eq(&rename(&s, &[named("a"), named("b")]), &s));
    }
}
