//! Helpers shared by the integration tests: an in-memory output sink.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;

/// A sink whose bytes the test can read while the child still runs.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub fn sink(&self) -> keygate_runner::Sink {
        Box::new(self.clone())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (up to 5 s) until the captured text contains `needle`.
    pub async fn wait_for(&self, needle: &str) {
        for _ in 0..500 {
            if self.text().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{needle:?} never appeared; got {:?}", self.text());
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `sh -c script` with both streams captured.
pub fn sh(script: &str, out: &Capture, err: &Capture) -> keygate_runner::Command {
    keygate_runner::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdout(out.sink())
        .stderr(err.sink())
}
