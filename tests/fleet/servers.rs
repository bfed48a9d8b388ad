//! A NATS server and a PostgreSQL server of a test's own, on free loopback
//! ports with their data in a temporary directory, that the test can stop and
//! start again while the service runs — the shared servers on 4222 and 5432
//! serve every other test at the same time and must never be restarted.
//!
//! Both come from the same Debian packages `scripts/test-services` installs
//! (`nats-server`; PostgreSQL's `initdb` and `pg_ctl`). PostgreSQL refuses to run
//! as root, so as root its commands run as the `postgres` user (`runuser`).
//! Everything is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A fresh directory under the system's temporary directory.
fn fresh_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("subkeeper-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until something accepts connections on `port`, or panics naming `what`.
async fn wait_listening(port: u16, what: &str, log: &Path) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not listen on 127.0.0.1:{port} within 30 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first of `name` on `PATH` or under `/usr/lib/postgresql/*/bin` (where
/// Debian puts PostgreSQL's server programs).
fn program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse(); // newest major version first
    on_path
        .into_iter()
        .chain(debian)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH or under /usr/lib/postgresql: run scripts/test-services"
            )
        })
}

/// A NATS server with JetStream (file storage in its own directory).
pub struct PrivateNats {
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    /// Starts one and waits until it listens.
    pub async fn start() -> Self {
        let dir = fresh_dir("nats");
        let mut nats = Self {
            port: free_port(),
            log: dir.join("nats.log"),
            dir,
            child: None,
        };
        nats.spawn().await;
        nats
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new(program("nats-server"))
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("jetstream"))
            .arg("-l")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_listening(self.port, "nats-server", &self.log).await;
    }

    /// Stops it as an operator's restart does (SIGTERM: it flushes its streams)
    /// and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again while running");
        self.spawn().await;
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster (trust authentication, user `postgres`).
pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    as_root: bool,
}

impl PrivatePostgres {
    /// `initdb`, then starts it and waits until it listens.
    pub async fn start() -> Self {
        let dir = fresh_dir("postgres");
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let pg = Self {
            port: free_port(),
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            dir,
            as_root,
        };
        if as_root {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .unwrap();
            assert!(chowned.success(), "chown of {}", pg.dir.display());
        }
        let mut initdb = pg.command("initdb");
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&pg.data);
        pg.run(initdb, "initdb");
        pg.pg_ctl("start").await;
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>`: the server, without a database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// A command for PostgreSQL's program `name`, as `postgres` when root.
    fn command(&self, name: &str) -> Command {
        let program = program(name);
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.stdin(Stdio::null());
        command
    }

    fn run(&self, mut command: Command, what: &str) {
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start` / `stop` (fast: sessions end, what is committed stays).
    async fn pg_ctl(&self, action: &str) {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(&self.data).arg("-l").arg(&self.log);
        command.args(["-w", "-t", "60"]);
        match action {
            "start" => {
                command.args([
                    "-o",
                    &format!(
                        "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200",
                        self.port,
                        self.dir.display()
                    ),
                    "start",
                ]);
            }
            _ => {
                command.args(["-m", "fast", action]);
            }
        }
        // pg_ctl waits for the server itself (-w); run it aside.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(command.output());
        });
        let out = rx.await.unwrap().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {action} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        if action == "start" {
            wait_listening(self.port, "postgres", &self.log).await;
        }
    }

    /// Stops it (every connection is cut) and waits until it is down.
    pub async fn stop(&self) {
        self.pg_ctl("stop").await;
    }

    /// Starts it again on the same port and data directory.
    pub async fn start_again(&self) {
        self.pg_ctl("start").await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
