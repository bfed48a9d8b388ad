//! The Postgres store (sqlx): the only module that speaks SQL.
//!
//! It implements the core's `LifecycleStore` port (`lifecycle.rs`), the
//! `NotificationStore` and `AlertStore` ports (`notification.rs`), the OAuth
//! `CredentialSource` (`credentials.rs`) and the tenant-scoped queries of the admin
//! API (`admin.rs`). Every query that takes a tenant or provider from outside is
//! scoped by tenant. Timestamps come from the caller's clock, never from `now()` in
//! SQL, so simulated time stays consistent.

mod admin;
mod credentials;
mod intake;
mod lifecycle;
mod notification;

pub use admin::{
    AttemptView, NewCredentials, NewProvider, ProviderPatch, ProviderView, request_hash,
};
pub use intake::{OutboxEntry, Route, RouteState};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;
use subkeeper_actors::clock::SharedClock;
use subkeeper_actors::ports::StoreError;

/// The embedded migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL does not parse.
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    /// Postgres is unreachable or refused us.
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
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

/// What to do when the database named in the URL does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Create it (when the role may), as `run` and `migrate` do.
    Create,
    /// Refuse with the command that creates it, as read-only commands do.
    Refuse,
}

/// Handle to the Postgres store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    clock: SharedClock,
}

impl PgStore {
    /// Connects (without migrating); refuses a missing database with the command
    /// that creates it.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        clock: SharedClock,
    ) -> Result<Self, OpenError> {
        Self::open(url, max_connections, clock, IfMissing::Refuse).await
    }

    /// Connects (without migrating); `if_missing` says what a missing database
    /// gets.
    pub async fn open(
        url: &str,
        max_connections: u32,
        clock: SharedClock,
        if_missing: IfMissing,
    ) -> Result<Self, OpenError> {
        let options = PgConnectOptions::from_str(url).map_err(OpenError::Url)?;
        let pool_options = || {
            PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(5))
        };
        let pool = match pool_options().connect_with(options.clone()).await {
            Ok(pool) => pool,
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
                    .map_err(OpenError::Connect)?
            }
            Err(e) => return Err(OpenError::Connect(e)),
        };
        Ok(Self { pool, clock })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), OpenError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The pool, for readiness checks and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// True if Postgres answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok()
    }

    /// Counts providers by status, for `subkeeper status`.
    pub async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, count(*) AS n FROM providers WHERE deleted_at IS NULL GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("status").map_err(db)?,
                    r.try_get("n").map_err(db)?,
                ))
            })
            .collect()
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

/// Maps a sqlx error to the port's error class without leaking SQL to callers:
/// Postgres' integrity and data-exception classes (SQLSTATE 23…, 22…) are a
/// refusal (the same write fails again), a cancelled statement a timeout, a pool
/// that had no connection in time a timeout, an undecodable column a corrupt
/// row, and everything else — a serialization failure or deadlock (40001,
/// 40P01, which succeed on retry), a commit whose outcome is unknown (40003),
/// I/O, TLS, a server shutting down — the store being unavailable.
fn db(e: sqlx::Error) -> StoreError {
    let message = e.to_string();
    match &e {
        sqlx::Error::Database(d) => match d.code().as_deref().map(|c| c.get(..2)) {
            Some(Some("23" | "22")) => StoreError::Rejected(message),
            Some(Some("57")) if d.code().as_deref() == Some("57014") => {
                StoreError::Timeout(message)
            }
            _ => StoreError::Unavailable(message),
        },
        sqlx::Error::PoolTimedOut => StoreError::Timeout(message),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(message),
        _ => StoreError::Unavailable(message),
    }
}

/// Parses a wire enum read from the database.
fn parse<T: FromStr>(raw: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    raw.parse()
        .map_err(|e: T::Err| StoreError::Corrupt(e.to_string()))
}

/// A provider that needs a human, for `subkeeper status`.
#[derive(Debug, Clone)]
pub struct Attention {
    /// Tenant.
    pub tenant: String,
    /// Provider id.
    pub provider: uuid::Uuid,
    /// Display name.
    pub display_name: String,
    /// error or needs_reauth.
    pub status: String,
    /// The actionable message.
    pub error_message: Option<String>,
}

impl PgStore {
    /// Every provider in error or needs_reauth, across tenants (operator CLI only).
    pub async fn needing_attention(&self) -> Result<Vec<Attention>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, id, display_name, status, error_message FROM providers \
             WHERE deleted_at IS NULL AND status IN ('error', 'needs_reauth') ORDER BY tenant_id, display_name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Attention {
                    tenant: r.try_get("tenant_id").map_err(db)?,
                    provider: r.try_get("id").map_err(db)?,
                    display_name: r.try_get("display_name").map_err(db)?,
                    status: r.try_get("status").map_err(db)?,
                    error_message: r.try_get("error_message").map_err(db)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlx_errors_map_onto_the_ports_classes() {
        assert!(matches!(
            db(sqlx::Error::PoolTimedOut),
            StoreError::Timeout(_)
        ));
        assert!(matches!(
            db(sqlx::Error::PoolClosed),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            db(sqlx::Error::ColumnNotFound("x".into())),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            db(sqlx::Error::Decode("not a kind".into())),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            parse::<ProviderKindProbe>("nope"),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// What Postgres itself answers, classified: a refused value, a constraint, a
    /// cancelled statement.
    #[tokio::test]
    async fn postgres_errors_map_onto_the_ports_classes() {
        use sqlx::{Connection as _, Executor as _};
        let server = std::env::var("SUBKEEPER_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await else {
            panic!(
                "PostgreSQL is not reachable at {server}: run scripts/test (or scripts/test-services)"
            );
        };
        let mut class = async |sql: &str| -> StoreError {
            match conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await {
                Ok(_) => panic!("{sql} succeeded"),
                Err(e) => db(e),
            }
        };
        assert!(matches!(class("SELECT 1/0").await, StoreError::Rejected(_)));
        assert!(matches!(
            class("SELECT 'x'::int").await,
            StoreError::Rejected(_)
        ));
        assert!(matches!(
            class("CREATE TEMP TABLE t (x int PRIMARY KEY); INSERT INTO t VALUES (1), (1)").await,
            StoreError::Rejected(_)
        ));
        assert!(matches!(
            class("SET statement_timeout = 1; SELECT pg_sleep(1)").await,
            StoreError::Timeout(_)
        ));
        assert!(matches!(
            class("SELECT * FROM no_such_table").await,
            StoreError::Unavailable(_)
        ));
    }

    /// A wire enum that never parses.
    #[derive(Debug)]
    struct ProviderKindProbe;

    impl FromStr for ProviderKindProbe {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            Err(format!("unknown value {s}"))
        }
    }
}
