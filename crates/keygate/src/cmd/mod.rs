//! One module per subcommand.

pub mod admin;
pub mod alert;
pub mod audit;
pub mod check;
pub mod ci;
pub mod demo;
pub mod init;
pub mod machine;
pub mod pins;
pub mod route;
pub mod run;
pub mod secret;
pub mod serve;
pub mod tokens;
pub mod vault;

/// `--format` for commands whose output is data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Shows the first four and last three characters of a secret, e.g. `sk-p…X1z`; short
/// values are masked whole.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 12 {
        return "…".repeat(3);
    }
    let head: String = chars.iter().take(4).collect();
    let tail: String = chars.iter().skip(chars.len() - 3).collect();
    format!("{head}…{tail}")
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the second.
pub fn ts(ms: impl Into<i64>) -> String {
    let ms: i64 = ms.into();
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A password from standard input (`--password-stdin`; never an argument, which other
/// users of the machine can see), without its trailing newline.
pub fn password_from_stdin(password_stdin: bool) -> anyhow::Result<secrecy::SecretString> {
    use std::io::Read;
    if !password_stdin {
        anyhow::bail!(
            "pass the password on standard input with --password-stdin (never as an argument)"
        );
    }
    let mut raw = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut raw)
        .map_err(|e| anyhow::anyhow!("reading the password: {e}"))?;
    let password = raw.strip_suffix('\n').unwrap_or(&raw);
    Ok(secrecy::SecretString::from(password.to_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_hides_the_middle_and_short_values_entirely() {
        assert_eq!(super::mask("sk-proj-abcdefghX1z"), "sk-p…X1z");
        assert_eq!(super::mask("short"), "………");
        assert_eq!(super::ts(0), "1970-01-01T00:00:00Z");
    }
}
