//! `current_setting(name [, missing_ok])` and `set_config(name, value,
//! is_local)`. A session's settings live in its [`Session`], which
//! DataFusion's functions do not reach: a call is replaced by its value
//! before the statement is planned, and `set_config` applies its SET then,
//! as PostgreSQL does when it computes the row. Arguments must be
//! constants (what drivers and tools send: asyncpg's
//! `current_setting('jit')`, pg_dump's `set_config('search_path', '',
//! false)`); others are refused with 0A000.

use std::ops::ControlFlow;

use datafusion::common::{ParamValues, ScalarValue};
use datafusion::sql::sqlparser::ast::{
    self, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
};

use super::QueryError;
use super::session::Session;
use quiver_common::sqlstate;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Current,
    Set,
    /// `current_schemas(include_implicit)`: the search path's schemas
    /// that exist.
    Schemas,
}

fn call_of(e: &Expr) -> Option<(Call, &[FunctionArg])> {
    let Expr::Function(f) = e else { return None };
    let name = f.name.0.last()?.as_ident()?;
    if name.quote_style.is_some() {
        return None;
    }
    let call = match name.value.to_ascii_lowercase().as_str() {
        "current_setting" => Call::Current,
        "set_config" => Call::Set,
        "current_schemas" => Call::Schemas,
        _ => return None,
    };
    match &f.args {
        FunctionArguments::List(list) => Some((call, &list.args)),
        _ => None,
    }
}

/// Whether `stmt` calls either function (its plan must then be made again
/// at each execution).
pub fn uses(stmt: &ast::Statement) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(stmt, |e| {
        if call_of(e).is_some() {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// A constant argument: text, NULL or a Boolean (casts of them too).
enum Arg {
    Text(String),
    Bool(bool),
    Null,
}

fn arg_expr(arg: &FunctionArg) -> Option<&Expr> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
        _ => None,
    }
}

/// The `$n` an argument is (through casts), if it is one.
fn placeholder(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => Some(p),
            _ => None,
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => placeholder(expr),
        _ => None,
    }
}

fn constant(arg: &FunctionArg, params: Option<&ParamValues>) -> Option<Arg> {
    let e = arg_expr(arg)?;
    let of = |e: &Expr| -> Option<Arg> {
        if let Some(p) = placeholder(e) {
            let i: usize = p.strip_prefix('$')?.parse().ok()?;
            let ParamValues::List(values) = params? else {
                return None;
            };
            let v = values.get(i.checked_sub(1)?)?.value.clone();
            return Some(match v {
                v if v.is_null() => Arg::Null,
                ScalarValue::Boolean(Some(b)) => Arg::Bool(b),
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)) => Arg::Text(s),
                v => Arg::Text(v.to_string()),
            });
        }
        literal(e)
    };
    of(e)
}

fn literal(e: &Expr) -> Option<Arg> {
    {
        match e {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s)
                | Value::EscapedStringLiteral(s)
                | Value::DollarQuotedString(ast::DollarQuotedString { value: s, .. }) => {
                    Some(Arg::Text(s.clone()))
                }
                Value::Boolean(b) => Some(Arg::Bool(*b)),
                Value::Null => Some(Arg::Null),
                _ => None,
            },
            Expr::Cast { expr, .. } | Expr::Nested(expr) => literal(expr),
            _ => None,
        }
    }
}

fn not_constant(call: Call) -> QueryError {
    let name = match call {
        Call::Current => "current_setting",
        Call::Set => "set_config",
        Call::Schemas => "current_schemas",
    };
    QueryError::Unsupported(format!(
        "{name}() with arguments that are not constants is not supported: name the setting in a string literal"
    ))
}

fn text_value(v: Option<String>) -> Expr {
    let value = match v {
        Some(s) => Value::SingleQuotedString(s),
        None => Value::Null,
    };
    Expr::Cast {
        kind: CastKind::DoubleColon,
        expr: Box::new(Expr::value(value)),
        data_type: DataType::Text,
        array: false,
        format: None,
    }
}

/// The value of one call; `apply`: whether `set_config` changes the
/// setting now (at execution) or is only checked (at PREPARE).
fn evaluate(
    session: &Session,
    call: Call,
    args: &[FunctionArg],
    apply: bool,
    params: Option<&ParamValues>,
) -> Result<Option<String>, QueryError> {
    let values: Vec<Arg> = args
        .iter()
        .map(|a| constant(a, params))
        .collect::<Option<_>>()
        .ok_or_else(|| not_constant(call))?;
    let flag = |a: Option<&Arg>| match a {
        Some(Arg::Bool(b)) => Ok(*b),
        Some(Arg::Text(t)) => match t.to_ascii_lowercase().as_str() {
            "t" | "true" | "on" | "yes" | "1" => Ok(true),
            "f" | "false" | "off" | "no" | "0" => Ok(false),
            _ => Err(QueryError::Data {
                message: format!("invalid input syntax for type boolean: \"{t}\""),
                code: sqlstate::INVALID_TEXT_REPRESENTATION,
            }),
        },
        Some(Arg::Null) | None => Ok(false),
    };
    match (call, values.as_slice()) {
        (Call::Current, [Arg::Null, ..]) => Ok(None),
        (Call::Current, [Arg::Text(name), rest @ ..]) if rest.len() <= 1 => {
            let missing_ok = flag(rest.first())?;
            match session.var(name) {
                Some(v) => Ok(Some(v)),
                None if missing_ok => Ok(None),
                None => Err(super::session::unknown_setting(&name.to_ascii_lowercase())),
            }
        }
        (Call::Set, [Arg::Text(name), value, local]) => {
            let local = flag(Some(local))?;
            let value = match value {
                Arg::Text(v) => Some(v.clone()),
                Arg::Bool(b) => Some(b.to_string()),
                Arg::Null => None,
            };
            if !apply {
                if let Some(v) = &value {
                    Session::check_var(name, v)?;
                }
                return Ok(value);
            }
            match (&value, local) {
                // Outside a block the transaction is the statement: the
                // value would be gone when it ends.
                (Some(v), true) if !session.block().in_block() => {
                    return Ok(Some(Session::normalize_var(name, v)?));
                }
                (Some(v), true) => session.set_local(name, v)?,
                (Some(v), false) => session.set_var(name, v)?,
                (None, _) => session.reset_var(Some(name))?,
            }
            Ok(session.var(name))
        }
        (Call::Set, [Arg::Null, ..]) => Err(QueryError::Data {
            message: "SET requires parameter name".into(),
            code: sqlstate::NULL_VALUE_NOT_ALLOWED,
        }),
        _ => Err(QueryError::Data {
            code: sqlstate::UNDEFINED_FUNCTION,
            message: match call {
            Call::Current => {
                "function current_setting with these arguments does not exist: use current_setting(name text [, missing_ok boolean])".into()
            }
            Call::Set | Call::Schemas => {
                "function set_config with these arguments does not exist: use set_config(name text, value text, is_local boolean)".into()
            }
            },
        }),
    }
}

/// At PREPARE, a call with parameters: the value it will have (the
/// parameter itself for `set_config`'s value, NULL otherwise), written so
/// that each parameter keeps the type PostgreSQL gives it (`name text`,
/// `value text`, `is_local boolean`, `missing_ok boolean`).
fn with_parameters(call: Call, args: &[FunctionArg]) -> Option<Expr> {
    let types = match call {
        Call::Current => [DataType::Text, DataType::Boolean, DataType::Boolean],
        Call::Set => [DataType::Text, DataType::Text, DataType::Boolean],
        Call::Schemas => return None,
    };
    let cast = |e: &Expr, t: &DataType| Expr::Cast {
        kind: CastKind::DoubleColon,
        expr: Box::new(e.clone()),
        data_type: t.clone(),
        array: false,
        format: None,
    };
    let mut tests = Vec::new();
    for (arg, t) in args.iter().zip(types.iter()) {
        let e = arg_expr(arg)?;
        if placeholder(e).is_some() {
            tests.push(Expr::IsNull(Box::new(cast(e, t))));
        } else if literal(e).is_none() {
            return None;
        }
    }
    if tests.is_empty() {
        return None;
    }
    let value = match (call, args.get(1).and_then(arg_expr)) {
        (Call::Set, Some(v)) => cast(v, &DataType::Text),
        _ => text_value(None),
    };
    let condition = tests.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: ast::BinaryOperator::Or,
        right: Box::new(b),
    })?;
    Some(Expr::Case {
        case_token: ast::helpers::attached_token::AttachedToken::empty(),
        end_token: ast::helpers::attached_token::AttachedToken::empty(),
        operand: None,
        conditions: vec![ast::CaseWhen {
            condition,
            result: value.clone(),
        }],
        else_result: Some(Box::new(value)),
    })
}

/// The schemas quiver has: every database has these.
const SCHEMAS: [&str; 3] = ["public", "pg_catalog", "information_schema"];

/// `current_schemas(include_implicit)` as an array of the search path's
/// schemas that exist (`pg_catalog` first when implicit ones are asked
/// for and the path does not name it). `None`: its argument is not a
/// constant (left to the planner, which refuses it).
fn schemas(
    session: &Session,
    args: &[FunctionArg],
    params: Option<&ParamValues>,
) -> Result<Option<Expr>, QueryError> {
    let implicit = match args {
        [a] => match constant(a, params) {
            Some(Arg::Bool(b)) => b,
            Some(Arg::Null) => return Ok(Some(text_value(None))),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let path = session.var("search_path").unwrap_or_default();
    let mut names: Vec<String> = path
        .split(',')
        .map(|p| p.trim().trim_matches('"').to_string())
        .filter(|p| SCHEMAS.contains(&p.as_str()))
        .collect();
    names.dedup();
    if implicit && !names.iter().any(|n| n == "pg_catalog") {
        names.insert(0, "pg_catalog".to_string());
    }
    let items: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    let text = format!("CAST(ARRAY[{}] AS TEXT[])", items.join(", "));
    Ok(datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
    )
    .try_with_sql(&text)
    .and_then(|mut p| p.parse_expr())
    .ok())
}

/// Replace every call in `stmt` by its value, in the order PostgreSQL
/// computes them. `apply`: at execution (`set_config` changes the setting,
/// `params` are the statement's); otherwise at PREPARE, where a call with
/// parameters keeps them.
pub fn rewrite(
    session: &Session,
    stmt: &mut ast::Statement,
    apply: bool,
    params: Option<&ParamValues>,
) -> Result<(), QueryError> {
    let mut error = None;
    let _ = ast::visit_expressions_mut(stmt, |e| {
        let Some((call, args)) = call_of(e) else {
            return ControlFlow::Continue(());
        };
        if !apply && let Some(prepared) = with_parameters(call, args) {
            *e = prepared;
            return ControlFlow::Continue(());
        }
        if call == Call::Schemas {
            match schemas(session, args, params) {
                Ok(Some(array)) => *e = array,
                Ok(None) => {}
                Err(err) => {
                    error = Some(err);
                    return ControlFlow::Break(());
                }
            }
            return ControlFlow::Continue(());
        }
        match evaluate(session, call, args, apply, params) {
            Ok(v) => {
                *e = text_value(v);
                ControlFlow::Continue(())
            }
            // At PREPARE a setting may not exist yet (an earlier call of
            // the same statement sets it): each execution tells.
            Err(_) if !apply => {
                *e = text_value(None);
                ControlFlow::Continue(())
            }
            Err(err) => {
                error = Some(err);
                ControlFlow::Break(())
            }
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
