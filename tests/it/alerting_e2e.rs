//! The alerting path on the real programs: a real Prometheus scrapes this test's
//! subkeeper every second and evaluates `alerts/subkeeper.rules.yml`; a real
//! Alertmanager, configured by `alerts/render-alertmanager.sh`, delivers to a webhook
//! receiver run by the test. A provider the simulator fails on create reaches three
//! consecutive failures and the page names its tenant and provider; the simulator
//! heals and the resolved notification follows. While it pages, every PromQL
//! expression of `dashboards/*.json` is run against that Prometheus and must return
//! data.
//!
//! What differs from production, all of it timing only (the expressions, labels,
//! routes and receivers are the real files'):
//! - the rules are a copy whose `for:` durations and group `interval:`s are 1 s
//!   (production: minutes and 30 s);
//! - the Prometheus config is `deploy/prometheus.yml` with 1 s scrape and evaluation
//!   intervals and this test's addresses, plus `--rules.alert.resend-delay=1s`;
//! - the Alertmanager config is the rendered `alerts/alertmanager.yml` with
//!   `group_wait` and `group_interval` of 1 s (production: 30 s and 5 m).
//!
//! Postgres + NATS only: every dashboard panel must have data, the JetStream
//! panels included, which only NATS feeds (and the test binary's metrics recorder
//! is process-wide, so an embedded run would see other tests' JetStream series).
//! The alerts themselves — firing, resolved, silent — are checked on both
//! backends in `pipeline.rs`.

use crate::monitoring::{
    Alertmanager, Delivery, Prometheus, TempDir, WebhookReceiver, repo_root, require_binary,
    rewrite_lines, sample_values, set_yaml_value,
};
use crate::support::{Backend, Harness};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use subkeeper_testkit::sim::{ChangeType, Fault, FaultOperation, FaultRule};

const ALERT: &str = "SubkeeperProviderRenewalFailing";

/// Dashboard panels allowed to return no data in this scenario, as
/// (dashboard file, panel title, why). Keep it short: every entry is a panel the
/// test cannot vouch for. Empty today: the scenario produces data for every panel
/// (carol is both in error and silent; the JetStream failure counter is exported
/// at 0 per stream, so its panel has data although NATS never fails here).
const ALLOWED_EMPTY: &[(&str, &str, &str)] = &[];

/// The rule file with every `for:` and group `interval:` set to 1 s.
fn test_rules() -> String {
    let rules = std::fs::read_to_string(repo_root().join("alerts/subkeeper.rules.yml")).unwrap();
    let alerts = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let groups = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- name:"))
        .count();
    let rules = rewrite_lines(&rules, alerts, "rule `for:`", |l| {
        set_yaml_value(l, "for", "1s")
    });
    rewrite_lines(&rules, groups, "group `interval:`", |l| {
        set_yaml_value(l, "interval", "1s")
    })
}

/// `deploy/prometheus.yml` pointed at this test's service, Alertmanager and rule
/// copy, scraping and evaluating every second.
fn test_prometheus_config(service: &str, alertmanager: &str) -> String {
    let config = std::fs::read_to_string(repo_root().join("deploy/prometheus.yml")).unwrap();
    let config = rewrite_lines(&config, 3, "scrape/evaluation intervals", |l| {
        set_yaml_value(l, "scrape_interval", "1s")
            .or_else(|| set_yaml_value(l, "evaluation_interval", "1s"))
    });
    let replace = |config: String, from: &str, to: &str| {
        assert_eq!(
            config.matches(from).count(),
            1,
            "deploy/prometheus.yml should contain {from} once"
        );
        config.replace(from, to)
    };
    let config = replace(config, "../alerts/subkeeper.rules.yml", "rules.yml");
    let config = replace(
        config,
        "\"alertmanager:9093\"",
        &format!("\"{alertmanager}\""),
    );
    replace(config, "\"subkeeper:8080\"", &format!("\"{service}\""))
}

/// `alerts/alertmanager.yml` rendered by `alerts/render-alertmanager.sh` with the
/// receiver URLs on `receiver`, grouping waits shortened to 1 s.
fn test_alertmanager_config(receiver: &str) -> String {
    let output = std::process::Command::new("sh")
        .arg(repo_root().join("alerts/render-alertmanager.sh"))
        .env("SUBKEEPER_PAGE_WEBHOOK_URL", format!("{receiver}/page"))
        .env("SUBKEEPER_NOTIFY_WEBHOOK_URL", format!("{receiver}/notify"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let config = String::from_utf8(output.stdout).unwrap();
    assert!(
        config.contains(&format!("url: {receiver}/page\n")),
        "{config}"
    );
    assert!(
        config.contains(&format!("url: {receiver}/notify\n")),
        "{config}"
    );
    rewrite_lines(&config, 2, "group_wait/group_interval", |l| {
        set_yaml_value(l, "group_wait", "1s").or_else(|| set_yaml_value(l, "group_interval", "1s"))
    })
}

/// The alerts of `delivery` for `alertname` and provider `provider` whose status is
/// `status`.
fn alerts_for<'a>(
    delivery: &'a Delivery,
    provider: &str,
    status: &str,
) -> impl Iterator<Item = &'a Value> {
    delivery.body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |a| {
            a["labels"]["alertname"] == ALERT
                && a["labels"]["provider"] == provider
                && a["status"] == status
        })
}

/// Waits for a page about `provider` with `status`, meanwhile running `tick` (and
/// checking the children are alive) every 200 ms; returns the delivery.
async fn wait_page(
    receiver: &WebhookReceiver,
    monitors: &mut (Prometheus, Alertmanager),
    provider: &str,
    status: &str,
    timeout: Duration,
) -> Delivery {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = receiver
            .all()
            .into_iter()
            .find(|d| d.path == "/page" && alerts_for(d, provider, status).next().is_some())
        {
            return found;
        }
        monitors.0.assert_running();
        monitors.1.assert_running();
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status} page for provider {provider} within {timeout:?}; received: {:#?}",
            receiver.all()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks one page: the alert names the tenant and provider, with severity page,
/// grouped per tenant and provider, with summary, description and runbook link.
fn check_page(delivery: &Delivery, tenant: &str, provider: &str, status: &str) {
    let body = &delivery.body;
    assert_eq!(body["receiver"], "page", "{body:#}");
    assert_eq!(body["groupLabels"]["tenant"], tenant, "{body:#}");
    assert_eq!(body["groupLabels"]["provider"], provider, "{body:#}");
    let alert = alerts_for(delivery, provider, status).next().unwrap();
    let labels = &alert["labels"];
    assert_eq!(labels["tenant"], tenant, "{alert:#}");
    assert_eq!(labels["severity"], "page", "{alert:#}");
    assert_eq!(labels["kind"], "graph_mail", "{alert:#}");
    for annotation in ["summary", "description"] {
        let text = alert["annotations"][annotation].as_str().unwrap_or("");
        assert!(
            text.contains(tenant) && text.contains(provider),
            "{annotation} must name tenant and provider: {alert:#}"
        );
    }
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("docs/runbook.md#subkeeperproviderrenewalfailing")),
        "{alert:#}"
    );
}

/// One panel query of a dashboard.
struct PanelQuery {
    dashboard: String,
    title: String,
    expr: String,
}

/// Every `targets[].expr` in `dashboards/*.json` (rows and nested panels included),
/// and every templating query, as (dashboard, variable name, query).
fn dashboard_queries() -> (Vec<PanelQuery>, Vec<(String, String, String)>) {
    fn walk(value: &Value, dashboard: &str, out: &mut Vec<PanelQuery>) {
        match value {
            Value::Object(map) => {
                if let Some(targets) = map.get("targets").and_then(Value::as_array) {
                    let title = map.get("title").and_then(Value::as_str).unwrap_or("");
                    for target in targets {
                        if let Some(expr) = target.get("expr").and_then(Value::as_str) {
                            out.push(PanelQuery {
                                dashboard: dashboard.to_owned(),
                                title: title.to_owned(),
                                expr: expr.to_owned(),
                            });
                        }
                    }
                }
                map.values().for_each(|v| walk(v, dashboard, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, dashboard, out)),
            _ => {}
        }
    }
    let mut panels = Vec::new();
    let mut variables = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        walk(&json["panels"], &name, &mut panels);
        for var in json["templating"]["list"].as_array().into_iter().flatten() {
            if var["type"] == "query" {
                let query = var["query"]
                    .as_str()
                    .or_else(|| var["query"]["query"].as_str())
                    .unwrap();
                variables.push((
                    name.clone(),
                    var["name"].as_str().unwrap().to_owned(),
                    query.to_owned(),
                ));
            }
        }
    }
    (panels, variables)
}

/// `expr` with Grafana's variables replaced by `values` (both `$x` and `${x}`);
/// panics if a variable is left, so a new one cannot go untested.
fn substitute(expr: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = expr.to_owned();
    // Longest names first so `$__interval` is not cut by a shorter `$__int…`.
    let mut names: Vec<_> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &values[name])
            .replace(&format!("${name}"), &values[name]);
    }
    assert!(
        !out.contains('$'),
        "unsubstituted variable in {expr:?} → {out:?}"
    );
    out
}

/// Grafana's `label_values(selector, label)` split into its arguments.
fn parse_label_values(query: &str) -> (String, String) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unsupported templating query {query:?}"));
    let (selector, label) = inner.rsplit_once(',').unwrap();
    (selector.trim().to_owned(), label.trim().to_owned())
}

#[actix_web::test]
async fn a_provider_failing_three_times_pages_with_its_tenant_and_provider_then_resolves() {
    let t0 = Instant::now();
    // Missing programs fail here, before anything starts.
    for binary in ["prometheus", "prometheus-alertmanager"] {
        require_binary(binary);
    }
    let h = Harness::start(Backend::PostgresNats, |c| {
        // carol (below) has a live subscription but gets no webhook: silent after 3 s,
        // so the drill-down's silence panels have data.
        c.mail_silence_seconds = 3;
        c.silence_check_interval_seconds = 1;
    })
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let dir = TempDir::new("subkeeper-alerting");
    std::fs::write(dir.path().join("rules.yml"), test_rules()).unwrap();
    let receiver = WebhookReceiver::start();
    let alertmanager = Alertmanager::start(
        dir.path(),
        &test_alertmanager_config(&receiver.base_url),
        &http,
    )
    .await;
    let service = h.base_url.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(
        dir.path(),
        &test_prometheus_config(&service, &format!("127.0.0.1:{}", alertmanager.port)),
        &http,
    )
    .await;
    let mut monitors = (prometheus, alertmanager);
    // Scraping before anything happens, so every counter is seen increasing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sample_values(&monitors.0.query(&http, "up{job=\"subkeeper\"} == 1").await).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never scraped subkeeper"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t_monitoring = t0.elapsed();

    // bob's creates fail with 500 until the simulator heals: three strikes, error.
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Create,
            Fault::Status {
                status: 500,
                code: "InternalServerError".into(),
                retry_after_seconds: None,
            },
        )
        .for_resource("users/bob/"),
    );
    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    let bob = h.create_provider("acme", "acme-aad", "bob").await;
    // carol (another tenant) registers, then her renewals fail: an unhealthy
    // provider that holds a subscription, for the per-provider expiry series.
    let carol = h.create_provider("contoso", "contoso-aad", "carol").await;
    let healthy = |v: &Value| v["health"]["subscription_status"] == "healthy";
    let alice_sub = h
        .wait_provider("acme", &alice, "alice registered", healthy)
        .await["subscription"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.wait_provider("contoso", &carol, "carol registered", healthy)
        .await;
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Renew,
            Fault::Status {
                status: 500,
                code: "InternalServerError".into(),
                retry_after_seconds: None,
            },
        )
        .for_resource("users/carol/"),
    );
    let (code, result) = h.force_renewal("contoso", &carol).await;
    assert!(
        code.is_success(),
        "forced renewal of carol: {code} {result:#}"
    );
    assert_eq!(result["success"], false, "{result:#}");

    // Webhooks for alice all along: the webhook and JetStream panels have traffic.
    let sim = h.sim.clone();
    let webhooks = tokio::spawn(async move {
        loop {
            let _ = sim.notify(&alice_sub, ChangeType::Created, 1).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    // The pages: one per provider (grouped by tenant and provider), naming them.
    let page_bob = wait_page(
        &receiver,
        &mut monitors,
        &bob,
        "firing",
        Duration::from_secs(30),
    )
    .await;
    let t_page = t0.elapsed();
    check_page(&page_bob, "acme", &bob, "firing");
    let page_carol = wait_page(
        &receiver,
        &mut monitors,
        &carol,
        "firing",
        Duration::from_secs(15),
    )
    .await;
    check_page(&page_carol, "contoso", &carol, "firing");
    let view = h.provider("acme", &bob).await;
    assert!(
        view["health"]["consecutive_failure_count"]
            .as_u64()
            .unwrap()
            >= 3,
        "{view:#}"
    );

    // Every dashboard query returns data while the scenario is at its fullest.
    let (panels, variables) = dashboard_queries();
    assert!(
        panels.len() >= 20,
        "found only {} dashboard queries",
        panels.len()
    );
    let values: BTreeMap<&str, String> = [
        ("tenant", "contoso".to_owned()),
        ("provider", carol.clone()),
        ("kind", "graph_mail".to_owned()),
        ("__rate_interval", "1m".to_owned()),
        ("__interval", "15s".to_owned()),
        ("__range", "5m".to_owned()),
    ]
    .into_iter()
    .collect();
    for (dashboard, title, _) in ALLOWED_EMPTY {
        assert!(
            panels
                .iter()
                .any(|p| p.dashboard == *dashboard && p.title == *title),
            "allow-listed panel {dashboard} / {title} no longer exists"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut pending: Vec<&PanelQuery> = panels
        .iter()
        .filter(|p| {
            !ALLOWED_EMPTY
                .iter()
                .any(|(d, t, _)| p.dashboard == *d && p.title == *t)
        })
        .collect();
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for panel in pending {
            let expr = substitute(&panel.expr, &values);
            let data = monitors.0.query(&http, &expr).await;
            // NaN (e.g. histogram_quantile over no observations) draws nothing.
            if !sample_values(&data).iter().any(|v| !v.is_nan()) {
                last.insert(expr, data);
                still.push(panel);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        pending.is_empty(),
        "dashboard queries without data: {:#?}\nlast results: {last:#?}",
        pending
            .iter()
            .map(|p| format!("{} / {}: {}", p.dashboard, p.title, p.expr))
            .collect::<Vec<_>>()
    );
    // The drill-down's variables offer the failing providers.
    for (dashboard, name, query) in &variables {
        let (selector, label) = parse_label_values(query);
        let found = monitors
            .0
            .label_values(&http, &substitute(&selector, &values), &label)
            .await;
        let want = &values[name.as_str()];
        assert!(
            found.contains(want),
            "{dashboard} variable {name}: {query} gave {found:?}, expected {want}"
        );
    }
    let tenants = monitors
        .0
        .label_values(&http, "subkeeper_provider_consecutive_failures", "tenant")
        .await;
    assert_eq!(tenants, ["acme", "contoso"]);
    let t_dashboards = t0.elapsed();

    // The simulator heals; the next retries succeed and the pages resolve.
    let t_heal = t0.elapsed();
    h.sim.clear_faults();
    let resolved_bob = wait_page(
        &receiver,
        &mut monitors,
        &bob,
        "resolved",
        Duration::from_secs(20),
    )
    .await;
    check_page(&resolved_bob, "acme", &bob, "resolved");
    let resolved_carol = wait_page(
        &receiver,
        &mut monitors,
        &carol,
        "resolved",
        Duration::from_secs(20),
    )
    .await;
    check_page(&resolved_carol, "contoso", &carol, "resolved");
    let t_resolved = t0.elapsed();
    assert_eq!(
        h.provider("acme", &bob).await["health"]["consecutive_failure_count"],
        0
    );

    // A healthy provider never paged.
    assert!(
        receiver
            .all()
            .iter()
            .flat_map(|d| d.body["alerts"].as_array().cloned().unwrap_or_default())
            .all(|a| a["labels"]["provider"] != alice.as_str()),
        "alice was reported: {:#?}",
        receiver.all()
    );
    webhooks.abort();
    let summary: Vec<String> = receiver
        .all()
        .iter()
        .map(|d| {
            let names: Vec<String> = d.body["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    format!(
                        "{} {} {}",
                        a["status"].as_str().unwrap_or(""),
                        a["labels"]["alertname"].as_str().unwrap_or(""),
                        a["labels"]["tenant"].as_str().unwrap_or("-")
                    )
                })
                .collect();
            format!(
                "{:>6.2?} {} {}",
                d.at.duration_since(t0),
                d.path,
                names.join(", ")
            )
        })
        .collect();
    eprintln!(
        "alerting e2e: monitoring up {t_monitoring:?}, first page {t_page:?}, dashboards checked \
         {t_dashboards:?} ({} queries), healed {t_heal:?}, resolved {t_resolved:?}; deliveries:\n  {}",
        panels.len(),
        summary.join("\n  ")
    );
    drop(monitors);
    receiver.stop().await;
    h.stop().await;
}
