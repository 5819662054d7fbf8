//! Helpers that run the built `keygate` binary in a temporary directory.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn keygate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keygate"));
    // Tests never inherit an operator's settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYGATE_") {
            c.env_remove(k);
        }
    }
    c
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory set up by `keygate init`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub token: String,
    pub config: PathBuf,
    pub port: u16,
}

impl Setup {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let out = keygate()
            .args(["init", "--format", "json", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let token = v["admin_token"].as_str().unwrap().to_owned();
        let config = PathBuf::from(v["config"].as_str().unwrap());
        Self {
            dir,
            token,
            config,
            port,
        }
    }

    /// A copy of this set-up (config, master key, data) in a new directory.
    pub fn clone_to_new_dir(&self) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(self.dir.path(), dir.path());
        Setup {
            config: dir.path().join("keygate.toml"),
            dir,
            token: self.token.clone(),
            port: free_port(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("keygate-data")
    }

    pub fn db_url(&self) -> String {
        format!("sqlite://{}", self.data_dir().join("keygate.db").display())
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts `keygate serve`; its log goes to `log`. Waits until /healthz answers.
    pub fn serve(&self, log: &Path, env: &[(&str, &str)]) -> Server {
        self.serve_with(&self.config, log, env)
    }

    /// Starts `keygate serve` with another configuration of this set-up (same port).
    pub fn serve_with(&self, config: &Path, log: &Path, env: &[(&str, &str)]) -> Server {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = keygate();
        cmd.args(["serve", "--config"])
            .arg(config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .env("KEYGATE_AUDIT__CHECKPOINT_INTERVAL", "1s")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let server = Server { child };
        wait_healthy(self.port);
        server
    }

    /// Runs a management command against the server, with `stdin` as its input.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = keygate();
        cmd.args(args)
            .env("KEYGATE_ADDR", self.base())
            .env("KEYGATE_TOKEN", &self.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Runs a command that works on the store directly.
    pub fn offline(&self, args: &[&str]) -> Output {
        keygate().args(args).output().unwrap()
    }
}

pub struct Server {
    pub child: Child,
}

/// A server a test did not stop (it returned early, or panicked) is killed, so no
/// `keygate serve` outlives its test and its temporary directory. After `stop` or
/// `kill9` the child has been waited for, and this does nothing.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

pub fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
