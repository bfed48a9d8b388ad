//! What an embedded deployment (the SQLite store) keeps beside its store file so
//! that it runs with nothing configured: the admin API's token (`admin-token`)
//! and the keys that seal secrets at rest (`secret-keys`), each generated — at
//! random, readable by its owner only — the first time `run` needs it, and read
//! back by the CLI. A shared (PostgreSQL) deployment configures both instead.

use crate::config::Config;
use crate::store::Location;
use std::io::Write as _;
use std::path::PathBuf;

/// The directory the embedded store's companion files live in: the store file's
/// own directory.
fn directory(config: &Config) -> PathBuf {
    match config.store_location() {
        Location::Sqlite(path) => path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".")),
        Location::Postgres(_) => config.data_dir.clone(),
    }
}

/// The contents of the companion file `name` and its path. `make`: create it
/// with what `make` returns when it does not exist yet (without `make`, a missing
/// file is an error).
pub fn companion_file(
    config: &Config,
    name: &str,
    make: Option<&dyn Fn() -> std::io::Result<String>>,
) -> std::io::Result<(String, PathBuf)> {
    let dir = directory(config);
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(content) => return Ok((content.trim().to_owned(), path)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(e) if make.is_none() => return Err(e),
        Err(_) => {}
    }
    let Some(make) = make else {
        return Err(std::io::ErrorKind::NotFound.into());
    };
    std::fs::create_dir_all(&dir)?;
    let content = make()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")?;
    Ok((content, path))
}

/// Length of a generated admin token, in random bytes (hex-encoded: twice as many
/// characters).
const ADMIN_TOKEN_BYTES: usize = 24;

/// The admin token in `admin-token`; `create` generates it when missing.
pub fn admin_token(config: &Config, create: bool) -> std::io::Result<(String, PathBuf)> {
    let make = || {
        let bytes: [u8; ADMIN_TOKEN_BYTES] = rand::random();
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    };
    companion_file(config, "admin-token", create.then_some(&make as _))
}

/// The secret keys in `secret-keys`; `create` generates one key when missing.
pub fn secret_keys(config: &Config, create: bool) -> std::io::Result<(String, PathBuf)> {
    let make = || {
        crate::secrets::Keyring::generate_entry(chrono::Utc::now().date_naive())
            .map_err(std::io::Error::other)
    };
    companion_file(config, "secret-keys", create.then_some(&make as _))
}
