//! The connections as SQL sees them: the `pg_stat_activity` view and the
//! functions `pg_backend_pid()`, `pg_cancel_backend(pid)` and
//! `pg_terminate_backend(pid)`, over [`Activity`].

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemTable;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use quiver_catalog::Catalog;
use quiver_common::interrupt::{Canceled, Interrupt};

use crate::activity::{Activity, Backend};

/// Whether `user` may see the statements of, and signal, `backend`: its
/// own connections, or any for an admin, as in PostgreSQL.
fn may_see(catalog: &Catalog, user: &str, backend: &Backend) -> bool {
    backend.user == user || catalog.security(|s| s.is_admin(user))
}

fn micros(t: SystemTime) -> Option<i64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_micros() as i64)
}

/// `pg_stat_activity` for `viewer`: one row per connection; the statement
/// and the client address of another user's connections read
/// `<insufficient privilege>` / NULL, as PostgreSQL shows them.
pub fn pg_stat_activity(
    activity: &Activity,
    catalog: &Catalog,
    viewer: &str,
) -> Result<Arc<dyn TableProvider>> {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("datname", DataType::Utf8, true),
        Field::new("pid", DataType::Int32, false),
        Field::new("usename", DataType::Utf8, true),
        Field::new("application_name", DataType::Utf8, true),
        Field::new("client_addr", DataType::Utf8, true),
        Field::new("backend_start", ts(), true),
        Field::new("query_start", ts(), true),
        Field::new("state", DataType::Utf8, true),
        Field::new("query", DataType::Utf8, true),
        Field::new("backend_type", DataType::Utf8, false),
    ]));
    let backends = activity.all();
    let mut datname = Vec::new();
    let mut pid = Vec::new();
    let mut usename = Vec::new();
    let mut app = Vec::new();
    let mut addr = Vec::new();
    let mut start = Vec::new();
    let mut query_start = Vec::new();
    let mut state = Vec::new();
    let mut query = Vec::new();
    for b in &backends {
        let visible = may_see(catalog, viewer, b);
        let now = b.running();
        datname.push(Some(b.database.clone()));
        pid.push(b.pid);
        usename.push(Some(b.user.clone()));
        app.push(Some(b.application_name.clone()));
        addr.push(visible.then(|| b.client_addr.clone()));
        start.push(micros(b.backend_start));
        query_start.push(if visible {
            now.query_start.and_then(micros)
        } else {
            None
        });
        state.push(visible.then(|| now.state.to_string()));
        query.push(Some(if visible {
            now.query
        } else {
            "<insufficient privilege>".to_string()
        }));
    }
    let n = backends.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(datname)),
        Arc::new(Int32Array::from(pid)),
        Arc::new(StringArray::from(usename)),
        Arc::new(StringArray::from(app)),
        Arc::new(StringArray::from(addr)),
        Arc::new(TimestampMicrosecondArray::from(start).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(query_start).with_timezone("UTC")),
        Arc::new(StringArray::from(state)),
        Arc::new(StringArray::from(query)),
        Arc::new(StringArray::from(vec!["client backend"; n])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// `pg_stat_progress_copy`: the COPYs running now, with the bytes and rows
/// read so far (the columns of PostgreSQL 15's view that quiver knows);
/// other users' COPYs are shown to admins only.
pub fn pg_stat_progress_copy(
    activity: &Activity,
    catalog: &Catalog,
    viewer: &str,
) -> Result<Arc<dyn TableProvider>> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("pid", DataType::Int32, false),
        Field::new("datname", DataType::Utf8, true),
        Field::new("relname", DataType::Utf8, true),
        Field::new("command", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("bytes_processed", DataType::Int64, false),
        Field::new("bytes_total", DataType::Int64, false),
        Field::new("tuples_processed", DataType::Int64, false),
        Field::new("tuples_excluded", DataType::Int64, false),
    ]));
    let copies: Vec<_> = activity
        .all()
        .into_iter()
        .filter(|b| may_see(catalog, viewer, b))
        .filter_map(|b| b.copy_progress().map(|p| (b, p)))
        .collect();
    let n = copies.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(
            copies.iter().map(|(b, _)| b.pid),
        )),
        Arc::new(StringArray::from_iter_values(
            copies.iter().map(|(b, _)| b.database.clone()),
        )),
        Arc::new(StringArray::from_iter_values(
            copies.iter().map(|(_, p)| p.relname.clone()),
        )),
        Arc::new(StringArray::from(vec!["COPY FROM"; n])),
        Arc::new(StringArray::from(vec!["PIPE"; n])),
        Arc::new(arrow::array::Int64Array::from_iter_values(
            copies.iter().map(|(_, p)| p.bytes_processed as i64),
        )),
        Arc::new(arrow::array::Int64Array::from(vec![0; n])),
        Arc::new(arrow::array::Int64Array::from_iter_values(
            copies.iter().map(|(_, p)| p.tuples_processed as i64),
        )),
        Arc::new(arrow::array::Int64Array::from(vec![0; n])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// `pg_backend_pid()`: the process id of this connection.
#[derive(Debug)]
struct BackendPid {
    activity: Arc<Activity>,
    interrupt: Arc<Interrupt>,
    signature: Signature,
}

impl PartialEq for BackendPid {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.interrupt, &other.interrupt)
    }
}
impl Eq for BackendPid {}
impl Hash for BackendPid {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "pg_backend_pid".hash(state);
    }
}

impl ScalarUDFImpl for BackendPid {
    fn name(&self) -> &str {
        "pg_backend_pid"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let pid = self
            .activity
            .all()
            .into_iter()
            .find(|b| Arc::ptr_eq(&b.interrupt, &self.interrupt))
            .map(|b| b.pid);
        Ok(ColumnarValue::Scalar(ScalarValue::Int32(pid)))
    }
}

/// `pg_cancel_backend(pid)` and `pg_terminate_backend(pid)`.
#[derive(Debug)]
struct Signal {
    terminate: bool,
    activity: Arc<Activity>,
    catalog: Arc<Catalog>,
    caller: String,
    signature: Signature,
}

impl PartialEq for Signal {
    fn eq(&self, other: &Self) -> bool {
        self.terminate == other.terminate && self.caller == other.caller
    }
}
impl Eq for Signal {}
impl Hash for Signal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.terminate.hash(state);
        self.caller.hash(state);
    }
}

impl Signal {
    /// Signal one process; `Ok(false)` when there is none with that id.
    fn signal(&self, pid: i32) -> Result<bool> {
        let Some(backend) = self.activity.get(pid) else {
            return Ok(false);
        };
        if !may_see(&self.catalog, &self.caller, &backend) {
            let what = if self.terminate {
                "terminate process"
            } else {
                "cancel query"
            };
            return Err(DataFusionError::External(Box::new(
                quiver_catalog::CatalogError::Access(quiver_auth::acl::AccessError::Denied(
                    format!(
                        "permission denied to {what}: only an admin or the connection's own user (\"{}\") may",
                        backend.user
                    ),
                )),
            )));
        }
        backend.interrupt.request(if self.terminate {
            Canceled::Terminated
        } else {
            Canceled::UserRequest
        });
        Ok(true)
    }
}

impl ScalarUDFImpl for Signal {
    fn name(&self) -> &str {
        if self.terminate {
            "pg_terminate_backend"
        } else {
            "pg_cancel_backend"
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return exec_err!("{} expects a process id", self.name());
        };
        match arg {
            ColumnarValue::Scalar(s) => {
                let pid = match s.cast_to(&DataType::Int32)? {
                    ScalarValue::Int32(p) => p,
                    _ => None,
                };
                let out = match pid {
                    Some(p) => Some(self.signal(p)?),
                    None => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(out)))
            }
            ColumnarValue::Array(a) => {
                let a = cast(a, &DataType::Int32)?;
                let pids = a.as_primitive::<Int32Type>();
                let mut out = Vec::with_capacity(pids.len());
                for i in 0..pids.len() {
                    out.push(if pids.is_valid(i) {
                        Some(self.signal(pids.value(i))?)
                    } else {
                        None
                    });
                }
                Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(out))))
            }
        }
    }
}

/// `current_user`, `session_user`, `user`, `current_role`: the session's
/// user (quiver has no SET ROLE, so all four agree, as in PostgreSQL
/// before one).
#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionUser {
    name: &'static str,
    user: String,
    signature: Signature,
}

impl ScalarUDFImpl for SessionUser {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            self.user.clone(),
        ))))
    }
}

/// The session functions of `caller`'s session (whose stop signal is
/// `interrupt`).
pub fn udfs(
    activity: &Arc<Activity>,
    catalog: &Arc<Catalog>,
    caller: &str,
    interrupt: &Arc<Interrupt>,
) -> Vec<ScalarUDF> {
    let signal = |terminate| {
        ScalarUDF::new_from_impl(Signal {
            terminate,
            activity: activity.clone(),
            catalog: catalog.clone(),
            caller: caller.to_string(),
            signature: Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Int32]),
                    datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Int64]),
                    datafusion::logical_expr::TypeSignature::Exact(vec![
                        DataType::Int64,
                        DataType::Int64,
                    ]),
                ],
                Volatility::Volatile,
            ),
        })
    };
    let user = |name| {
        ScalarUDF::new_from_impl(SessionUser {
            name,
            user: caller.to_string(),
            signature: Signature::exact(vec![], Volatility::Stable),
        })
    };
    vec![
        user("current_user"),
        user("session_user"),
        user("user"),
        user("current_role"),
        ScalarUDF::new_from_impl(BackendPid {
            activity: activity.clone(),
            interrupt: interrupt.clone(),
            signature: Signature::exact(vec![], Volatility::Stable),
        }),
        signal(false),
        signal(true),
    ]
}
