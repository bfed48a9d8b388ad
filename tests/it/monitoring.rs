//! The real monitoring programs as child processes of a test: Prometheus and
//! Alertmanager (Debian's `prometheus` and `prometheus-alertmanager`), `promtool`,
//! and a webhook receiver standing in for the pager. Each child runs in its own
//! temporary directory, is killed when dropped, and prints the end of its log when
//! the test panics.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The repository root (the root crate's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of `name` on PATH; panics with the way to get it when it is missing.
/// Nothing is skipped: scripts/test-services installs these.
pub fn require_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: the alerting tests run the real Prometheus and \
                 Alertmanager from Debian's `prometheus` and `prometheus-alertmanager` \
                 packages: run scripts/test (or scripts/test-services), which installs them"
            )
        })
}

/// A port that was free a moment ago on 127.0.0.1, for a child to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process whose output goes to a log file; killed (and reaped) on drop,
/// which also prints the end of the log if the test is failing.
pub struct ChildProcess {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl ChildProcess {
    pub fn spawn(name: &str, command: &mut Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The last lines of the child's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics (with the log) if the child has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited with {status}; its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log (last lines) ---\n{}",
                self.name,
                self.log_tail()
            );
        }
    }
}

/// Polls `url` until it answers 2xx, the child dies, or `timeout` passes.
async fn wait_ready(
    child: &mut ChildProcess,
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        child.assert_running();
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not ready at {url} within {timeout:?}; its log ends:\n{}",
            child.name,
            child.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every line `rewrite` changes, rewritten; panics unless exactly `expected` lines
/// changed, so a test copy cannot silently stop shortening what it should.
pub fn rewrite_lines(
    text: &str,
    expected: usize,
    what: &str,
    rewrite: impl Fn(&str) -> Option<String>,
) -> String {
    let mut changed = 0;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match rewrite(line) {
            Some(new) => {
                changed += 1;
                out.push_str(&new);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    assert_eq!(
        changed, expected,
        "{what}: rewrote {changed} lines, expected {expected}"
    );
    out
}

/// `line` with the value of YAML key `key` replaced by `value`, if the line is that
/// key (comments and other keys are left alone).
pub fn set_yaml_value(line: &str, key: &str, value: &str) -> Option<String> {
    let trimmed = line.trim_start();
    let rest = trimmed.strip_prefix(key)?.strip_prefix(':')?;
    if !rest.starts_with(' ') {
        return None;
    }
    let indent = &line[..line.len() - trimmed.len()];
    Some(format!("{indent}{key}: {value}"))
}

/// Starts a Prometheus-family daemon (`name`, from Debian's package `binary`)
/// on a free 127.0.0.1 port with `config` as its config file and a data
/// directory passed as `storage_flag`, plus `extra` flags; waits until it is
/// ready. Logs go to `{dir}/{name}.log`.
async fn start_daemon(
    name: &str,
    binary: &str,
    dir: &Path,
    config: &str,
    storage_flag: &str,
    extra: &[&str],
    http: &reqwest::Client,
) -> (ChildProcess, u16) {
    let binary = require_binary(binary);
    let config_file = dir.join(format!("{name}.yml"));
    std::fs::write(&config_file, config).unwrap();
    let data = dir.join(format!("{name}-data"));
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let mut command = Command::new(binary);
    command
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!("{storage_flag}={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .args(extra);
    let mut child = ChildProcess::spawn(name, &mut command, dir.join(format!("{name}.log")));
    wait_ready(
        &mut child,
        http,
        &format!("http://127.0.0.1:{port}/-/ready"),
        Duration::from_secs(20),
    )
    .await;
    (child, port)
}

/// A real Alertmanager on 127.0.0.1 with the given configuration.
pub struct Alertmanager {
    pub port: u16,
    child: ChildProcess,
}

impl Alertmanager {
    pub async fn start(dir: &Path, config: &str, http: &reqwest::Client) -> Self {
        let (child, port) = start_daemon(
            "alertmanager",
            "prometheus-alertmanager",
            dir,
            config,
            "--storage.path",
            // No HA gossip: it would bind 0.0.0.0:9094 and wait for peers.
            &["--cluster.listen-address="],
            http,
        )
        .await;
        Self { port, child }
    }

    pub fn assert_running(&mut self) {
        self.child.assert_running();
    }
}

/// A real Prometheus on 127.0.0.1 with the given configuration (rule files
/// referenced by it must already be in `dir`).
pub struct Prometheus {
    pub url: String,
    child: ChildProcess,
}

impl Prometheus {
    pub async fn start(dir: &Path, config: &str, http: &reqwest::Client) -> Self {
        let (child, port) = start_daemon(
            "prometheus",
            "prometheus",
            dir,
            config,
            "--storage.tsdb.path",
            // Firing alerts are re-sent to Alertmanager every minute by default;
            // the test's timings are seconds.
            &["--rules.alert.resend-delay=1s"],
            http,
        )
        .await;
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    pub fn assert_running(&mut self) {
        self.child.assert_running();
    }

    /// An instant query; returns `data` (resultType and result). Panics on an API
    /// error, which for a dashboard expression means it does not parse.
    pub async fn query(&self, http: &reqwest::Client, expr: &str) -> Value {
        let body: Value = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "success", "query {expr}: {body:#}");
        body["data"].clone()
    }

    /// Values of `label` on series matching `selector` (Grafana's `label_values`).
    pub async fn label_values(
        &self,
        http: &reqwest::Client,
        selector: &str,
        label: &str,
    ) -> Vec<String> {
        let body: Value = http
            .get(format!("{}/api/v1/label/{label}/values", self.url))
            .query(&[("match[]", selector)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            body["status"], "success",
            "label_values({selector}, {label}): {body:#}"
        );
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }
}

/// The numeric values of a query result (vector or scalar), NaN included.
pub fn sample_values(data: &Value) -> Vec<f64> {
    let parse = |v: &Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok());
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| parse(&s["value"]))
            .collect(),
        Some("scalar") => parse(&data["result"]).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// One POST an Alertmanager webhook receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Request path: which receiver URL was called.
    pub path: String,
    /// The Alertmanager webhook payload (version 4).
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A webhook receiver on 127.0.0.1:0 that records every POST.
pub struct WebhookReceiver {
    pub base_url: String,
    seen: Arc<Mutex<Vec<Delivery>>>,
    handle: actix_web::dev::ServerHandle,
}

impl WebhookReceiver {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let server = actix_web::HttpServer::new(move || {
            let sink = sink.clone();
            actix_web::App::new().default_service(web::to(
                move |req: HttpRequest, body: web::Bytes| {
                    let sink = sink.clone();
                    async move {
                        let body = serde_json::from_slice(&body).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&body).into_owned())
                        });
                        sink.lock().unwrap().push(Delivery {
                            path: req.path().to_owned(),
                            body,
                            at: std::time::Instant::now(),
                        });
                        HttpResponse::Ok().finish()
                    }
                },
            ))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Self {
            base_url,
            seen,
            handle,
        }
    }

    /// Everything received so far, oldest first.
    pub fn all(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Runs `promtool check metrics` with `exposition` on stdin; returns its verdict
/// and output.
pub fn promtool_check_metrics(exposition: &str) -> (bool, String) {
    let promtool = require_binary("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text = exposition.to_owned();
    // Written from a thread so a promtool that answers early cannot deadlock us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let output = child.wait_with_output().unwrap();
    let _ = writer.join();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}
