//! Layered configuration: defaults < `quiver.toml` < `QUIVER_*` environment
//! variables < command-line flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
pub const DEFAULT_DATA_DIR: &str = "./data";

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
}

/// Settings as they may appear in `quiver.toml` (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub storage: Option<StorageSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub root: Option<PathBuf>,
}

/// Values given on the command line or in the environment (clap merges both).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: std::net::SocketAddr,
    pub data_dir: PathBuf,
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
        let data_dir = overrides
            .data_dir
            .clone()
            .or(from_file.data_dir)
            .or(from_file.storage.and_then(|s| s.root))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        Ok(Config { listen, data_dir })
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
                data_dir: None,
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 7001);
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(Config::load(Some(&path), &Overrides::default()).is_err());
    }
}
