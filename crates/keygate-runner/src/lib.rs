//! Process plumbing for `keygate run`: start a command with secrets in its
//! environment only, and keep those secrets out of what it prints.
//!
//! - [`Masker`] redacts secret values from a byte stream, chunk by chunk.
//! - [`Command`] / [`Supervisor`] / [`run`] start the child with extra
//!   environment variables, copy its stdout and stderr through a masker
//!   each, forward SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to
//!   it, report its [`Exit`], and restart it with new values.
//! - [`fifo_once`] serves a value through a one-shot named pipe for tools
//!   that only read files.
//!
//! # What is masked
//!
//! Each value of at least [`MIN_MASK_LEN`] bytes, and that value encoded as
//! standard or URL-safe base64 (with and without padding), lower- or
//! upper-case hex, and percent-encoding (upper- or lower-case digits), is
//! replaced by [`REPLACEMENT`] wherever it appears in the child's output,
//! also when it arrives split across several writes.
//!
//! # Limits
//!
//! - Values shorter than [`MIN_MASK_LEN`] bytes are not masked
//!   ([`Masker::too_short`] tells which).
//! - An encoding is only found when the value starts the encoded run: a
//!   value base64- or hex-encoded as part of a longer blob, at a different
//!   alignment, is not recognised. Other transformations (JSON escaping,
//!   reversal, other encodings) are not recognised either.
//! - A partial value still held back when the stream ends is printed as it
//!   is (it never became a whole value).
//! - Anything the child writes elsewhere (files, the terminal via
//!   `/dev/tty`, the network) is not seen, and the child can always leak
//!   a secret deliberately.
//! - Zeroing is best effort: the standard library and the search automaton
//!   keep their own copies of the values, which are freed but not zeroed.
//! - Terminal-generated signals (Ctrl-C) reach the child directly, as it is
//!   in the foreground process group, and once more through forwarding.

mod child;
mod mask;
mod mount;

pub use child::{
    Command, DEFAULT_DRAIN_TIMEOUT, DEFAULT_GRACE, EnvVars, Exit, Sink, SpawnError, Supervisor, run,
};
pub use mask::{MIN_MASK_LEN, MaskError, Masker, REPLACEMENT};
pub use mount::{FifoHandle, fifo_once};
