//! Handing a secret to a tool that only reads files, without writing it to
//! disk: a named pipe (FIFO) that yields the value to exactly one reader.
//!
//! [`fifo_once`] creates the FIFO (mode 0600) and a background task waits for
//! a reader, writes the value, closes its end and unlinks the path. Dropping
//! the [`FifoHandle`] (or [`FifoHandle::remove`]) stops the task and unlinks
//! the path if nobody read it.

use nix::sys::stat::Mode;
use nix::unistd::mkfifo;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// How often the writer checks whether a reader has opened the FIFO.
const POLL: Duration = Duration::from_millis(10);

/// A FIFO waiting for (or done with) its one reader. Unlinks the path on drop.
#[derive(Debug)]
pub struct FifoHandle {
    path: PathBuf,
    task: Option<JoinHandle<io::Result<()>>>,
}

/// Creates a FIFO at `path` (mode 0600; fails if anything exists there) and
/// serves `value` to the first reader that opens it. The value is zeroed
/// once written.
pub async fn fifo_once(path: &Path, value: Zeroizing<Vec<u8>>) -> io::Result<FifoHandle> {
    mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).map_err(io::Error::from)?;
    let owned = path.to_path_buf();
    let task = tokio::spawn(async move {
        let result = serve(&owned, &value).await;
        drop(value);
        remove_path(&owned);
        result
    });
    Ok(FifoHandle {
        path: path.to_path_buf(),
        task: Some(task),
    })
}

/// Opens the write end once a reader is there, writes, closes.
async fn serve(path: &Path, value: &[u8]) -> io::Result<()> {
    let mut sender = loop {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(path) {
            Ok(sender) => break sender,
            // ENXIO: no reader has the FIFO open yet.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENXIO as i32) => {
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e),
        }
    };
    sender.write_all(value).await?;
    sender.flush().await
}

fn remove_path(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing FIFO"),
    }
}

impl FifoHandle {
    /// Where the FIFO is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until the value has been read (or serving it failed). The path
    /// is gone when this returns.
    pub async fn wait(&mut self) -> io::Result<()> {
        let Some(task) = self.task.as_mut() else {
            return Ok(());
        };
        let joined = task.await;
        self.task = None;
        joined.map_err(io::Error::other)?
    }

    /// Stops serving and unlinks the FIFO now.
    pub fn remove(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            // A finished task has unlinked the path itself; whatever is
            // there now is not ours.
            if !task.is_finished() {
                task.abort();
                remove_path(&self.path);
            }
        }
    }
}

impl Drop for FifoHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[tokio::test]
    async fn value_is_read_once_then_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let mut handle = fifo_once(&path, Zeroizing::new(b"the-value".to_vec()))
            .await
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        let reader_path = path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read(reader_path))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, b"the-value");
        tokio::time::timeout(Duration::from_secs(2), handle.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!path.exists());
        assert!(std::fs::File::open(&path).is_err());
    }

    #[tokio::test]
    async fn refuses_existing_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exists");
        std::fs::write(&path, b"x").unwrap();
        let err = fifo_once(&path, Zeroizing::new(b"v".to_vec()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }

    #[tokio::test]
    async fn drop_unlinks_unread_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unread");
        let handle = fifo_once(&path, Zeroizing::new(b"v".to_vec()))
            .await
            .unwrap();
        assert!(path.exists());
        drop(handle);
        assert!(!path.exists());
        let path2 = dir.path().join("removed");
        let handle = fifo_once(&path2, Zeroizing::new(b"v".to_vec()))
            .await
            .unwrap();
        handle.remove();
        assert!(!path2.exists());
    }
}
