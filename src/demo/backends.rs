//! Where the demo keeps its state and which bus it uses: by default a fresh
//! embedded store in its own data directory and the in-process bus — nothing to
//! install or start; on request a fresh database on a PostgreSQL server and the
//! demo's own subjects and streams on a NATS server. Every failure names the
//! service, where it was looked for, and the flag or variable that pointed there.
//! Touches nothing but the demo's own directory, database and streams.

use crate::bus::{BusError, NatsBus, Topology, delete_streams};
use anyhow::Context as _;
use sqlx::{Connection, Executor, PgConnection};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The database the demo creates (dropping an old one) on a PostgreSQL server.
pub const DEMO_DATABASE: &str = "subkeeper_demo";

/// How long the demo waits for a server to answer before saying it cannot reach it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a URL came from, as the messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag (`--postgres`).
    Flag(&'static str),
    /// A `SUBKEEPER_*` variable.
    Env(&'static str),
    /// A key of the `--config` file.
    ConfigFile(&'static str),
}

impl Source {
    /// The flag if given, else the variable if set, else the config file's key.
    pub fn of(flag_given: bool, flag: &'static str, var: &'static str, key: &'static str) -> Self {
        if flag_given {
            Self::Flag(flag)
        } else if std::env::var(var).is_ok_and(|v| !v.trim().is_empty()) {
            Self::Env(var)
        } else {
            Self::ConfigFile(key)
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(flag) => f.write_str(flag),
            Self::Env(var) => f.write_str(var),
            Self::ConfigFile(key) => write!(f, "{key} in the --config file"),
        }
    }
}

/// The demo's data directory: `requested` (which must be new or empty), else a new
/// one under the temp directory. Created, and returned absolute.
pub fn data_dir(requested: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match requested {
        Some(dir) => {
            let used = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
            if used {
                anyhow::bail!(
                    "--data-dir {} is not empty; the demo starts from a fresh directory: name a new or empty one, or leave --data-dir out for a new one under {}",
                    dir.display(),
                    std::env::temp_dir().display()
                );
            }
            dir.to_path_buf()
        }
        None => std::env::temp_dir().join(format!(
            "subkeeper-demo-{}-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S"),
            std::process::id()
        )),
    };
    std::fs::create_dir_all(&dir).with_context(|| {
        let given = if requested.is_some() {
            " (--data-dir)"
        } else {
            " (under the temp directory; name another with --data-dir)"
        };
        format!(
            "cannot create the demo's data directory {}{given}",
            dir.display()
        )
    })?;
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// `host:port` of a PostgreSQL URL, for messages.
pub fn postgres_server(url: &url::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("localhost"),
        url.port().unwrap_or(5432)
    )
}

/// Drops and recreates [`DEMO_DATABASE`] on the server of `url`; its URL.
pub async fn fresh_database(url: &str, source: Source) -> anyhow::Result<String> {
    let mut server = url::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("{source} is not a postgres:// URL: {e}"))?;
    let at = postgres_server(&server);
    server.set_path("/postgres");
    let connect = PgConnection::connect(server.as_str());
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => anyhow::bail!("cannot reach PostgreSQL at {at} ({source}): {e}"),
        Err(_) => anyhow::bail!(
            "cannot reach PostgreSQL at {at} ({source}): no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
    };
    for statement in [
        format!("DROP DATABASE IF EXISTS {DEMO_DATABASE} WITH (FORCE)"),
        format!("CREATE DATABASE {DEMO_DATABASE}"),
    ] {
        conn.execute(sqlx::AssertSqlSafe(statement.clone()))
            .await
            .with_context(|| {
                format!("PostgreSQL at {at} ({source}) refused `{statement}` for the demo's own database")
            })?;
    }
    server.set_path(&format!("/{DEMO_DATABASE}"));
    Ok(server.to_string())
}

/// Checks that NATS at `url` answers, and deletes the demo's streams left by an
/// earlier run so the story starts from nothing.
pub async fn fresh_streams(url: &str, source: Source, topology: &Topology) -> anyhow::Result<()> {
    match NatsBus::connect(url, topology.clone()).await {
        Ok(_) => {}
        Err(BusError::Connect { url, reason }) => {
            anyhow::bail!("cannot reach NATS at {url} ({source}): {reason}")
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("NATS ({source})"))),
    }
    delete_streams(url, topology).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_in_use_is_refused_and_a_new_one_is_created() {
        let root = std::env::temp_dir().join(format!("subkeeper-demo-test-{}", std::process::id()));
        let fresh = root.join("fresh");
        assert_eq!(
            data_dir(Some(&fresh)).unwrap(),
            fresh.canonicalize().unwrap()
        );
        std::fs::write(fresh.join("subkeeper.db"), b"").unwrap();
        let err = data_dir(Some(&fresh)).unwrap_err().to_string();
        assert!(
            err.contains("--data-dir") && err.contains("not empty"),
            "{err}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sources_are_named_as_the_user_gave_them() {
        assert_eq!(Source::Flag("--postgres").to_string(), "--postgres");
        assert_eq!(
            Source::ConfigFile("database_url").to_string(),
            "database_url in the --config file"
        );
        let url = url::Url::parse("postgres://u@db.example/x").unwrap();
        assert_eq!(postgres_server(&url), "db.example:5432");
    }
}
