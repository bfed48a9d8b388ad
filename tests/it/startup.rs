//! What an operator sees when a start-up dependency is missing: the binary names
//! the variable, the service or the exact command to run — never a bare
//! `channel closed` or `relative URL without a base`.
//!
//! The database tests are about PostgreSQL (a missing database, `createdb`) and
//! run there only; their embedded twin (a missing store file) is in
//! `embedded.rs`. The demo test runs the demo on PostgreSQL with NATS down.

use crate::support::TestDb;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::db::{connect_server, server_url};

/// The built `subkeeper` binary with no SUBKEEPER_* variable of the test's own
/// environment (unknown ones are refused, and the test's own, like
/// SUBKEEPER_TEST_DATABASE_URL, are not the service's).
pub fn subkeeper_binary(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_subkeeper"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("SUBKEEPER_")) {
        command.env_remove(name);
    }
    command
        .args(args)
        .env("SUBKEEPER_LOG_FILTER", "warn")
        .env("RUST_BACKTRACE", "0");
    command
}

/// Runs `command` off the async runtime.
pub async fn output(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// A database name no test has created (dropped, if something created it, when
/// the returned guard goes).
fn unborn_database() -> TestDb {
    TestDb::unborn(Purpose::Test)
}

/// A connection to the Postgres server, or one line naming it and the script.
async fn server() -> sqlx::PgConnection {
    connect_server().await.unwrap_or_else(|e| panic!("{e}"))
}

async fn exists(name: &str) -> bool {
    let mut conn = server().await;
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[actix_web::test]
async fn migrate_creates_a_missing_database_and_status_names_the_command() {
    drop(server().await);
    let db = unborn_database();

    let mut status = subkeeper_binary(&["status"]);
    status.env("SUBKEEPER_DATABASE_URL", &db.url);
    let out = output(status).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let server = url::Url::parse(&server_url()).unwrap();
    let (host, port, user) = (
        server.host_str().unwrap().to_owned(),
        server.port().unwrap_or(5432),
        server.username().to_owned(),
    );
    assert!(
        stderr.contains(&format!(
            "database \"{}\" does not exist on {host}:{port}",
            db.name
        )) && stderr.contains(&format!(
            "createdb -h {host} -p {port} -U {user} {}",
            db.name
        )),
        "status does not say how to create the database: {stderr}"
    );
    assert!(!stderr.contains("at line"), "{stderr}");
    assert!(!exists(&db.name).await, "status must not create it");

    let mut migrate = subkeeper_binary(&["migrate"]);
    migrate.env("SUBKEEPER_DATABASE_URL", &db.url);
    let out = output(migrate).await;
    assert!(
        out.status.success(),
        "migrate on a missing database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(exists(&db.name).await);
    let mut status = subkeeper_binary(&["status"]);
    status.env("SUBKEEPER_DATABASE_URL", &db.url);
    let out = output(status).await;
    assert!(
        out.status.success(),
        "status after migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[actix_web::test]
async fn bad_settings_name_the_variable() {
    let mut bad_url = subkeeper_binary(&["migrate"]);
    bad_url.env("SUBKEEPER_DATABASE_URL", "notaurl");
    let out = output(bad_url).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("SUBKEEPER_DATABASE_URL is neither a postgres:// URL"),
        "{stderr}"
    );

    let mut misspelt = subkeeper_binary(&["migrate"]);
    misspelt.env("SUBKEEPER_FAILURE_TRESHOLD", "3");
    let out = output(misspelt).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "SUBKEEPER_FAILURE_TRESHOLD is not a setting; did you mean SUBKEEPER_FAILURE_THRESHOLD?"
        ),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("renewal_concurrency").count(),
        0,
        "lists every key: {stderr}"
    );
}
