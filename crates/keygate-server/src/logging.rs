//! Logging, set up in one place: JSON for the server, text for people, `KEYGATE_LOG` as the
//! filter, and a redacting writer as the second line of defence (S22).
//!
//! The first line of defence is that secrets are `secrecy` types that cannot be printed.
//! The writer below catches what slips through anyway: anything that looks like a
//! credential is replaced by `[REDACTED]` before the line leaves the process.

use std::io::{self, Write};
use std::sync::OnceLock;

use regex::Regex;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        let table: &[(&str, &str)] = &[
            // Credentials after an HTTP auth scheme (before the key=value rule, which would
            // otherwise take the scheme name for the value).
            (r"(?i)\b(bearer|dpop|basic)\s+[A-Za-z0-9._~+/=-]{8,}", "${1} [REDACTED]"),
            // key=value / "key":"value" where the key names a credential.
            (
                r#"(?i)("?(?:[a-z_]*password|passwd|[a-z_]*secret|[a-z_]*token|authorization|api[_-]?key|cookie|dpop|otp|totp_code|code_verifier)"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|[^\s,}]+)"#,
                "${1}\"[REDACTED]\"",
            ),
            (r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*", "[REDACTED-JWT]"),
            (r"\bkga_[A-Za-z0-9_-]{16,}", "[REDACTED-ADMIN-TOKEN]"),
            (r"\bkg[msr]_[A-Za-z0-9_-]{16,}", "[REDACTED-TOKEN]"),
            (r"\bsk-[A-Za-z0-9_-]{16,}", "[REDACTED-KEY]"),
            (r"\bAKIA[0-9A-Z]{16}\b", "[REDACTED-KEY]"),
            (r"\bAIza[0-9A-Za-z_-]{35}\b", "[REDACTED-KEY]"),
            (r"\b(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{20,}", "[REDACTED-KEY]"),
            (r"\bxox[abprs]-[A-Za-z0-9-]{10,}", "[REDACTED-KEY]"),
            (r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}", "[REDACTED-KEY]"),
        ];
        table
            .iter()
            .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, *r)))
            .collect()
    })
}

/// Replaces credential-looking substrings of `line` with markers.
pub fn redact(line: &str) -> String {
    let mut out = std::borrow::Cow::Borrowed(line);
    for (re, replacement) in patterns() {
        if re.is_match(&out) {
            out = std::borrow::Cow::Owned(re.replace_all(&out, *replacement).into_owned());
        }
    }
    out.into_owned()
}

/// A `MakeWriter` whose writers redact each formatted event before writing it.
#[derive(Clone)]
pub struct RedactingMakeWriter<M> {
    inner: M,
}

impl<M> RedactingMakeWriter<M> {
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

/// Buffers one event and writes it redacted when dropped (tracing-subscriber formats an
/// event into one buffer and drops the writer after it).
pub struct RedactingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return self.inner.flush();
        }
        let text = String::from_utf8_lossy(&self.buf);
        let clean = redact(&text);
        self.buf.clear();
        self.inner.write_all(clean.as_bytes())?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.inner.make_writer(),
            buf: Vec::with_capacity(256),
        }
    }
}

/// Installs the global subscriber. `KEYGATE_LOG` wins over `level`. Logs go to stderr.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init(format: LogFormat, level: &str) {
    let filter = std::env::var("KEYGATE_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let writer = RedactingMakeWriter::new(io::stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let cases = [
            r#"{"msg":"x","password":"hunter2hunter2"}"#,
            "token=abcdefgh12345678 next",
            "Authorization: Bearer abcdefghijklmnop",
            "header dpop eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
            "admin kga_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "key sk-proj-abcdefghijklmnopqrstuvwx used",
            "aws AKIAIOSFODNN7EXAMPLE here",
            r#"{"client_secret":"s3cr3t value"}"#,
        ];
        for c in cases {
            let r = redact(c);
            assert!(r.contains("REDACTED"), "{c} -> {r}");
            for needle in [
                "hunter2",
                "abcdefgh12345678",
                "abcdefghijklmnop",
                "c2lnbmF0dXJl",
                "AAAAAAAAAAAAAAAA",
                "abcdefghijklmnopqrstuvwx",
                "IOSFODNN7",
                "s3cr3t",
            ] {
                assert!(!r.contains(needle), "{c} -> {r}");
            }
        }
    }

    #[test]
    fn ordinary_lines_are_untouched() {
        let line = r#"{"level":"INFO","message":"secret stored","name":"openai","version":3}"#;
        assert_eq!(redact(line), line);
    }

    #[test]
    fn writer_redacts_on_flush() {
        let mut sink = Vec::new();
        {
            let mut w = RedactingWriter {
                inner: &mut sink,
                buf: Vec::new(),
            };
            w.write_all(b"password=correct-horse-battery\n").unwrap();
        }
        let out = String::from_utf8(sink).unwrap();
        assert!(!out.contains("correct-horse"), "{out}");
    }
}
