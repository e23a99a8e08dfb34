//! The bootstrap superuser: created in the catalog on first start.

use std::path::Path;

use quiver_auth::{AuthConfig, INITIAL_PASSWORD_FILE, random_password, scram};
use quiver_catalog::{Catalog, CatalogError};

/// Create the superuser on first start. Returns the password if it was
/// generated (the caller shows it once); it is also written to
/// `<data_dir>/initial-password`, readable by the owner only.
pub fn bootstrap(
    catalog: &Catalog,
    config: &AuthConfig,
    data_dir: &Path,
) -> Result<Option<String>, CatalogError> {
    if catalog.security(|s| s.has_superuser()) {
        return Ok(None);
    }
    let (password, generated) = match &config.password {
        Some(p) => (p.0.clone(), false),
        None => (random_password(), true),
    };
    if generated {
        write_private(&data_dir.join(INITIAL_PASSWORD_FILE), &password)
            .map_err(|e| CatalogError::Store(format!("cannot write the initial password: {e}")))?;
    }
    let verifier = scram::Verifier::new(&password);
    catalog.update_security(|s| s.create_user(&config.superuser, Some(verifier), true))?;
    Ok(generated.then_some(password))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(format!("{text}\n").as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_once_with_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(std::sync::Arc::new(quiver_catalog::MemoryMetaStore)).unwrap();
        let config = AuthConfig::default();
        let password = bootstrap(&catalog, &config, dir.path()).unwrap().unwrap();
        let file = dir.path().join(INITIAL_PASSWORD_FILE);
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), password);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(catalog.security(|s| s.is_superuser("quiver")));
        assert!(bootstrap(&catalog, &config, dir.path()).unwrap().is_none());
    }
}
