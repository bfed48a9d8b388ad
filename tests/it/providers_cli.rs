//! `subkeeper providers list|add|remove|import` as an operator runs them: the
//! real binary against the running service's admin API. An import applies the
//! good rows and names each bad one by line; the same file twice changes
//! nothing; `remove` deletes the subscription at the provider; no secret is ever
//! printed.

use crate::startup::{output, subkeeper_binary};
use crate::support::{ADMIN_TOKEN, Backend, Harness, on_both_backends, wait_until};
use std::time::Duration;
use subkeeper_testkit::admin::{GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET};

on_both_backends!(an_import_applies_the_good_rows_names_the_bad_lines_and_twice_changes_nothing);

/// Runs `subkeeper providers ARGS` against the harness's service; exit code,
/// stdout, stderr.
async fn providers(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut all = vec!["providers", "--url", &h.base_url];
    all.extend_from_slice(args);
    let mut command = subkeeper_binary(&all);
    command.env("SUBKEEPER_TOKEN", ADMIN_TOKEN);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = output(command).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stdout.contains(GRAPH_CLIENT_SECRET) && !stderr.contains(GRAPH_CLIENT_SECRET),
        "a secret was printed:\n{stdout}\n{stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

async fn names(h: &Harness, tenant: &str) -> Vec<(String, String, bool)> {
    let (_, body) = h
        .admin(
            reqwest::Method::GET,
            &format!("/tenants/{tenant}/providers?limit=500"),
            None,
        )
        .await;
    let mut names: Vec<_> = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["display_name"].as_str().unwrap().to_owned(),
                p["id"].as_str().unwrap().to_owned(),
                p["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    names.sort();
    names
}

async fn an_import_applies_the_good_rows_names_the_bad_lines_and_twice_changes_nothing(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    let dir = tempfile_dir();
    let csv = dir.join("providers.csv");
    let (id, secret) = (GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET);
    std::fs::write(
        &csv,
        format!(
            "tenant,kind,display_name,resource,enabled,flow,authority_tenant,client_id,client_secret,refresh_token,scope\n\
             acme,graph_mail,Alice inbox,users/alice/messages,,client_credentials,acme-aad,{id},{secret},,\n\
             acme,graph_mail,Bob inbox,users/bob/messages,false,client_credentials,acme-aad,{id},{secret},,\n\
             acme,exchange_2003,Old,users/old/messages,,client_credentials,acme-aad,{id},{secret},,\n\
             globex,graph_calendar,Carol calendar,users/carol/events,,client_credentials,globex-aad,{id},{secret},,\n\
             acme,graph_mail,No secret,users/dan/messages,,client_credentials,acme-aad,{id},,,\n\
             acme,graph_mail,Alice again,users/alice/messages,,client_credentials,acme-aad,{id},{secret},,\n\
             acme,graph_mail,Short\n\
             Not A Tenant,graph_mail,Eve,users/eve/messages,,client_credentials,acme-aad,{id},{secret},,\n"
        ),
    )
    .unwrap();
    let file = csv.to_str().unwrap();

    let (code, stdout, stderr) = providers(&h, &["import", file], &[]).await;
    assert_eq!(code, 2, "some rows were refused:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("8 rows: 3 created, 0 updated, 0 unchanged, 5 refused"),
        "{stdout}\n{stderr}"
    );
    for line in [4, 6, 7, 8, 9] {
        assert!(
            stderr.contains(&format!("line {line}: ")),
            "line {line} not reported:\n{stderr}"
        );
    }
    for line in [2, 3, 5] {
        assert!(
            !stderr.contains(&format!("line {line}: ")),
            "line {line} reported:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("line 4: unknown ProviderKind 'exchange_2003'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 6: flow client_credentials needs client_secret"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 7: the same provider as line 2"),
        "{stderr}"
    );

    let acme = names(&h, "acme").await;
    assert_eq!(
        acme.iter()
            .map(|(n, _, e)| (n.as_str(), *e))
            .collect::<Vec<_>>(),
        [("Alice inbox", true), ("Bob inbox", false)]
    );
    assert_eq!(names(&h, "globex").await.len(), 1);
    let alice = acme[0].1.clone();
    // The fleet took the new provider up at once: its subscription is live.
    let sub = h
        .wait_provider("acme", &alice, "healthy", |v| {
            v["health"]["subscription_status"] == "healthy"
        })
        .await["subscription"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The same file again changes nothing (not even the audit trail).
    let audit = h.rows("audit_log").await;
    let (code, stdout, _) = providers(&h, &["import", file], &[]).await;
    assert_eq!(code, 2);
    assert!(
        stdout.contains("8 rows: 0 created, 0 updated, 3 unchanged, 5 refused"),
        "{stdout}"
    );
    assert_eq!(h.rows("audit_log").await, audit);
    assert_eq!(names(&h, "acme").await, acme);

    // JSON, one object per line: a renamed display name and Bob enabled are
    // updates; nothing else moves.
    let json = dir.join("providers.json");
    let row = |name: &str, mailbox: &str, enabled: bool| {
        serde_json::json!({
            "tenant": "acme", "kind": "graph_mail", "display_name": name,
            "resource": format!("users/{mailbox}/messages"), "enabled": enabled,
            "flow": "client_credentials", "authority_tenant": "acme-aad",
            "client_id": id, "client_secret": secret,
        })
        .to_string()
    };
    std::fs::write(
        &json,
        format!(
            "{}\n{}\n{{\"tenant\": \"acme\"}}\n",
            row("Alice's inbox", "alice", true),
            row("Bob inbox", "bob", true)
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = providers(&h, &["import", json.to_str().unwrap()], &[]).await;
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 rows: 0 created, 2 updated, 0 unchanged, 1 refused"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("line 3: missing field"), "{stderr}");
    let acme = names(&h, "acme").await;
    assert_eq!(
        acme.iter()
            .map(|(n, _, e)| (n.as_str(), *e))
            .collect::<Vec<_>>(),
        [("Alice's inbox", true), ("Bob inbox", true)]
    );

    // `add` is idempotent too; its secret comes from the environment.
    let add = [
        "add",
        "--tenant",
        "acme",
        "--kind",
        "graph_mail",
        "--name",
        "Frank inbox",
        "--resource",
        "users/frank/messages",
        "--flow",
        "client_credentials",
        "--authority-tenant",
        "acme-aad",
        "--client-id",
        id,
    ];
    let env = [("SUBKEEPER_PROVIDER_CLIENT_SECRET", secret)];
    let (code, stdout, stderr) = providers(&h, &add, &env).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.starts_with("created "), "{stdout}");
    let (code, stdout, _) = providers(&h, &add, &env).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("unchanged "), "{stdout}");

    // `list` uses the words of the status page and `subkeeper status`.
    let (code, stdout, _) = providers(&h, &["list", "--tenant", "acme"], &[]).await;
    assert_eq!(code, 0);
    let alice_line = stdout.lines().find(|l| l.starts_with(&alice)).unwrap();
    assert!(alice_line.contains("graph_mail"), "{alice_line}");
    assert!(alice_line.contains(" connected "), "{alice_line}");
    assert!(alice_line.contains(" healthy "), "{alice_line}");
    assert_eq!(
        stdout.lines().count(),
        4,
        "a header and three providers:\n{stdout}"
    );

    // `remove` deletes it, and the service deletes its subscription at Graph.
    let (code, stdout, stderr) = providers(&h, &["remove", "--tenant", "acme", &alice], &[]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!names(&h, "acme").await.iter().any(|(_, i, _)| *i == alice));
    wait_until(
        "the subscription deleted at Graph",
        Duration::from_secs(20),
        || async { !h.sim.subscriptions().iter().any(|s| s.id == sub) },
    )
    .await;
    // Another tenant's id under this tenant is not found, and nothing changes.
    let globex = names(&h, "globex").await[0].1.clone();
    let (code, _, stderr) = providers(&h, &["remove", "--tenant", "acme", &globex], &[]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    assert_eq!(names(&h, "globex").await.len(), 1);

    std::fs::remove_dir_all(&dir).unwrap();
    h.stop().await;
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("subkeeper-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
