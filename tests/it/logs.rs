//! Everything the service logs while the integration tests run, kept in memory so
//! a test can read it back: one process-wide subscriber at DEBUG, installed by the
//! first harness that starts (a subscriber is global; every later test's logs land
//! here too, which is what a check for leaked secrets wants).

use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// What was logged so far.
static LOGGED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Installed once per process.
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Appends formatted events to [`LOGGED`].
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGGED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing (once per process). True when this process's logs are
/// captured: false only if something else installed a global subscriber first.
pub fn capture() -> bool {
    *INSTALLED.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,h2=info,hyper=info,hyper_util=info,rustls=info,tokio_util=info",
            ))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init()
            .is_ok()
    })
}

/// Everything logged since capture started.
pub fn text() -> String {
    String::from_utf8_lossy(
        &LOGGED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned()
}
