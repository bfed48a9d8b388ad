//! Logs and metrics plumbing: the tracing subscriber (text or JSON), the Prometheus
//! recorder (histogram buckets chosen for the alert thresholds), and `/metrics`
//! rendering, which appends gauges computed from the health board at scrape time —
//! fleet gauges and the per-provider series that exist only while a provider is
//! unhealthy. Metric names come from `subkeeper_actors::telemetry::names` only.

pub mod events;

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::OnceLock;
use subkeeper_actors::board::HealthBoard;
use subkeeper_actors::domain::{HealthState, ProviderKind};
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::telemetry::names;

/// Installs the global tracing subscriber (once; later calls are ignored). Logs go to
/// stderr so that a command's output on stdout (`subkeeper renew | jq`) stays clean.
pub fn init_logging(format: &str, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// A value could not be serialized to JSON (a bug: it was not published, and the
/// request or event that needed it failed).
pub struct EncodeFailed<'a> {
    /// What it was (`webhook_envelope`, `domain_event`, `notification`).
    pub what: &'static str,
    /// serde_json's reason.
    pub error: &'a dyn std::error::Error,
}

impl EncodeFailed<'_> {
    /// Counts it and logs it (ERROR: only a code change fixes it).
    pub fn emit(&self) {
        metrics::counter!(names::ENCODE_FAILURES, "what" => self.what).increment(1);
        tracing::error!(what = self.what, error = %self.error, "value could not be encoded as JSON; nothing was published");
    }
}

/// Like [`init_logging`], but into the file at `path` (created or truncated), for
/// commands whose own output is the story (the demo), so a log line does not
/// repeat each event.
pub fn init_logging_to_file(
    format: &str,
    filter: &str,
    path: &std::path::Path,
) -> std::io::Result<()> {
    use tracing_subscriber::EnvFilter;
    let file = std::fs::File::create(path)?;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file));
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

/// Histogram buckets, in seconds. Alert thresholds sit on a boundary so
/// `histogram_quantile` does not interpolate across them (docs/metrics.md lists
/// the same, a test keeps them equal).
pub const BUCKETS: [(&str, &[f64]); 5] = [
    // Alert at 2 s; Graph counts a delivery slower than ~3 s as failed.
    (
        names::WEBHOOK_RESPONSE,
        &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.9, 3.0, 5.0,
        ],
    ),
    // Alert at 900 s.
    (
        names::RENEWAL_LAG,
        &[0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0],
    ),
    // One provider call, plus a token refresh when needed.
    (
        names::RENEWAL_DURATION,
        &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
    ),
    // A healthy ack takes milliseconds; past the publish timeout it is the outbox.
    (
        names::JETSTREAM_PUBLISH,
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ],
    ),
    // One attempt alone up to a full batch (`MAX_BATCH`, 256).
    (
        names::ATTEMPT_WRITE_BATCH,
        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
    ),
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = BUCKETS.iter().try_fold(
                PrometheusBuilder::new(),
                |builder, (name, buckets)| {
                    builder.set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                },
            );
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => {
                    subkeeper_actors::telemetry::describe_metrics();
                    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Prometheus recorder not installed; /metrics shows board gauges only");
                    None
                }
            }
        })
        .clone()
}

/// Renders `/metrics`: the recorder's series plus the board's gauges.
#[derive(Clone)]
pub struct MetricsRenderer {
    handle: Option<PrometheusHandle>,
    clock: SharedClock,
}

impl MetricsRenderer {
    /// Installs the recorder if needed.
    pub fn install(clock: SharedClock) -> Self {
        Self {
            handle: prometheus(),
            clock,
        }
    }

    /// The exposition text.
    pub fn render(&self, board: &HealthBoard) -> String {
        let mut out = self.handle.as_ref().map(|h| h.render()).unwrap_or_default();
        render_board(&mut out, board, self.clock.now());
        out
    }
}

/// Every state a provider is counted in by `subkeeper_providers`.
const STATES: &[&str] = &[
    "healthy",
    "renewing",
    "failing",
    "error",
    "needs_reauth",
    "silent",
];

fn render_board(out: &mut String, board: &HealthBoard, now: DateTime<Utc>) {
    let entries = board.snapshot();
    let mut by_state: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut nearest: BTreeMap<&str, f64> = BTreeMap::new();
    let mut expiring: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for kind in ProviderKind::ALL {
        for state in STATES {
            by_state.insert((kind.as_str(), state), 0);
        }
        for within in ["1h", "24h"] {
            expiring.insert((kind.as_str(), within), 0);
        }
    }
    let mut unhealthy = String::new();
    let mut failures = String::new();
    let mut expires_in = String::new();
    let mut silent = String::new();
    for (id, e) in &entries {
        let kind = e.kind.as_str();
        *by_state.entry((kind, e.status.as_str())).or_default() += 1;
        if e.silent_since.is_some() {
            *by_state.entry((kind, "silent")).or_default() += 1;
        }
        let left = e
            .expires_at
            .map(|at| (at - now).num_milliseconds() as f64 / 1000.0);
        if let Some(left) = left {
            let slot = nearest.entry(kind).or_insert(left);
            *slot = slot.min(left);
            if left < 3600.0 {
                *expiring.entry((kind, "1h")).or_default() += 1;
            }
            if left < 86_400.0 {
                *expiring.entry((kind, "24h")).or_default() += 1;
            }
        }
        let labels = format!("tenant=\"{}\",provider=\"{id}\",kind=\"{kind}\"", e.tenant);
        let unhealthy_state = match e.status {
            HealthState::Failing | HealthState::Error | HealthState::NeedsReauth => {
                Some(e.status.as_str())
            }
            HealthState::Healthy | HealthState::Renewing => None,
        };
        // A renewal that should have happened (next attempt due after expiry, or no
        // timer at all while a subscription lives) is also worth naming.
        let overdue = e
            .expires_at
            .is_some_and(|at| e.next_at.is_none_or(|next| next >= at));
        if let Some(state) = unhealthy_state {
            let _ = writeln!(
                unhealthy,
                "{}{{{labels},state=\"{state}\"}} 1",
                names::PROVIDER_UNHEALTHY
            );
            let _ = writeln!(
                failures,
                "{}{{{labels}}} {}",
                names::PROVIDER_CONSECUTIVE_FAILURES,
                e.failures
            );
        }
        if let (Some(left), true) = (left, unhealthy_state.is_some() || overdue) {
            let _ = writeln!(
                expires_in,
                "{}{{{labels}}} {left}",
                names::PROVIDER_EXPIRES_IN
            );
        }
        if let Some(since) = e.silent_since {
            let _ = writeln!(
                unhealthy,
                "{}{{{labels},state=\"silent\"}} 1",
                names::PROVIDER_UNHEALTHY
            );
            let _ = writeln!(
                silent,
                "{}{{{labels}}} {}",
                names::PROVIDER_SILENT,
                (now - since).num_seconds()
            );
        }
    }

    let _ = writeln!(
        out,
        "# HELP {} Providers by kind and state.",
        names::PROVIDERS
    );
    let _ = writeln!(out, "# TYPE {} gauge", names::PROVIDERS);
    for ((kind, state), n) in &by_state {
        let _ = writeln!(
            out,
            "{}{{kind=\"{kind}\",state=\"{state}\"}} {n}",
            names::PROVIDERS
        );
    }
    let _ = writeln!(
        out,
        "# HELP {} Seconds until the soonest subscription expiry.",
        names::NEAREST_EXPIRY
    );
    let _ = writeln!(out, "# TYPE {} gauge", names::NEAREST_EXPIRY);
    for (kind, left) in &nearest {
        let _ = writeln!(out, "{}{{kind=\"{kind}\"}} {left}", names::NEAREST_EXPIRY);
    }
    let _ = writeln!(
        out,
        "# HELP {} Subscriptions expiring within 1h / 24h.",
        names::EXPIRING
    );
    let _ = writeln!(out, "# TYPE {} gauge", names::EXPIRING);
    for ((kind, within), n) in &expiring {
        let _ = writeln!(
            out,
            "{}{{kind=\"{kind}\",within=\"{within}\"}} {n}",
            names::EXPIRING
        );
    }
    for (name, help, body) in [
        (
            names::PROVIDER_UNHEALTHY,
            "1 while a provider is unhealthy, by state.",
            &unhealthy,
        ),
        (
            names::PROVIDER_CONSECUTIVE_FAILURES,
            "Consecutive failures of an unhealthy provider.",
            &failures,
        ),
        (
            names::PROVIDER_EXPIRES_IN,
            "Seconds until expiry of an unhealthy or overdue provider's subscription.",
            &expires_in,
        ),
        (
            names::PROVIDER_SILENT,
            "Seconds since a silent provider's last webhook.",
            &silent,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        out.push_str(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkeeper_actors::board::BoardEntry;
    use subkeeper_actors::domain::{ProviderId, TenantId};

    /// The alert rules and dashboards are checked against docs/metrics.md
    /// (alerts/check.sh); this ties that document to the names the code exports.
    #[test]
    fn documented_metrics_are_exactly_the_exported_ones() {
        let doc = include_str!("../../docs/metrics.md");
        let mut documented: Vec<&str> = doc
            .match_indices("subkeeper_")
            .map(|(i, _)| {
                let rest = &doc[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                rest[..end].trim_end_matches('_')
            })
            .filter(|n| *n != "subkeeper")
            .collect();
        documented.sort_unstable();
        documented.dedup();
        let mut exported: Vec<&str> = names::ALL.to_vec();
        exported.sort_unstable();
        assert_eq!(documented, exported);
    }

    /// docs/metrics.md's bucket table is what the recorder is given.
    #[test]
    fn documented_buckets_are_the_configured_ones() {
        let doc = include_str!("../../docs/metrics.md");
        let table = doc
            .split("## Histogram buckets")
            .nth(1)
            .expect("docs/metrics.md has a '## Histogram buckets' section");
        for (name, buckets) in BUCKETS {
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("no bucket row for {name} in docs/metrics.md"));
            let documented: Vec<f64> = row
                .split('|')
                .nth(2)
                .unwrap()
                .split(',')
                .map(|b| b.trim().parse().unwrap())
                .collect();
            assert_eq!(documented, buckets, "{name}");
        }
    }

    #[test]
    fn per_provider_series_exist_only_while_unhealthy() {
        let board = HealthBoard::default();
        let now = Utc::now();
        let tenant = TenantId::parse("t1").unwrap();
        let sick = ProviderId::new();
        let well = ProviderId::new();
        let entry = |status, failures| BoardEntry {
            tenant: tenant.clone(),
            kind: ProviderKind::GraphMail,
            status,
            failures,
            expires_at: Some(now + chrono::TimeDelta::days(3)),
            next_at: Some(now + chrono::TimeDelta::days(2)),
            silent_since: None,
        };
        board.upsert(sick, entry(HealthState::Error, 3));
        board.upsert(well, entry(HealthState::Healthy, 0));
        let mut out = String::new();
        render_board(&mut out, &board, now);
        assert!(out.contains(&format!("subkeeper_provider_consecutive_failures{{tenant=\"t1\",provider=\"{sick}\",kind=\"graph_mail\"}} 3")));
        assert!(
            !out.contains(&well.to_string()),
            "healthy provider has a series:\n{out}"
        );
        assert!(out.contains("subkeeper_providers{kind=\"graph_mail\",state=\"error\"} 1"));

        board.upsert(sick, entry(HealthState::Healthy, 0));
        let mut out = String::new();
        render_board(&mut out, &board, now);
        assert!(
            !out.contains(&sick.to_string()),
            "healed provider still has a series:\n{out}"
        );
    }
}
