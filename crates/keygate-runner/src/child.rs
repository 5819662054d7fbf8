//! Running a child process with secret environment variables: its stdout and
//! stderr are copied through a [`Masker`] each, termination signals sent to
//! this process are forwarded to it, and it can be restarted with new values.
//!
//! [`Supervisor`] owns one child at a time. [`Supervisor::wait`] returns the
//! child's [`Exit`] once the child has exited and its output is drained;
//! [`Supervisor::restart`] stops the running child (SIGTERM, then SIGKILL
//! after the grace period) and starts the command again with a new
//! environment. A `--watch` loop looks like:
//!
//! ```no_run
//! # async fn demo(cmd: keygate_runner::Command,
//! #     mut updates: tokio::sync::mpsc::Receiver<keygate_runner::EnvVars>)
//! #     -> Result<i32, Box<dyn std::error::Error>> {
//! use keygate_runner::Supervisor;
//! let mut sup = Supervisor::start(cmd).await?;
//! let exit = loop {
//!     tokio::select! {
//!         exit = sup.wait() => break exit?,
//!         Some(env) = updates.recv() => sup.restart(env).await?,
//!     }
//! };
//! Ok(exit.code())
//! # }
//! ```
//!
//! `wait` is cancel-safe: dropping its future (as `select!` does) loses
//! neither the child's status nor its output.

use crate::mask::{MaskError, Masker};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// Where masked output is written.
pub type Sink = Box<dyn AsyncWrite + Unpin + Send>;

/// Extra environment variables for the child: names and secret values
/// (zeroed on drop).
pub type EnvVars = Vec<(String, Zeroizing<String>)>;

/// Default time a child gets between SIGTERM and SIGKILL on restart.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Default time to keep reading the pipes after the child exited, for
/// output still held open by its background processes.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Signals forwarded to the child while it runs.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal (by number) killed it.
    Signal(i32),
}

impl Exit {
    /// The exit code a shell would report: the code itself, or 128 plus
    /// the signal number.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            // Not reachable on Unix for a waited-for process.
            (None, None) => Exit::Code(1),
        }
    }
}

/// Starting the child failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No such program (a shell exits 127).
    #[error("{program}: command not found")]
    NotFound {
        /// The program as given.
        program: String,
    },
    /// The program exists but cannot be executed (a shell exits 126).
    #[error("{program}: permission denied")]
    NotExecutable {
        /// The program as given.
        program: String,
    },
    /// Any other failure to start it.
    #[error("{program}: {source}")]
    Io {
        /// The program as given.
        program: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// The masker could not be built from the values.
    #[error(transparent)]
    Mask(#[from] MaskError),
}

/// What to run and how. Built with chained calls:
///
/// ```
/// use keygate_runner::Command;
/// use zeroize::Zeroizing;
/// let cmd = Command::new("sh")
///     .args(["-c", "my-tool --upload"])
///     .env("API_TOKEN", Zeroizing::new("t0k3n-value".to_owned()));
/// ```
///
/// Every env value is masked in the child's output; [`Command::mask_value`]
/// adds further values to mask.
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: EnvVars,
    extra_masked: Vec<Zeroizing<Vec<u8>>>,
    inherit_env: bool,
    removed: Vec<OsString>,
    stdout: Option<Sink>,
    stderr: Option<Sink>,
    grace: Duration,
    drain_timeout: Duration,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Command")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env_names", &names)
            .field("extra_masked", &self.extra_masked.len())
            .field("inherit_env", &self.inherit_env)
            .field("grace", &self.grace)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl Command {
    /// A command running `program` (looked up in `PATH` when it has no
    /// slash), inheriting this process's environment and writing to this
    /// process's stdout and stderr.
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            extra_masked: Vec::new(),
            inherit_env: true,
            removed: Vec::new(),
            stdout: None,
            stderr: None,
            grace: DEFAULT_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets a variable in the child's environment; its value is masked.
    pub fn env(mut self, name: impl Into<String>, value: Zeroizing<String>) -> Self {
        self.env.push((name.into(), value));
        self
    }

    /// Sets several variables (see [`Command::env`]).
    pub fn envs(mut self, vars: EnvVars) -> Self {
        self.env.extend(vars);
        self
    }

    /// Masks `value` in the output too, without passing it to the child.
    pub fn mask_value(mut self, value: Zeroizing<Vec<u8>>) -> Self {
        self.extra_masked.push(value);
        self
    }

    /// Whether the child starts from this process's environment (default
    /// `true`) or from an empty one plus the variables set here.
    pub fn inherit_env(mut self, inherit: bool) -> Self {
        self.inherit_env = inherit;
        self
    }

    /// Leaves `name` out of the inherited environment (e.g. this process's own
    /// credentials, which the child has no business holding).
    pub fn env_remove(mut self, name: impl Into<OsString>) -> Self {
        self.removed.push(name.into());
        self
    }

    /// Where the child's masked stdout goes (default: this process's stdout).
    pub fn stdout(mut self, sink: Sink) -> Self {
        self.stdout = Some(sink);
        self
    }

    /// Where the child's masked stderr goes (default: this process's stderr).
    pub fn stderr(mut self, sink: Sink) -> Self {
        self.stderr = Some(sink);
        self
    }

    /// Time between SIGTERM and SIGKILL when stopping the child for a
    /// restart (default [`DEFAULT_GRACE`]).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long to keep reading output after the child exited, when some
    /// other process still holds its stdout or stderr open (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    fn masker(&self) -> Result<Masker, MaskError> {
        let values = self
            .env
            .iter()
            .map(|(_, v)| v.as_bytes())
            .chain(self.extra_masked.iter().map(|v| v.as_slice()));
        Masker::new(values)
    }
}

/// Runs `cmd` to completion: [`Supervisor::start`] then [`Supervisor::wait`].
pub async fn run(cmd: Command) -> Result<Exit, SpawnError> {
    let program = cmd.program_name();
    let mut sup = Supervisor::start(cmd).await?;
    sup.wait()
        .await
        .map_err(|source| SpawnError::Io { program, source })
}

/// One output pipe being copied to its sink.
struct Pump {
    task: JoinHandle<Sink>,
    stop: Option<oneshot::Sender<()>>,
}

/// Owns the running child, its output pumps and the signal forwarding.
pub struct Supervisor {
    cmd: Command,
    child: Child,
    pid: Option<Pid>,
    status: Option<Exit>,
    out_sink: Option<Sink>,
    err_sink: Option<Sink>,
    out_pump: Option<Pump>,
    err_pump: Option<Pump>,
    signals: Forwarder,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("cmd", &self.cmd)
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Installs the signal handlers and starts the child. From here on the
    /// signals listed in the crate docs no longer end this process; they are
    /// queued and forwarded to the child while [`Supervisor::wait`] runs.
    pub async fn start(mut cmd: Command) -> Result<Self, SpawnError> {
        let signals = Forwarder::install().map_err(SpawnError::Signals)?;
        let mut out_sink = Some(
            cmd.stdout
                .take()
                .unwrap_or_else(|| Box::new(tokio::io::stdout())),
        );
        let mut err_sink = Some(
            cmd.stderr
                .take()
                .unwrap_or_else(|| Box::new(tokio::io::stderr())),
        );
        let (child, pid, out_pump, err_pump) = spawn(&cmd, &mut out_sink, &mut err_sink)?;
        Ok(Self {
            cmd,
            child,
            pid,
            status: None,
            out_sink,
            err_sink,
            out_pump,
            err_pump,
            signals,
        })
    }

    /// The running child's process id (`None` once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        if self.status.is_some() {
            return None;
        }
        self.pid.and_then(|p| u32::try_from(p.as_raw()).ok())
    }

    /// Waits for the child to exit, forwarding signals to it meanwhile, then
    /// drains both output pipes. Calling it again returns the same status.
    pub async fn wait(&mut self) -> io::Result<Exit> {
        let status = match self.status {
            Some(status) => status,
            None => {
                let pid = self.pid;
                let status = loop {
                    tokio::select! {
                        st = self.child.wait() => break Exit::from(st?),
                        sig = self.signals.recv() => forward(pid, sig),
                    }
                };
                self.status = Some(status);
                status
            }
        };
        self.drain().await;
        Ok(status)
    }

    /// Stops the child if it still runs (SIGTERM, SIGKILL after the grace
    /// period), drains its output and returns how it ended.
    pub async fn shutdown(&mut self) -> io::Result<Exit> {
        if self.status.is_none() {
            forward(self.pid, Signal::SIGTERM);
            let status = match tokio::time::timeout(self.cmd.grace, self.child.wait()).await {
                Ok(st) => st?,
                Err(_elapsed) => {
                    self.child.start_kill()?;
                    self.child.wait().await?
                }
            };
            self.status = Some(Exit::from(status));
        }
        self.wait().await
    }

    /// Stops the current child (see [`Supervisor::shutdown`]) and starts the
    /// command again with `env` replacing the variables set before. If the
    /// new child cannot be started, the old one stays stopped and
    /// [`Supervisor::wait`] returns its status. The
    /// masker is rebuilt from the new values (plus [`Command::mask_value`]
    /// ones), so output of the new child masks the new values.
    pub async fn restart(&mut self, env: EnvVars) -> Result<(), SpawnError> {
        let masked = std::mem::take(&mut self.cmd.extra_masked);
        self.restart_masking(env, masked).await
    }

    /// [`Supervisor::restart`] that also replaces the [`Command::mask_value`]
    /// values (e.g. new values served through [`crate::fifo_once`]).
    pub async fn restart_masking(
        &mut self,
        env: EnvVars,
        masked: Vec<Zeroizing<Vec<u8>>>,
    ) -> Result<(), SpawnError> {
        let program = self.cmd.program_name();
        self.cmd.extra_masked = masked;
        self.shutdown()
            .await
            .map_err(|source| SpawnError::Io { program, source })?;
        self.cmd.env = env;
        let (child, pid, out_pump, err_pump) =
            spawn(&self.cmd, &mut self.out_sink, &mut self.err_sink)?;
        self.child = child;
        self.pid = pid;
        self.status = None;
        self.out_pump = out_pump;
        self.err_pump = err_pump;
        Ok(())
    }

    /// Waits for both pumps to reach EOF, stopping them after the drain
    /// timeout, and takes their sinks back.
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + self.cmd.drain_timeout;
        if let Some(sink) = finish_pump(&mut self.out_pump, deadline).await {
            self.out_sink = Some(sink);
        }
        if let Some(sink) = finish_pump(&mut self.err_pump, deadline).await {
            self.err_sink = Some(sink);
        }
    }
}

/// Waits for `slot`'s pump (stopping it at `deadline`) and returns its sink.
/// Cancel-safe: the pump stays in `slot` until it has finished.
async fn finish_pump(slot: &mut Option<Pump>, deadline: tokio::time::Instant) -> Option<Sink> {
    let pump = slot.as_mut()?;
    let joined = match tokio::time::timeout_at(deadline, &mut pump.task).await {
        Ok(joined) => joined,
        Err(_elapsed) => {
            if let Some(stop) = pump.stop.take() {
                let _ = stop.send(());
            }
            (&mut pump.task).await
        }
    };
    *slot = None;
    match joined {
        Ok(sink) => Some(sink),
        Err(e) => {
            tracing::warn!(error = %e, "output copy task failed");
            None
        }
    }
}

type Spawned = (Child, Option<Pid>, Option<Pump>, Option<Pump>);

/// Starts the child and a pump per pipe. The sinks move into the pumps only
/// once the child runs; on error they stay where they are.
fn spawn(
    cmd: &Command,
    out: &mut Option<Sink>,
    err: &mut Option<Sink>,
) -> Result<Spawned, SpawnError> {
    let masker = cmd.masker()?;
    let mut proc = tokio::process::Command::new(&cmd.program);
    proc.args(&cmd.args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !cmd.inherit_env {
        proc.env_clear();
    }
    for name in &cmd.removed {
        proc.env_remove(name);
    }
    for (name, value) in &cmd.env {
        proc.env(name, value.as_str());
    }
    let program = cmd.program_name();
    let mut child = proc.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => SpawnError::NotFound { program },
        io::ErrorKind::PermissionDenied => SpawnError::NotExecutable { program },
        _ => SpawnError::Io { program, source },
    })?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let out_pump = match (child.stdout.take(), out.take()) {
        (Some(pipe), Some(sink)) => Some(start_pump(pipe, masker.fresh(), sink)),
        (_, sink) => {
            *out = sink;
            None
        }
    };
    let err_pump = match (child.stderr.take(), err.take()) {
        (Some(pipe), Some(sink)) => Some(start_pump(pipe, masker, sink)),
        (_, sink) => {
            *err = sink;
            None
        }
    };
    Ok((child, pid, out_pump, err_pump))
}

fn start_pump<R>(pipe: R, masker: Masker, sink: Sink) -> Pump
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (stop_tx, stop_rx) = oneshot::channel();
    Pump {
        task: tokio::spawn(pump(pipe, masker, sink, stop_rx)),
        stop: Some(stop_tx),
    }
}

/// Copies `pipe` through `masker` to `sink` until EOF, a read error or a
/// stop request, then emits the held tail. A write error stops the copy and
/// closes the pipe, so the child sees EPIPE as it would writing directly.
async fn pump<R>(
    mut pipe: R,
    mut masker: Masker,
    mut sink: Sink,
    mut stop: oneshot::Receiver<()>,
) -> Sink
where
    R: AsyncRead + Unpin,
{
    let mut buf = Zeroizing::new(vec![0u8; 8192]);
    let mut out = Zeroizing::new(Vec::with_capacity(8192));
    loop {
        let n = tokio::select! {
            r = pipe.read(buf.as_mut_slice()) => match r {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "reading child output");
                    break;
                }
            },
            _ = &mut stop => break,
        };
        out.clear();
        masker.push(buf.get(..n).unwrap_or_default(), &mut out);
        if let Err(e) = write_flush(&mut sink, &out).await {
            tracing::debug!(error = %e, "writing child output");
            return sink;
        }
    }
    out.clear();
    masker.finish(&mut out);
    if let Err(e) = write_flush(&mut sink, &out).await {
        tracing::debug!(error = %e, "writing child output");
    }
    sink
}

async fn write_flush(sink: &mut Sink, bytes: &[u8]) -> io::Result<()> {
    if !bytes.is_empty() {
        sink.write_all(bytes).await?;
    }
    sink.flush().await
}

/// Sends `sig` to the child, if its pid is known.
fn forward(pid: Option<Pid>, sig: Signal) {
    if let Some(pid) = pid {
        if let Err(e) = kill(pid, sig) {
            tracing::debug!(error = %e, signal = %sig, "forwarding signal");
        }
    }
}

/// The installed handlers for [`FORWARDED`].
struct Forwarder {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Forwarder {
    fn install() -> io::Result<Self> {
        let streams = FORWARDED
            .iter()
            .map(|&sig| Ok((sig, signal(SignalKind::from_raw(sig as i32))?)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { streams })
    }

    /// The next signal received (cancel-safe).
    async fn recv(&mut self) -> Signal {
        std::future::poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        })
        .await
    }
}
