//! A client session: who is connected, to which database, its variables and
//! its DataFusion state.

use std::collections::BTreeMap;

use std::sync::Arc;

use datafusion::execution::{SessionState, TaskContext};
use parking_lot::{Mutex, RwLock};

use super::QueryError;

pub struct Session {
    user: String,
    database: RwLock<String>,
    state: Arc<SessionState>,
    /// `state` without physical optimizer rules: plain vector searches
    /// (projection, limit, `AnnSearchExec`) need none of them, and running
    /// them costs as much as the search on small data.
    search_state: Arc<SessionState>,
    /// Built once: making a task context copies every function registry.
    task: Arc<TaskContext>,
    vars: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({}@{})", self.user, self.database.read())
    }
}

/// Session variables with their defaults, as `SHOW` reports them (the
/// search knobs `hnsw.ef_search` and `ivfflat.probes` default to
/// `quiver_vector::index::SearchKnobs::default()`).
const DEFAULT_VARS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("max_identifier_length", "63"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", quiver_common::SERVER_VERSION),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
];

impl Session {
    pub fn new(user: &str, database: &str, state: SessionState) -> Session {
        let search_state =
            datafusion::execution::SessionStateBuilder::new_from_existing(state.clone())
                .with_physical_optimizer_rules(vec![])
                .build();
        Session {
            user: user.to_string(),
            database: RwLock::new(database.to_string()),
            task: state.task_ctx(),
            state: Arc::new(state),
            search_state: Arc::new(search_state),
            vars: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn database(&self) -> String {
        self.database.read().clone()
    }

    /// The DataFusion state statements are planned with.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// The state plain vector searches are planned with (no physical
    /// optimizer rules).
    pub fn search_state(&self) -> &SessionState {
        &self.search_state
    }

    /// The context physical plans execute in.
    pub fn task_ctx(&self) -> Arc<TaskContext> {
        self.task.clone()
    }

    pub fn set_var(&self, name: &str, value: &str) -> Result<(), QueryError> {
        let name = name.to_ascii_lowercase();
        if matches!(name.as_str(), "hnsw.ef_search" | "ivfflat.probes") {
            let ok = value
                .trim()
                .parse::<u32>()
                .is_ok_and(|v| (1..=1000).contains(&v));
            if !ok {
                return Err(QueryError::InvalidParameter(format!(
                    "invalid value for parameter \"{name}\": \"{value}\" (an integer from 1 to 1000)"
                )));
            }
        }
        if let Some(settings) = self
            .state
            .config()
            .get_extension::<quiver_exec::ann_search::SearchSettings>()
        {
            let v: usize = value.trim().parse().unwrap_or(0);
            let mut knobs = settings.0.lock();
            match name.as_str() {
                "hnsw.ef_search" => knobs.ef = v,
                "ivfflat.probes" => knobs.nprobe = v,
                _ => {}
            }
        }
        self.vars.lock().insert(name, value.trim().to_string());
        Ok(())
    }

    /// The search settings in force (`SET hnsw.ef_search`, ...).
    pub fn search_knobs(&self) -> quiver_vector::index::SearchKnobs {
        self.state
            .config()
            .get_extension::<quiver_exec::ann_search::SearchSettings>()
            .map(|s| *s.0.lock())
            .unwrap_or_default()
    }

    /// Use these search settings until the guard is dropped.
    pub fn tune(&self, ef: Option<u64>, nprobe: Option<u64>) -> Option<TuneGuard> {
        let settings = self
            .state
            .config()
            .get_extension::<quiver_exec::ann_search::SearchSettings>()?;
        let previous = *settings.0.lock();
        {
            let mut knobs = settings.0.lock();
            if let Some(ef) = ef {
                knobs.ef = ef.clamp(1, 100_000) as usize;
            }
            if let Some(n) = nprobe {
                knobs.nprobe = n.clamp(1, 65_536) as usize;
            }
        }
        Some(TuneGuard { settings, previous })
    }

    pub fn var(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        if let Some(v) = self.vars.lock().get(&name) {
            return Some(v.clone());
        }
        let knobs = quiver_vector::index::SearchKnobs::default();
        match name.as_str() {
            "hnsw.ef_search" => return Some(knobs.ef.to_string()),
            "ivfflat.probes" => return Some(knobs.nprobe.to_string()),
            _ => {}
        }
        DEFAULT_VARS
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// Restores a session's search settings when dropped.
pub struct TuneGuard {
    settings: Arc<quiver_exec::ann_search::SearchSettings>,
    previous: quiver_vector::index::SearchKnobs,
}

impl Drop for TuneGuard {
    fn drop(&mut self) {
        *self.settings.0.lock() = self.previous;
    }
}
