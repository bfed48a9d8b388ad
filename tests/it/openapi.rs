//! The OpenAPI document at `/api/v1/openapi.json`: generated from the handlers,
//! it names every admin route and validates (openapi-spec-validator); a
//! property-based run of schemathesis against the live service checks for no
//! 5xx, no undocumented status, and no answer that breaks the document (with
//! freely generated tenants, then against one existing provider).
//! The tools come from PyPI through `scripts/openapi-tools` (a pinned venv).
//!
//! Postgres + NATS only: the stricter database (it refuses values SQLite
//! stores) is where a refusal the API did not catch would become a 5xx.

use crate::support::{Backend, Harness};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// Runs `command` to its end on a blocking thread and returns its output. The
/// service under test runs on this test's thread (its fleet, consumers and
/// store tasks): a blocking wait here would freeze them, with whatever pool
/// connections they hold, for as long as the command runs.
async fn off_the_runtime(mut command: Command) -> std::process::Output {
    let what = format!("{:?}", command.get_program());
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{what} could not run: {e}"))
}

/// The venv's bin directory, installing it on first use.
async fn tools() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/openapi-tools");
    let out = off_the_runtime(Command::new(&script)).await;
    assert!(
        out.status.success(),
        "scripts/openapi-tools failed (python3 and PyPI are needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs `command`; panics with its output unless it succeeded.
async fn run(command: Command, what: &str) -> String {
    let out = off_the_runtime(command).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[actix_web::test]
async fn the_openapi_document_validates_and_names_every_route() {
    let h = Harness::start(Backend::PostgresNats, |_| {}).await;

    // Served without a token.
    let resp = h
        .http
        .get(format!("{}/api/v1/openapi.json", h.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");

    // Every route of the admin API, each with its method, and nothing else.
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut routes: BTreeSet<String> = crate::tokens::tenant_routes("{tenant}", "{id}")
        .into_iter()
        .map(|(method, path, _)| {
            let path = path.split('?').next().unwrap_or_default().to_owned();
            format!("{method} /api/v1{path}")
        })
        .collect();
    for route in [
        "POST /api/v1/tokens",
        "GET /api/v1/tokens",
        "DELETE /api/v1/tokens/{id}",
    ] {
        routes.insert(route.to_owned());
    }
    assert_eq!(documented, routes);
    // The error shape is the one every refusal answers with.
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"][0], "error", "{error}");

    let bin = tools().await;
    let dir = tempfile_dir();
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let mut validate = Command::new(bin.join("openapi-spec-validator"));
    validate.arg(&file);
    run(validate, "openapi-spec-validator").await;
    h.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// schemathesis over every route (but the forced renewals, see
/// [`schemathesis`]), twice against one service: first with freely generated
/// tenants and ids, then with a tenant and a provider that exist, so the
/// provider routes get past their 404 and hammer one provider's row. Any 5xx
/// fails it, as does any answer the document does not describe.
///
/// The run creates hundreds of providers in seconds, whose supervisors
/// register them at the simulator; the service still stops cleanly at the end
/// (fleet handed over, pool closed) before the runtime goes. Its budget is
/// small on purpose: a pool of 4 connections (the whole suite runs in
/// parallel against one Postgres server) and 2 fleet permits, so the admin
/// reads keep connections of their own; each run is bounded in examples and
/// in time.
#[actix_web::test]
async fn schemathesis_finds_no_5xx_and_no_undocumented_answer() {
    let h = Harness::start(Backend::PostgresNats, |c| {
        c.database_max_connections = 4;
        c.renewal_concurrency = 2;
    })
    .await;
    let provider = h.create_provider("acme", "acme-aad", "alice").await;
    let bin = tools().await;
    let dir = tempfile_dir();
    schemathesis(&h, &bin, &dir, None).await;
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!("[parameters]\n\"path.tenant\" = \"acme\"\n\"path.id\" = \"{provider}\"\n"),
    )
    .unwrap();
    schemathesis(&h, &bin, &dir, Some(&config)).await;
    h.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Examples per operation in one schemathesis run.
const MAX_EXAMPLES: &str = "8";

/// Seconds one schemathesis run may take (it stops generating once spent).
const MAX_SECONDS: &str = "25";

/// Runs schemathesis against the service with its own document (optionally
/// with a config file), leaving out the forced renewals: each waits for the
/// provider's answer (up to the attempt timeout) behind the registrations of
/// the hundreds of providers the run creates, which makes a run take many
/// minutes; their 403s, 404s and answers are covered by the tokens and admin
/// tests. Checks: no 5xx (`not_a_server_error`: not even the documented 503 —
/// the pool's acquire timeout is 30 s, far beyond what this load needs), no
/// undocumented status, no undocumented content type, every answer valid
/// against the document.
async fn schemathesis(
    h: &Harness,
    bin: &std::path::Path,
    dir: &std::path::Path,
    config: Option<&PathBuf>,
) {
    let mut st = Command::new(bin.join("schemathesis"));
    if let Some(config) = config {
        st.arg("--config-file").arg(config);
    }
    st.current_dir(dir)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", h.base_url))
        .args(["--url", &h.base_url])
        .args(["-H", &format!("Authorization: Bearer {}", h.admin_token())])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", MAX_EXAMPLES, "--max-time", MAX_SECONDS])
        .args(["--workers", "1", "--no-color", "--request-timeout", "40"])
        .args(["--generation-database", "none"])
        .args(["--exclude-path-regex", "/renew$"]);
    let started = std::time::Instant::now();
    let out = off_the_runtime(st).await;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Its summary (operations, phases, test cases), kept in the test's output.
    let summary = report
        .rsplit_once("SUMMARY")
        .map_or(report.as_str(), |(_, tail)| tail);
    eprintln!(
        "schemathesis ({}) took {:.1} s:{summary}",
        if config.is_some() {
            "one provider"
        } else {
            "generated ids"
        },
        started.elapsed().as_secs_f64()
    );
    if !out.status.success() {
        // What the service logged about its 5xx answers, with the report (the
        // whole log stays beside the run's files).
        let _ = std::fs::write(dir.join("service.log"), crate::logs::text());
        let logged: Vec<String> = crate::logs::text()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("store failure"))
            .map(str::to_owned)
            .collect();
        panic!(
            "schemathesis failed:\n{report}\nservice errors (whole log in {}):\n{}",
            dir.join("service.log").display(),
            logged.join("\n")
        );
    }
    assert!(report.contains("passed"), "{report}");
}

/// A fresh directory for the document and the run's files.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "subkeeper-openapi-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
