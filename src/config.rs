//! Layered configuration: defaults < `quiver.toml` < `QUIVER_*` environment
//! variables < command-line flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::auth::{AuthConfig, Secret};
use crate::planner::memory::QueryMemory;
use crate::server::Limits;
use crate::storage::{S3Config, StorageConfig, WalSync};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Microseconds a connection polls its socket for the client's next
/// message after a reply (see `server::conn::BusyPoll`).
pub const DEFAULT_BUSY_POLL_US: u64 = 300;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid listen address \"{0}\": expected host:port, e.g. 127.0.0.1:5433")]
    Listen(String),
    #[error("{0}")]
    Invalid(String),
}

/// Settings as they may appear in `quiver.toml` (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub busy_poll_us: Option<u64>,
    pub storage: Option<StorageSection>,
    pub wal: Option<WalSection>,
    pub auth: Option<AuthSection>,
    pub tls: Option<TlsSection>,
    pub limits: Option<LimitsSection>,
    pub http: Option<HttpSection>,
}

/// `[http]`: the port of `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// host:port; absent: no HTTP port.
    pub listen: Option<String>,
}

/// `[limits]`: what one client may take (see README "Limits").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_connections: Option<usize>,
    pub max_message_size: Option<usize>,
    pub max_startup_message_size: Option<usize>,
    pub authentication_timeout_ms: Option<u64>,
    pub statement_timeout_ms: Option<u64>,
    pub idle_in_transaction_session_timeout_ms: Option<u64>,
    /// Bytes one statement's operators may hold (sorts, aggregates, joins).
    pub query_memory: Option<usize>,
    /// Bytes all statements together may hold.
    pub query_memory_total: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Name of the superuser created on first start.
    pub superuser: Option<String>,
    /// Its password on first start (QUIVER_PASSWORD overrides).
    pub password: Option<String>,
    pub loopback_trust: Option<bool>,
    pub require_tls: Option<bool>,
    pub max_failed_logins: Option<u32>,
    pub failed_login_interval_ms: Option<u64>,
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSection")
            .field("superuser", &self.superuser)
            .field("loopback_trust", &self.loopback_trust)
            .field("require_tls", &self.require_tls)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// A local path or `s3://bucket/prefix`.
    pub root: Option<String>,
    pub insert_buffer_size: Option<usize>,
    /// Bytes of uncommitted rows one transaction may hold.
    pub transaction_memory: Option<usize>,
    pub transaction_memory_total: Option<usize>,
    pub segment_max_rows: Option<usize>,
    pub segment_max_bytes: Option<usize>,
    pub segment_target_size: Option<usize>,
    pub seal_idle_ms: Option<u64>,
    pub compact_min_segments: Option<usize>,
    pub index_build_threads: Option<usize>,
    pub s3: Option<S3Config>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalSection {
    /// `always` or `batch(<ms>)`.
    pub sync: Option<String>,
}

/// Values given on the command line or in the environment (clap merges both).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub busy_poll_us: Option<u64>,
    pub storage_root: Option<String>,
    pub wal_sync: Option<String>,
    pub insert_buffer_size: Option<usize>,
    pub password: Option<Secret>,
    pub loopback_trust: Option<bool>,
    pub require_tls: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub http_listen: Option<String>,
}

/// Physical memory of this machine, in bytes (none where unknown).
fn physical_memory() -> Option<usize> {
    // SAFETY: sysconf only reads system constants.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| pages as usize * size as usize)
}

/// Query memory: by default half the machine's memory for all statements
/// together and a quarter of that for one; spills under `<data dir>/tmp`.
fn query_memory(section: &LimitsSection, data_dir: &Path) -> Result<QueryMemory, ConfigError> {
    let total = section
        .query_memory_total
        .unwrap_or_else(|| physical_memory().map_or(4 << 30, |m| m / 2));
    let per_query = section.query_memory.unwrap_or(total / 4);
    if per_query < (16 << 20) || per_query > total {
        return Err(ConfigError::Invalid(format!(
            "limits.query_memory = {per_query} is out of range: 16 MiB to query_memory_total ({total})"
        )));
    }
    Ok(QueryMemory {
        total,
        per_query,
        spill_dir: Some(data_dir.join("tmp")),
    })
}

fn limits(section: LimitsSection) -> Result<Limits, ConfigError> {
    let defaults = Limits::default();
    let limits = Limits {
        max_connections: section.max_connections.unwrap_or(defaults.max_connections),
        max_message_size: section
            .max_message_size
            .unwrap_or(defaults.max_message_size),
        max_startup_message_size: section
            .max_startup_message_size
            .unwrap_or(defaults.max_startup_message_size),
        authentication_timeout: section
            .authentication_timeout_ms
            .map(std::time::Duration::from_millis)
            .unwrap_or(defaults.authentication_timeout),
        statement_timeout: section
            .statement_timeout_ms
            .map(std::time::Duration::from_millis)
            .unwrap_or(defaults.statement_timeout),
        idle_in_transaction_session_timeout: section
            .idle_in_transaction_session_timeout_ms
            .map(std::time::Duration::from_millis)
            .unwrap_or(defaults.idle_in_transaction_session_timeout),
    };
    for (name, ms) in [
        ("statement_timeout_ms", limits.statement_timeout.as_millis()),
        (
            "idle_in_transaction_session_timeout_ms",
            limits.idle_in_transaction_session_timeout.as_millis(),
        ),
    ] {
        if ms > i32::MAX as u128 {
            return Err(ConfigError::Invalid(format!(
                "limits.{name} = {ms} is too long: at most {} ms (0 turns it off)",
                i32::MAX
            )));
        }
    }
    let ceiling = crate::server::limits::MESSAGE_SIZE_CEILING;
    if limits.max_connections == 0 {
        return Err(ConfigError::Invalid(
            "limits.max_connections must be at least 1".into(),
        ));
    }
    if !(4096..=ceiling).contains(&limits.max_message_size) {
        return Err(ConfigError::Invalid(format!(
            "limits.max_message_size = {} is out of range: 4096 to {ceiling} bytes",
            limits.max_message_size
        )));
    }
    if !(1024..=limits.max_message_size).contains(&limits.max_startup_message_size) {
        return Err(ConfigError::Invalid(format!(
            "limits.max_startup_message_size = {} is out of range: 1024 to max_message_size",
            limits.max_startup_message_size
        )));
    }
    if limits.authentication_timeout < std::time::Duration::from_millis(100) {
        return Err(ConfigError::Invalid(
            "limits.authentication_timeout_ms must be at least 100".into(),
        ));
    }
    Ok(limits)
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: std::net::SocketAddr,
    pub data_dir: PathBuf,
    /// How long a connection polls for the client's next message after a
    /// reply before its thread sleeps; zero turns polling off.
    pub busy_poll: std::time::Duration,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub memory: QueryMemory,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (none: off).
    pub http_listen: Option<std::net::SocketAddr>,
}

impl Config {
    /// Merge the layers. `file` is the optional path of a `quiver.toml`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let listen = overrides
            .listen
            .clone()
            .or(from_file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen
            .parse()
            .map_err(|_| ConfigError::Listen(listen.clone()))?;
        let busy_poll_us = overrides
            .busy_poll_us
            .or(from_file.busy_poll_us)
            .unwrap_or(DEFAULT_BUSY_POLL_US);
        if busy_poll_us > 100_000 {
            return Err(ConfigError::Invalid(format!(
                "busy_poll_us = {busy_poll_us} is too long: use 0 (off) to 100000 microseconds"
            )));
        }
        let busy_poll = std::time::Duration::from_micros(busy_poll_us);
        let section = from_file.storage.unwrap_or_default();
        let root = overrides.storage_root.clone().or(section.root.clone());
        let local_root = root
            .as_ref()
            .filter(|r| !r.starts_with("s3://"))
            .map(|r| PathBuf::from(r.strip_prefix("file://").unwrap_or(r)));
        let data_dir = overrides
            .data_dir
            .clone()
            .or(from_file.data_dir)
            .or(local_root)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut storage = StorageConfig::new(data_dir.clone());
        storage.root = root;
        if let Some(v) = overrides.insert_buffer_size.or(section.insert_buffer_size) {
            storage.insert_buffer_size = v.max(1 << 20);
        }
        if let Some(v) = section.transaction_memory {
            storage.transaction_memory = v.max(1 << 20);
        }
        // By default a quarter of the machine's memory, and at least one
        // transaction's worth.
        storage.transaction_memory_total = section
            .transaction_memory_total
            .or_else(|| physical_memory().map(|m| m / 4))
            .unwrap_or(storage.transaction_memory_total)
            .max(storage.transaction_memory);
        if let Some(v) = section.segment_max_rows {
            storage.segment_max_rows = v.max(1);
        }
        if let Some(v) = section.segment_max_bytes {
            storage.segment_max_bytes = v.max(1 << 16);
        }
        if let Some(v) = section.segment_target_size {
            storage.segment_target_size = v.max(1 << 16);
        }
        if let Some(v) = section.seal_idle_ms {
            storage.seal_idle = std::time::Duration::from_millis(v.max(10));
        }
        if let Some(v) = section.compact_min_segments {
            storage.compact_min_segments = v.max(2);
        }
        if let Some(v) = section.index_build_threads {
            storage.index_build_threads = v.max(1);
        }
        if let Some(s3) = section.s3 {
            storage.s3 = s3;
        }
        if let Some(sync) = overrides
            .wal_sync
            .clone()
            .or(from_file.wal.and_then(|w| w.sync))
        {
            storage.wal_sync = sync.parse::<WalSync>().map_err(ConfigError::Invalid)?;
        }
        let http_listen = overrides
            .http_listen
            .clone()
            .or(from_file.http.and_then(|h| h.listen))
            .map(|a| a.parse().map_err(|_| ConfigError::Listen(a.clone())))
            .transpose()?;
        let section = from_file.limits.unwrap_or_default();
        let memory = query_memory(&section, &data_dir)?;
        let limits = limits(section)?;
        let section = from_file.auth.unwrap_or_default();
        let tls = from_file.tls.unwrap_or_default();
        let defaults = AuthConfig::default();
        let auth = AuthConfig {
            superuser: section.superuser.unwrap_or(defaults.superuser),
            password: overrides.password.clone().or(section.password.map(Secret)),
            loopback_trust: overrides
                .loopback_trust
                .or(section.loopback_trust)
                .unwrap_or(false),
            require_tls: overrides
                .require_tls
                .or(section.require_tls)
                .unwrap_or(false),
            tls_cert: overrides.tls_cert.clone().or(tls.cert),
            tls_key: overrides.tls_key.clone().or(tls.key),
            max_failed_logins: section
                .max_failed_logins
                .unwrap_or(defaults.max_failed_logins),
            failed_login_interval: section
                .failed_login_interval_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(defaults.failed_login_interval),
        };
        if auth.password.as_ref().is_some_and(|p| p.0.is_empty()) {
            return Err(ConfigError::Invalid(
                "the superuser password must not be empty".into(),
            ));
        }
        if auth.require_tls && auth.tls_cert.is_none() {
            return Err(ConfigError::Invalid(
                "auth.require_tls needs a certificate: set tls.cert and tls.key".into(),
            ));
        }
        Ok(Config {
            listen,
            data_dir,
            busy_poll,
            storage,
            auth,
            limits,
            memory,
            http_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quiver.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        let c = Config::load(
            Some(&path),
            &Overrides {
                listen: Some("127.0.0.1:7001".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 7001);
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.storage.wal_sync, WalSync::Always);
        std::fs::write(
            &path,
            "[storage]\nroot = \"s3://b/p\"\ninsert_buffer_size = 8388608\n[wal]\nsync = \"batch(5)\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.storage.root.as_deref(), Some("s3://b/p"));
        assert_eq!(c.storage.insert_buffer_size, 8 << 20);
        assert_eq!(
            c.storage.wal_sync,
            WalSync::Batch(std::time::Duration::from_millis(5))
        );
        std::fs::write(
            &path,
            "[auth]\nsuperuser = \"root\"\npassword = \"pw\"\nloopback_trust = true\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.auth.superuser, "root");
        assert_eq!(c.auth.password, Some(Secret("pw".into())));
        assert!(c.auth.loopback_trust);
        assert!(!format!("{c:?}").contains("\"pw\""));
        std::fs::write(&path, "[auth]\nrequire_tls = true\n").unwrap();
        assert!(Config::load(Some(&path), &Overrides::default()).is_err());
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(Config::load(Some(&path), &Overrides::default()).is_err());
    }

    #[test]
    fn busy_poll() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quiver.toml");
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.busy_poll, Duration::from_micros(DEFAULT_BUSY_POLL_US));
        std::fs::write(&path, "busy_poll_us = 0\n").unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.busy_poll, Duration::ZERO);
        let flag = Overrides {
            busy_poll_us: Some(50),
            ..Default::default()
        };
        let c = Config::load(Some(&path), &flag).unwrap();
        assert_eq!(c.busy_poll, Duration::from_micros(50));
        std::fs::write(&path, "busy_poll_us = 5000000\n").unwrap();
        let e = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("0 (off) to 100000"), "{e}");
    }
}
