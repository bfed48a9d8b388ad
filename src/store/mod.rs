//! The store: the only module that speaks SQL. One [`Store`] over either
//! PostgreSQL (production; the only choice for several instances) or an embedded
//! SQLite file (one instance, nothing to install), behind the same ports.
//!
//! It implements the core's `LifecycleStore` (`lifecycle.rs`), `NotificationStore`
//! and `AlertStore` (`notification.rs`), the intake ports `IntakeStore` and
//! `Outbox` (`intake.rs`), the credentials ports (`credentials.rs`), the
//! `DeliveryLog` (`deliveries.rs`), the
//! `AdminStore` behind the admin API and the operator CLI (`admin.rs`) and the
//! in-process bus's `StreamLog` (`stream.rs`). Every query that takes a tenant or
//! provider from outside is scoped by tenant. Timestamps come from the caller's
//! clock, never from `now()` in SQL, so simulated time stays consistent.
//!
//! Each method is written once: [`on_db!`] runs its body against whichever pool
//! the store has, and where the dialects differ (row locks, arrays, set-based
//! updates) the method matches on [`Db`] and shows both side by side.

mod admin;
mod attempts;
mod catchup;
mod credentials;
mod deliveries;
mod intake;
mod leases;
mod lifecycle;
mod notification;
mod open;
mod rows;
pub mod statements;
mod status_page;
mod stream;

pub use admin::request_hash;
pub use leases::Leases;
pub use open::{IfMissing, Location, OpenError, SingleInstance};

use crate::secrets::Keyring;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use std::str::FromStr;
use std::sync::Arc;
use subkeeper_actors::ports::StoreError;
use subkeeper_actors::ports::clock::SharedClock;

/// Runs `$body` with `$pool` bound to the store's pool, whichever database it is;
/// the body is type-checked once per database.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Postgres($pool) => $body,
            $crate::store::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// The pool of whichever database the store uses.
#[derive(Clone, Debug)]
pub enum Db {
    /// PostgreSQL: several instances may share it.
    Postgres(PgPool),
    /// An embedded SQLite file: one instance only.
    Sqlite(SqlitePool),
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    clock: SharedClock,
    /// Seals and opens client secrets and refresh tokens; without it, writing
    /// one is refused (reading legacy clear values still works).
    secrets: Option<Arc<Keyring>>,
    /// The instance whose providers `owned_providers` lists (leases, Postgres);
    /// `None`: this store's one instance owns every provider.
    owner: Option<i64>,
    /// Renewal attempts waiting for the next group commit (shared by clones).
    attempts: Arc<attempts::AttemptQueue>,
}

/// What differs between the two databases' pools, for bodies run by [`on_db!`].
pub(crate) trait Dialect {
    /// The database.
    type Database: sqlx::Database;

    /// Starts a transaction that will write. SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that read first never fails to
    /// upgrade; Postgres locks rows as it goes.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>;

    /// `FOR UPDATE` where rows can be locked (Postgres); empty where writers are
    /// serialized anyway (SQLite).
    fn for_update(&self) -> &'static str;

    /// `FOR SHARE`: the row read may not change until commit (Postgres); empty on
    /// SQLite, whose write transaction already excludes every other writer.
    fn for_share(&self) -> &'static str;
}

impl Dialect for PgPool {
    type Database = sqlx::Postgres;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }

    fn for_update(&self) -> &'static str {
        "FOR UPDATE"
    }

    fn for_share(&self) -> &'static str {
        "FOR SHARE"
    }
}

impl Dialect for SqlitePool {
    type Database = sqlx::Sqlite;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }

    fn for_update(&self) -> &'static str {
        ""
    }

    fn for_share(&self) -> &'static str {
        ""
    }
}

impl Store {
    /// The same store, sealing and opening secrets with `keyring`.
    pub fn with_keyring(mut self, keyring: Arc<Keyring>) -> Self {
        self.secrets = Some(keyring);
        self
    }

    /// The same store, listing as owned only the providers `instance` holds a
    /// lease on (see [`Leases`]).
    pub fn owned_by(mut self, instance: i64) -> Self {
        self.owner = Some(instance);
        self
    }

    /// Seals a secret for `(row, field)`, or refuses when no key is configured.
    fn seal(
        &self,
        secret: Option<&str>,
        row: uuid::Uuid,
        field: &str,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let Some(secret) = secret else {
            return Ok((None, None));
        };
        let keyring = self.secrets.as_ref().ok_or_else(|| {
            StoreError::Rejected(
                "no SUBKEEPER_SECRET_KEYS configured: secrets are stored sealed".into(),
            )
        })?;
        let sealed = keyring
            .seal(secret, &secret_context(row, field))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok((Some(sealed.value), Some(sealed.key_id)))
    }

    /// Opens a stored secret (`key` NULL: a value from before sealing, in clear).
    fn open_secret(
        &self,
        value: Option<String>,
        key: Option<&str>,
        row: uuid::Uuid,
        field: &str,
    ) -> Result<Option<String>, StoreError> {
        let (Some(value), Some(key)) = (value.as_ref(), key) else {
            return Ok(value);
        };
        let keyring = self.secrets.as_ref().ok_or_else(|| {
            StoreError::Corrupt(format!(
                "a sealed secret needs SUBKEEPER_SECRET_KEYS (key '{key}')"
            ))
        })?;
        keyring
            .open(key, value, &secret_context(row, field))
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The pool.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Closes the pool: nothing new is handed out, idle connections close, and
    /// this waits until every connection still checked out has come back and
    /// closed. After it, no task holds a connection whose drop would need the
    /// runtime (sqlx returns a dropped connection on a task of its own).
    pub async fn close(&self) {
        on_db!(&self.db, pool => pool.close().await);
    }

    /// True for PostgreSQL, the store several instances can share.
    pub fn is_shared(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// True if the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        on_db!(&self.db, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }
}

/// What a sealed secret is bound to: its row and column.
fn secret_context(row: uuid::Uuid, field: &str) -> String {
    format!("oauth_credentials:{row}:{field}")
}

/// `$start, $start+1, …` for `n` values: a list for `IN (…)` that both databases
/// read the same way.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Maps a sqlx error to the port's error class without leaking SQL to callers:
/// a constraint or a value the column cannot hold is a refusal (the same write
/// fails again), a cancelled statement, a busy SQLite file or a pool that had no
/// connection in time a timeout, an undecodable column a corrupt row, and
/// everything else — a serialization failure or deadlock (Postgres 40001, 40P01,
/// which succeed on retry), a commit whose outcome is unknown (40003), I/O, TLS,
/// a server shutting down, a full disk — the store being unavailable.
fn db(e: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    let message = e.to_string();
    match &e {
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            // SQLite reports extended result codes; the primary code is the low byte.
            let sqlite = d
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .and_then(|_| code.parse::<i32>().ok())
                .map(|c| c & 0xff);
            match (d.kind(), sqlite) {
                (
                    ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation,
                    _,
                ) => StoreError::Rejected(message),
                // SQLITE_CONSTRAINT, SQLITE_TOOBIG, SQLITE_MISMATCH, SQLITE_RANGE.
                (_, Some(19 | 18 | 20 | 25)) => StoreError::Rejected(message),
                // SQLITE_BUSY, SQLITE_LOCKED: another writer held the file too long.
                (_, Some(5 | 6)) => StoreError::Timeout(message),
                (_, Some(_)) => StoreError::Unavailable(message),
                // Postgres: integrity and data exceptions, a cancelled statement.
                _ if code.starts_with("23") || code.starts_with("22") => {
                    StoreError::Rejected(message)
                }
                _ if code == "57014" => StoreError::Timeout(message),
                _ => StoreError::Unavailable(message),
            }
        }
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
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
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

    /// What SQLite answers, classified the same way.
    #[tokio::test]
    async fn sqlite_errors_map_onto_the_ports_classes() {
        use sqlx::{Connection as _, Executor as _};
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        conn.execute("CREATE TABLE t (x integer PRIMARY KEY, y text NOT NULL CHECK (y <> 'bad'))")
            .await
            .unwrap();
        let mut class = async |sql: &str| -> StoreError {
            match conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await {
                Ok(_) => panic!("{sql} succeeded"),
                Err(e) => db(e),
            }
        };
        assert!(matches!(
            class("INSERT INTO t VALUES (1, 'a'), (1, 'b')").await,
            StoreError::Rejected(_)
        ));
        assert!(matches!(
            class("INSERT INTO t VALUES (2, NULL)").await,
            StoreError::Rejected(_)
        ));
        assert!(matches!(
            class("INSERT INTO t VALUES (3, 'bad')").await,
            StoreError::Rejected(_)
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
