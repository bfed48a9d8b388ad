//! A Postgres database created for one test or bench run and dropped with it.
//! Owns database names and the admin connection; the schema is the service's
//! (it migrates on start, or the caller migrates through `PgStore`).

use crate::Purpose;
use sqlx::{Connection, Executor, PgConnection, PgPool};

/// Base URL of the Postgres server runs create their databases on
/// (`SUBKEEPER_TEST_DATABASE_URL`, default the local trust-auth server).
pub fn server_url() -> String {
    std::env::var("SUBKEEPER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs one statement on `server`'s `postgres` database.
async fn admin(server: &str, sql: String) -> sqlx::Result<()> {
    let mut conn = PgConnection::connect(&format!("{server}/postgres")).await?;
    conn.execute(sqlx::AssertSqlSafe(sql)).await?;
    Ok(())
}

/// The one line a run that cannot reach the server fails with: the service, its
/// URL, why, and the script that starts it.
fn unreachable(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "PostgreSQL is not reachable at {} ({e}): run scripts/test (or scripts/test-services), which installs and starts it",
        server_url()
    )
}

/// A connection to the server's `postgres` database, or the one-line error that
/// names PostgreSQL and the script that starts it.
pub async fn connect_server() -> anyhow::Result<PgConnection> {
    PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .map_err(unreachable)
}

/// A database of its own, dropped (`WITH (FORCE)`) when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    /// `subkeeper_test_<random>` or `subkeeper_bench_<random>`.
    pub name: String,
    /// Its connection URL.
    pub url: String,
    /// The server it lives on (what it is dropped from).
    server: String,
}

impl TestDb {
    /// Creates a fresh, empty database on the shared server.
    pub async fn create(purpose: Purpose) -> anyhow::Result<Self> {
        // Reachable first: a refused CREATE then is a real error, not a missing server.
        drop(connect_server().await?);
        Self::create_on(&server_url(), purpose).await
    }

    /// Creates a fresh, empty database on `server` (`postgres://user@host:port`),
    /// such as a test's own server that it restarts.
    pub async fn create_on(server: &str, purpose: Purpose) -> anyhow::Result<Self> {
        let name = format!("{}_{}", purpose.database_prefix(), crate::fresh_id());
        admin(server, format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| anyhow::anyhow!("creating database {name} on {server}: {e}"))?;
        Ok(Self {
            url: format!("{server}/{name}"),
            name,
            server: server.to_owned(),
        })
    }

    /// A name no run has created on the shared server, not created: for tests
    /// of what creates it (dropped on drop if something did).
    pub fn unborn(purpose: Purpose) -> Self {
        let name = format!("{}_{}", purpose.database_prefix(), crate::fresh_id());
        let server = server_url();
        Self {
            url: format!("{server}/{name}"),
            name,
            server,
        }
    }

    /// A pool on it.
    pub async fn pool(&self) -> sqlx::Result<PgPool> {
        PgPool::connect(&self.url).await
    }

    /// One connection to it.
    pub async fn connect(&self) -> sqlx::Result<PgConnection> {
        PgConnection::connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = self.server.clone();
        crate::block_on_aside(async move {
            if let Err(e) = admin(
                &server,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await
            {
                eprintln!("could not drop database {name}: {e}");
            }
        });
    }
}
