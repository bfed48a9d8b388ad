//! `subkeeper demo` as a new user meets it: the real binary, on embedded defaults,
//! with no database or NATS reachable — in a network namespace with only loopback
//! when `unshare -n` works here, else with every SUBKEEPER_* variable unset — tells
//! the whole story, one line per event, ends by itself with exit 0 and says where
//! its state is (which `subkeeper status` then reads). A server it is pointed at
//! but cannot reach is named, with the flag or variable that named it.

use crate::startup::{output, subkeeper_binary};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest the whole demo may take here (it takes about 10 s; the machine is shared
/// and the binary unoptimised).
const DEMO_DEADLINE: Duration = Duration::from_secs(150);

/// A private temp directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "subkeeper-demo-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nothing listens on: bound, then closed.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether this machine lets us start a process with only loopback.
fn netns_available() -> bool {
    Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `command` (from [`subkeeper_binary`]) run inside a new network namespace with
/// only loopback up, keeping its environment.
fn isolated(command: &Command) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped.args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""]);
    wrapped.arg(command.get_program());
    wrapped.args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(name, value),
            None => wrapped.env_remove(name),
        };
    }
    wrapped
}

/// Runs `command` to its end, killing it after `deadline`; (exit success,
/// stdout, stderr).
async fn run_bounded(mut command: Command, deadline: Duration) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read both pipes while it runs, so a full pipe never stalls it.
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > deadline {
                child.kill().unwrap();
                let _ = child.wait();
                panic!(
                    "the demo did not end within {deadline:?}; it printed:\n{}",
                    out.join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        (status.success(), out.join().unwrap(), err.join().unwrap())
    })
    .await
    .unwrap()
}

/// The event lines (`[simulated time] …`).
fn events(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with('[')).collect()
}

/// Index of the first event line containing every one of `parts`.
fn find(lines: &[&str], parts: &[&str]) -> Option<usize> {
    lines
        .iter()
        .position(|l| parts.iter().all(|p| l.contains(p)))
}

/// [`find`], failing with the transcript when there is none.
fn must(lines: &[&str], parts: &[&str], transcript: &str) -> usize {
    find(lines, parts)
        .unwrap_or_else(|| panic!("no line with {parts:?} in the demo's output:\n{transcript}"))
}

/// The path after `label` on the line that starts with it (trimmed, up to " (").
fn path_after(stdout: &str, label: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"));
    PathBuf::from(line.trim().split(" (").next().unwrap())
}

#[actix_web::test]
async fn the_demo_tells_the_whole_story_on_embedded_defaults_with_nothing_reachable() {
    let tmp = TempDir::new();
    let mut demo = subkeeper_binary(&["demo", "--seconds", "120"]);
    // Its fresh data directory goes under the temp directory: a private one.
    demo.env("TMPDIR", &tmp.0)
        .env_remove("SUBKEEPER_LOG_FILTER");
    let (demo, isolation) = if netns_available() {
        (isolated(&demo), "a network namespace with only loopback")
    } else {
        (demo, "no SUBKEEPER_* variable set")
    };
    let started = Instant::now();
    let (ok, stdout, stderr) = run_bounded(demo, DEMO_DEADLINE).await;
    eprintln!(
        "demo ran in {:.1} s in {isolation}:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(ok, "the demo failed: {stderr}\n{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The header says what it runs on and where the log goes.
    assert!(
        stdout.contains("store     embedded SQLite store"),
        "{stdout}"
    );
    assert!(stdout.contains("bus       in process"), "{stdout}");
    let log = path_after(&stdout, "log ");
    assert!(log.starts_with(&tmp.0), "{}", log.display());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("renewal attempt failed"),
        "the service's log is not where the header says"
    );

    let lines = events(&stdout);
    let mut seen = HashSet::new();
    for line in &lines {
        assert!(seen.insert(*line), "printed twice: {line}\n{stdout}");
        // The service's own log lines stay in the file.
        assert!(
            !line.contains(" INFO ") && !line.contains(" WARN "),
            "{line}"
        );
    }
    let s = stdout.as_str();

    // Registration and a renewal on schedule.
    for who in [
        "acme/alice",
        "acme/bob",
        "contoso/carol",
        "contoso/dan",
        "globex/erin",
        "globex/frank",
    ] {
        must(&lines, &[who, "registered", "healthy"], s);
    }
    assert!(
        lines.iter().any(|l| l.contains(" renewed ")
            && l.contains("subscription")
            && !l.contains("control.renew")),
        "no renewal on schedule:\n{s}"
    );

    // 404 → recreate.
    let lost = must(
        &lines,
        &["acme/alice", "failed", "renew: not_found, HTTP 404"],
        s,
    );
    let recreated = must(
        &lines,
        &["acme/alice", "recreated", "healthy", "(replaces "],
        s,
    );
    assert!(lost < recreated, "{s}");

    // Three strikes → error → an alert firing, then resolving.
    let error = must(
        &lines,
        &[
            "acme/bob",
            "failed",
            "failing → error",
            "(3 failures in a row)",
        ],
        s,
    );
    let firing = must(
        &lines,
        &[
            "acme/bob",
            "firing",
            "alert error on subkeeper.alert.acme.*",
        ],
        s,
    );
    let recovered = must(&lines, &["acme/bob", "registered", "error → healthy"], s);
    let resolved = must(
        &lines,
        &[
            "acme/bob",
            "resolved",
            "alert error on subkeeper.alert.acme.*",
        ],
        s,
    );
    assert!(
        error < firing && firing < resolved && recovered < resolved,
        "{s}"
    );

    // invalid_grant → needs_reauth → re-authorized (and its alert resolves too).
    let reauth = must(
        &lines,
        &["contoso/carol", "healthy → needs_reauth", "invalid_grant"],
        s,
    );
    let operator = must(
        &lines,
        &[
            "contoso/carol",
            "operator",
            "PUT /api/v1/tenants/contoso/providers/",
        ],
        s,
    );
    let back = must(
        &lines,
        &["contoso/carol", "registered", "needs_reauth → healthy"],
        s,
    );
    must(
        &lines,
        &["contoso/carol", "resolved", "alert needs_reauth"],
        s,
    );
    assert!(reauth < operator && operator < back, "{s}");

    // A Graph change notification reaching the bus as a webhook and an event.
    let webhook = must(
        &lines,
        &[
            "acme/alice",
            "webhook",
            "change notification (created)",
            "accepted → subkeeper.webhook.graph_mail.acme.*",
        ],
        s,
    );
    let event = must(
        &lines,
        &[
            "acme/alice",
            "event",
            "mail_received → subkeeper.event.mail_received.acme",
        ],
        s,
    );
    assert!(webhook < event, "{s}");

    // A forced renewal sent as the bus's retry message, and its reply.
    let sent = must(
        &lines,
        &[
            "contoso/dan",
            "control",
            "retry message sent on subkeeper.control.renew",
        ],
        s,
    );
    let reply = must(
        &lines,
        &[
            "contoso/dan",
            "renewed",
            "the reply on subkeeper.control.renew",
        ],
        s,
    );
    assert!(sent < reply, "{s}");

    // A Calendar channel rotated — the old one then stopped — and a Gmail watch
    // renewed.
    let rotated = must(
        &lines,
        &["globex/erin", "renewed", "channel rotated: new channel"],
        s,
    );
    let old = lines[rotated]
        .split("old channel ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    let stopped = must(
        &lines,
        &[
            "globex/erin",
            "stopped",
            &format!("old channel {old} stopped"),
        ],
        s,
    );
    assert!(rotated < stopped, "{s}");
    must(&lines, &["globex/frank", "renewed", "watch alive until"], s);

    // It ends by itself and says where its state is; `status` reads it there.
    assert!(stdout.contains("The story is told"), "{s}");
    let data_dir = path_after(&stdout, "data directory");
    assert!(data_dir.starts_with(&tmp.0), "{}", data_dir.display());
    assert!(
        stdout.contains(&format!("SUBKEEPER_DATA_DIR={} ", data_dir.display())),
        "{s}"
    );
    let mut status = subkeeper_binary(&["status"]);
    status.env("SUBKEEPER_DATA_DIR", &data_dir);
    let out = output(status).await;
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.contains("connected     6"), "{status}");
    assert!(status.contains("no provider needs attention"), "{status}");
}

/// Runs `demo` (expected to fail before telling anything); its stderr.
async fn refused(mut demo: Command, tmp: &Path) -> String {
    demo.env("TMPDIR", tmp);
    let (ok, stdout, stderr) = run_bounded(demo, Duration::from_secs(60)).await;
    assert!(!ok, "the demo ran: {stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[actix_web::test]
async fn the_demo_names_a_postgresql_it_cannot_reach_and_what_pointed_there() {
    let tmp = TempDir::new();
    let port = closed_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/subkeeper");

    let stderr = refused(subkeeper_binary(&["demo", "--postgres", &url]), &tmp.0).await;
    let want = format!("cannot reach PostgreSQL at 127.0.0.1:{port} (--postgres)");
    assert!(stderr.contains(&want), "{stderr}");

    let mut demo = subkeeper_binary(&["demo"]);
    demo.env("SUBKEEPER_DATABASE_URL", &url);
    let stderr = refused(demo, &tmp.0).await;
    let want = format!("cannot reach PostgreSQL at 127.0.0.1:{port} (SUBKEEPER_DATABASE_URL)");
    assert!(stderr.contains(&want), "{stderr}");
}

#[actix_web::test]
async fn the_demo_names_a_nats_it_cannot_reach_and_what_pointed_there() {
    let tmp = TempDir::new();
    let nats = format!("nats://127.0.0.1:{}", closed_port());

    let stderr = refused(subkeeper_binary(&["demo", "--nats", &nats]), &tmp.0).await;
    assert!(
        stderr.contains(&format!("cannot reach NATS at {nats} (--nats)")),
        "{stderr}"
    );

    let mut demo = subkeeper_binary(&["demo"]);
    demo.env("SUBKEEPER_NATS_URL", &nats);
    let stderr = refused(demo, &tmp.0).await;
    assert!(
        stderr.contains(&format!("cannot reach NATS at {nats} (SUBKEEPER_NATS_URL)")),
        "{stderr}"
    );
    assert!(!stderr.contains("channel closed"), "{stderr}");
}
