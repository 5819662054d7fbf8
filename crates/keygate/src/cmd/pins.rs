//! `keygate pins`: the certificate pin set mobile apps embed to trust only keygate's TLS
//! key (and a backup kept offline), as JSON, an Android network security configuration,
//! an iOS `Info.plist` fragment or a TrustKit configuration; `keygate pins keygen`
//! creates that backup key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use keygate_pins::{Format, PinEntry, PinSet};
use time::{Date, OffsetDateTime};

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  keygate pins keygen --out backup-key.pem     # keep this file offline\n  keygate pins --cert fullchain.pem --backup-key backup-key.pem --format android \\\n      > app/src/main/res/xml/network_security_config.xml\n  keygate pins --cert fullchain.pem --backup-key backup-pub.pem --format ios --expires 90d"
)]
pub struct PinsArgs {
    #[command(subcommand)]
    pub command: Option<PinsCommand>,
    #[command(flatten)]
    pub show: ShowArgs,
}

#[derive(Debug, Subcommand)]
pub enum PinsCommand {
    /// Generate an ECDSA P-256 backup key (PKCS#8 PEM, mode 0600) and print its pin
    Keygen {
        /// Where to write the private key; an existing file is never overwritten
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Flags of `keygate pins` without a subcommand: print a pin set.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The certificate keygate serves, PEM (chain) or DER; only the first certificate of
    /// each file (the leaf) is pinned. Repeatable
    #[arg(long = "cert", value_name = "FILE")]
    pub certs: Vec<PathBuf>,
    /// Connect to https://HOST[:PORT] and pin the leaf of the chain it presents, which must
    /// verify against the Mozilla roots or --ca. Repeatable
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// Verify --url chains against the CA certificates of this file (PEM or DER) instead of
    /// the Mozilla roots. Repeatable
    #[arg(long = "ca", value_name = "FILE")]
    pub cas: Vec<PathBuf>,
    /// A backup key kept offline: public key, private key or certificate (PEM or DER).
    /// Repeatable
    #[arg(long = "backup-key", value_name = "FILE")]
    pub backup_keys: Vec<PathBuf>,
    /// The pinned host name (default: the host of the first --url, else the first DNS
    /// name of the first --cert)
    #[arg(long)]
    pub host: Option<String>,
    /// When apps stop enforcing the pins: a duration from today (60d, 12weeks) or a date
    /// (YYYY-MM-DD)
    #[arg(long, default_value = "60d", value_parser = parse_expires)]
    pub expires: Expires,
    /// Pin the host's subdomains too
    #[arg(long)]
    pub include_subdomains: bool,
    /// What to print
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub format: OutputFormat,
    /// Print the set even without a backup pin (a key rotation then locks the app out)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// {"host", "expires", "include_subdomains", "pins": [...]}
    Json,
    /// res/xml/network_security_config.xml
    Android,
    /// Info.plist NSAppTransportSecurity / NSPinnedDomains
    Ios,
    /// TrustKit's TSKConfiguration
    Trustkit,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Format {
        match f {
            OutputFormat::Json => Format::Json,
            OutputFormat::Android => Format::Android,
            OutputFormat::Ios => Format::Ios,
            OutputFormat::Trustkit => Format::TrustKit,
        }
    }
}

/// `--expires`: a fixed date, or a duration counted from the day the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expires {
    On(Date),
    In(std::time::Duration),
}

impl Expires {
    fn date(self, now: OffsetDateTime) -> anyhow::Result<Date> {
        match self {
            Expires::On(d) => Ok(d),
            Expires::In(d) => time::Duration::try_from(d)
                .ok()
                .and_then(|d| now.checked_add(d))
                .map(|t| t.date())
                .context("--expires is too far in the future"),
        }
    }
}

fn parse_expires(s: &str) -> Result<Expires, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = Date::parse(s, format) {
        return Ok(Expires::On(date));
    }
    humantime::parse_duration(s)
        .map(Expires::In)
        .map_err(|e| format!("neither a date (YYYY-MM-DD) nor a duration (60d): {e}"))
}

/// Runs `keygate pins …`. Errors are one line, for the caller to print as `keygate: …`
/// and exit 1.
pub async fn run(args: PinsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(PinsCommand::Keygen { out }) => keygen(&out),
        None => show(args.show).await,
    }
}

fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let pin = keygate_pins::keygen(out)?;
    println!("{pin}");
    eprintln!(
        "Keep {} offline (not on the server): it is the backup key the apps pin. Pass it (or \
         its public key) as --backup-key; deploy it only when the current key is retired.",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    if args.certs.is_empty() && args.urls.is_empty() {
        bail!("give the certificate keygate serves with --cert FILE or --url https://HOST");
    }
    if !args.cas.is_empty() && args.urls.is_empty() {
        bail!("--ca only applies to --url");
    }
    let mut current = read_leaves(&args.certs)?;
    let mut roots = Vec::new();
    for ca in &args.cas {
        roots.extend(keygate_pins::read_ca_certificates(ca)?);
    }
    for url in &args.urls {
        let chain = keygate_pins::fetch_chain(url, &roots).await?;
        current.extend(chain.into_iter().take(1));
    }
    let backup = read_leaves(&args.backup_keys)?;
    let host = match (args.host, args.urls.first()) {
        (Some(h), _) => h,
        (None, Some(url)) => url_host(url)?,
        (None, None) => default_host(current.first())?,
    };
    let set = PinSet {
        host,
        current,
        backup,
        expires: args.expires.date(OffsetDateTime::now_utc())?,
        include_subdomains: args.include_subdomains,
    };
    let warnings = keygate_pins::validate(&set, args.force)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", keygate_pins::render(&set, args.format.into()));
    Ok(ExitCode::SUCCESS)
}

/// The pins of each file; of a certificate chain, only its first certificate.
fn read_leaves(files: &[PathBuf]) -> anyhow::Result<Vec<PinEntry>> {
    let mut out = Vec::new();
    for file in files {
        let entries = keygate_pins::read_pins(file)?;
        out.extend(
            entries
                .into_iter()
                .filter(|e| matches!(e.chain_index, None | Some(0))),
        );
    }
    Ok(out)
}

fn url_host(url: &str) -> anyhow::Result<String> {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .with_context(|| format!("{url}: no host in the URL: give --host"))
}

fn default_host(leaf: Option<&PinEntry>) -> anyhow::Result<String> {
    let Some(leaf) = leaf else {
        bail!("no certificate to take the host from: give --host");
    };
    match leaf.dns_names.first() {
        Some(name) if name.starts_with("*.") => bail!(
            "{}: the first DNS name is a wildcard ({name}): give --host (and \
             --include-subdomains if the apps use several subdomains)",
            leaf.file
        ),
        Some(name) => Ok(name.clone()),
        None => bail!("{}: no DNS name in the certificate: give --host", leaf.file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_takes_dates_and_durations() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(
            parse_expires("2031-03-07")
                .ok()
                .and_then(|e| e.date(now).ok())
                .map(|d| d.to_string()),
            Some("2031-03-07".to_string())
        );
        let in_60 = parse_expires("60d").ok().and_then(|e| e.date(now).ok());
        assert_eq!(in_60.map(|d| (d - now.date()).whole_days()), Some(60));
        assert!(parse_expires("soon").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        pins: PinsArgs,
    }

    fn parse(args: &[&str]) -> Result<PinsArgs, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("pins").chain(args.iter().copied())).map(|c| c.pins)
    }

    #[test]
    fn flags_and_keygen_parse() {
        let args = parse(&[
            "--cert",
            "a.pem",
            "--cert",
            "b.pem",
            "--backup-key",
            "k.pem",
            "--format",
            "android",
            "--include-subdomains",
        ]);
        let args = args.ok();
        assert!(args.as_ref().is_some_and(|a| a.command.is_none()
            && a.show.certs.len() == 2
            && a.show.backup_keys.len() == 1
            && a.show.format == OutputFormat::Android
            && a.show.include_subdomains
            && a.show.expires == Expires::In(std::time::Duration::from_secs(60 * 86_400))));
        let keygen = parse(&["keygen", "--out", "backup.pem"]).ok();
        assert!(matches!(
            keygen.and_then(|a| a.command),
            Some(PinsCommand::Keygen { out }) if out == Path::new("backup.pem")
        ));
        assert!(parse(&["--cert", "a.pem", "keygen", "--out", "k.pem"]).is_err());
    }

    #[test]
    fn the_default_host_is_the_leafs_first_dns_name_but_not_a_wildcard() {
        let mut leaf = PinEntry {
            pin: keygate_pins::Pin::of_spki_der(b"test"),
            file: "server.pem".to_string(),
            kind: keygate_pins::SourceKind::Certificate,
            chain_index: Some(0),
            subject: None,
            dns_names: vec!["api.example.com".to_string(), "example.com".to_string()],
            not_after: None,
            is_ca: false,
        };
        assert_eq!(
            default_host(Some(&leaf)).ok().as_deref(),
            Some("api.example.com")
        );
        leaf.dns_names = vec!["*.example.com".to_string()];
        let err = default_host(Some(&leaf))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("wildcard") && err.contains("--host"), "{err}");
        leaf.dns_names.clear();
        assert!(default_host(Some(&leaf)).is_err());
        assert_eq!(
            url_host("https://keygate.example.com:8443/x")
                .ok()
                .as_deref(),
            Some("keygate.example.com")
        );
    }
}
