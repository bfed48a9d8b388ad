//! Where the store is and how it is opened: a PostgreSQL URL (the database is
//! created when it is missing and the role may) or an embedded SQLite file under
//! the data directory (created with its directory), each migrated with its own
//! embedded migrations. An embedded store is one instance's: [`SingleInstance`]
//! keeps a second `run` off the same file.

use super::{Db, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use subkeeper_actors::ports::clock::SharedClock;

/// The PostgreSQL migrations (`migrations/postgres/`).
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The embedded store's migrations (`migrations/sqlite/`).
pub static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for a SQLite file another connection is writing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a caller waits for a free Postgres connection unless the caller
/// says otherwise ([`Store::open_with`]; the service takes
/// `database_acquire_timeout_seconds`).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A PostgreSQL URL (`postgres://…`).
    Postgres(String),
    /// An embedded SQLite file.
    Sqlite(PathBuf),
}

impl Location {
    /// `SUBKEEPER_DATABASE_URL` if set (`postgres://…`, or `sqlite:PATH`), else the
    /// embedded file `subkeeper.db` in `data_dir`.
    pub fn from_url(url: &str, data_dir: &Path) -> Self {
        let url = url.trim();
        if url.is_empty() {
            return Self::Sqlite(data_dir.join("subkeeper.db"));
        }
        match url.strip_prefix("sqlite:") {
            Some(path) => Self::Sqlite(PathBuf::from(path.trim_start_matches("//"))),
            None => Self::Postgres(url.to_owned()),
        }
    }

    /// How the location is named in messages: a SQLite path, or Postgres' host,
    /// port and database — never a password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("embedded SQLite store {}", path.display()),
            Self::Postgres(url) => match PgConnectOptions::from_str(url) {
                Ok(o) => format!(
                    "PostgreSQL {}:{}/{}",
                    o.get_host(),
                    o.get_port(),
                    o.get_database().unwrap_or_else(|| o.get_username())
                ),
                Err(_) => "PostgreSQL (unparsable URL)".into(),
            },
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL does not parse.
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    /// Postgres is unreachable or refused us.
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
    /// The embedded store's file cannot be created or opened.
    #[error("cannot open the embedded store {path}: {reason}")]
    Embedded {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// Another process runs the service on the same embedded store.
    #[error(
        "another subkeeper instance is using the embedded store {path}; one embedded store serves one instance — several instances need PostgreSQL (SUBKEEPER_DATABASE_URL) and NATS (SUBKEEPER_NATS_URL)"
    )]
    InUse {
        /// The file.
        path: String,
    },
    /// The server is up but the database does not exist (and could not be created).
    #[error(
        "database \"{database}\" does not exist on {server}{why}; create it with `{command}`, or run `subkeeper migrate`, which creates it when the role may"
    )]
    MissingDatabase {
        /// The database named in the URL.
        database: String,
        /// host:port of the server.
        server: String,
        /// The exact command that creates it.
        command: String,
        /// Why creating it failed, if it was tried (starts with "; ").
        why: String,
    },
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// What to do when the database named does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Create it (when the role may), as `run` and `migrate` do.
    Create,
    /// Refuse with the command that creates it, as read-only commands do.
    Refuse,
}

impl Store {
    /// Connects (without migrating); refuses a missing database with the command
    /// that creates it.
    pub async fn connect(
        location: &Location,
        max_connections: u32,
        clock: SharedClock,
    ) -> Result<Self, OpenError> {
        Self::open(location, max_connections, clock, IfMissing::Refuse).await
    }

    /// Connects (without migrating); `if_missing` says what a missing database or
    /// embedded file gets.
    pub async fn open(
        location: &Location,
        max_connections: u32,
        clock: SharedClock,
        if_missing: IfMissing,
    ) -> Result<Self, OpenError> {
        Self::open_with(
            location,
            max_connections,
            DEFAULT_ACQUIRE_TIMEOUT,
            clock,
            if_missing,
        )
        .await
    }

    /// [`Store::open`] whose Postgres callers wait up to `acquire_timeout` for a
    /// free connection.
    pub async fn open_with(
        location: &Location,
        max_connections: u32,
        acquire_timeout: Duration,
        clock: SharedClock,
        if_missing: IfMissing,
    ) -> Result<Self, OpenError> {
        let db = match location {
            Location::Postgres(url) => Db::Postgres(
                open_postgres(url, max_connections, acquire_timeout, if_missing).await?,
            ),
            Location::Sqlite(path) => Db::Sqlite(open_sqlite(path, if_missing).await?),
        };
        // Attempt batches committed at once: on Postgres up to half the pool
        // (the rest serves everything else), at most 4 — more slots make
        // smaller batches, not faster ones; SQLite has one writer.
        let commits = match &db {
            Db::Postgres(_) => (max_connections as usize / 2).clamp(1, 4),
            Db::Sqlite(_) => 1,
        };
        Ok(Self {
            db,
            clock,
            secrets: None,
            owner: None,
            attempts: std::sync::Arc::new(super::attempts::AttemptQueue::new(commits)),
        })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), OpenError> {
        match &self.db {
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }
}

/// Opens the pool. Every connection plans each statement for the values it is
/// run with (`plan_cache_mode = force_custom_plan`): a generic plan cached
/// while a table was nearly empty would otherwise stay in use once it holds
/// 100,000 rows (measured: a partial-index scan of 10.7 ms instead of 0.04 ms
/// per attempt). Replanning the short statements here costs microseconds.
async fn open_postgres(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    if_missing: IfMissing,
) -> Result<sqlx::PgPool, OpenError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(OpenError::Url)?
        .options([("plan_cache_mode", "force_custom_plan")]);
    let pool_options = || {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
    };
    match pool_options().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(e) if is_missing_database(&e) => {
            let why = match if_missing {
                IfMissing::Refuse => String::new(),
                IfMissing::Create => match create_database(&options).await {
                    Ok(()) => String::new(),
                    Err(e) => format!("; creating it failed: {e}"),
                },
            };
            if !why.is_empty() || if_missing == IfMissing::Refuse {
                return Err(missing_database(&options, why));
            }
            pool_options()
                .connect_with(options)
                .await
                .map_err(OpenError::Connect)
        }
        Err(e) => Err(OpenError::Connect(e)),
    }
}

/// Opens the SQLite file in WAL mode, every commit synced to disk before it
/// returns (a webhook is answered 202 only after its durable write), foreign keys
/// enforced. One connection: SQLite has one writer at a time anyway, and a single
/// connection never meets a locked file.
async fn open_sqlite(path: &Path, if_missing: IfMissing) -> Result<sqlx::SqlitePool, OpenError> {
    let embedded = |reason: String| OpenError::Embedded {
        path: path.display().to_string(),
        reason,
    };
    if if_missing == IfMissing::Refuse && !path.exists() {
        return Err(embedded(
            "no such file; `subkeeper run` or `subkeeper migrate` creates it".into(),
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| embedded(format!("cannot create {}: {e}", dir.display())))?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(if_missing == IfMissing::Create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(SQLITE_BUSY_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| embedded(e.to_string()))
}

/// An exclusive claim on an embedded store by the one process that runs the
/// service on it; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct SingleInstance {
    /// The locked file, `<store>.lock`.
    _lock: std::fs::File,
}

impl SingleInstance {
    /// Locks `<path>.lock`, or says another instance holds it.
    pub fn claim(path: &Path) -> Result<Self, OpenError> {
        let lock_path = path.with_extension("db.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| OpenError::Embedded {
                path: lock_path.display().to_string(),
                reason: e.to_string(),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _lock: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse {
                path: path.display().to_string(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(OpenError::Embedded {
                path: lock_path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

/// Postgres' `invalid_catalog_name`: the database in the URL does not exist.
fn is_missing_database(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "3D000")
}

/// Creates the database `options` names, connected to the server's `postgres`
/// database with the same role.
async fn create_database(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    use sqlx::{Connection as _, Executor as _};
    // Without a database in the URL, Postgres uses the role's name.
    let name = options
        .get_database()
        .unwrap_or_else(|| options.get_username());
    let mut conn = sqlx::PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match conn
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
        .await
    {
        Ok(_) => tracing::info!(database = name, "created the database"),
        // Another process (a second instance starting) created it first.
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The refusal for a missing database, with the command that creates it.
fn missing_database(options: &PgConnectOptions, why: String) -> OpenError {
    let database = options
        .get_database()
        .unwrap_or_else(|| options.get_username())
        .to_owned();
    let (host, port, user) = (
        options.get_host(),
        options.get_port(),
        options.get_username(),
    );
    OpenError::MissingDatabase {
        command: format!("createdb -h {host} -p {port} -U {user} {database}"),
        server: format!("{host}:{port}"),
        database,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_url_is_the_embedded_store_in_the_data_directory() {
        let dir = Path::new("/var/lib/subkeeper");
        assert_eq!(
            Location::from_url("", dir),
            Location::Sqlite(dir.join("subkeeper.db"))
        );
        assert_eq!(
            Location::from_url("sqlite:/tmp/x.db", dir),
            Location::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            Location::from_url("sqlite:///tmp/x.db", dir),
            Location::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            Location::from_url("postgres://u:secret@db:5432/sk", dir),
            Location::Postgres("postgres://u:secret@db:5432/sk".into())
        );
        assert_eq!(
            Location::from_url("postgres://u:secret@db:5432/sk", dir).describe(),
            "PostgreSQL db:5432/sk"
        );
    }

    #[test]
    fn a_second_instance_on_one_embedded_store_is_refused_until_the_first_stops() {
        let dir = std::env::temp_dir().join(format!("subkeeper-lock-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("subkeeper.db");
        let first = SingleInstance::claim(&path).unwrap();
        let second = SingleInstance::claim(&path).unwrap_err();
        assert!(second.to_string().contains("PostgreSQL"), "{second}");
        drop(first);
        SingleInstance::claim(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
