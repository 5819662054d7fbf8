//! `keygate-scan`: finds API keys and other secrets in source trees, git history, staged
//! changes and mobile packages (APK, AAB, IPA, JAR, ZIP, nested), so that a team can
//! prove an app ships no key and a CI gate can fail a build that adds one.
//!
//! # Pieces
//! * [`rules`]: detection rules as data (TOML files compiled in, ≥100 provider rules and
//!   an entropy-gated generic rule), each with positive and negative examples that
//!   [`check::check_rules`] runs.
//! * [`matcher`]: an Aho-Corasick keyword prefilter, then each triggered rule's regex on
//!   windows around its keyword hits.
//! * [`scan`]: the scanner: directory walking (honouring `.gitignore`), binary skipping,
//!   chunked reading of large files, nested archives with zip-bomb limits, and the
//!   readers of [`formats`] (dex string table, binary XML, `resources.arsc`, binary plist,
//!   printable strings of ELF/Mach-O).
//! * [`git`]: `--git` history and `--staged` index scanning through libgit2.
//! * [`fingerprints`]: managed secrets found by keyed fingerprint, also base64/hex.
//! * [`baseline`], inline `keygate:allow`, [`report`] (text, JSON, SARIF 2.1.0),
//!   [`hook`] (pre-commit), and [`cli`] (clap types and `run` functions).
//!
//! # Wiring into the `keygate` binary
//! The CLI types are clap 4 derive `Args`; the `run` functions print their own one-line
//! error and return the exit code (0 clean, 1 findings, 2 error).
//!
//! ```no_run
//! use clap::{Parser, Subcommand};
//! use keygate_scan::cli::{HookArgs, ScanArgs};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(subcommand)]
//!     command: Command,
//! }
//!
//! #[derive(Subcommand)]
//! enum Command {
//!     /// Find secrets in files, packages and git history.
//!     Scan(ScanArgs),
//!     /// Git hooks.
//!     Hook {
//!         #[command(subcommand)]
//!         command: HookCommand,
//!     },
//! }
//!
//! #[derive(Subcommand)]
//! enum HookCommand {
//!     /// Install a pre-commit hook running `keygate scan --staged`.
//!     Install(HookArgs),
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     match Cli::parse().command {
//!         // `keygate scan rules check|list` is a subcommand inside ScanArgs.
//!         Command::Scan(args) => keygate_scan::cli::run(args),
//!         Command::Hook { command: HookCommand::Install(args) } => {
//!             keygate_scan::cli::run_hook_install(args)
//!         }
//!     }
//! }
//! ```
//!
//! # Using the library directly
//! ```
//! use keygate_scan::{matcher::Matcher, rules::RuleSet, scan::{Collector, Limits, Origin, Scanner}};
//!
//! let scanner = Scanner::new(Matcher::new(RuleSet::builtin()?)?, None, Limits::default());
//! let sink = Collector::default();
//! let token = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY2z4A");
//! scanner.scan_bytes(format!("GITHUB_TOKEN={token}\n").as_bytes(), &Origin::new("ci.env"), &sink);
//! let (findings, _warnings) = sink.finish();
//! assert_eq!(findings[0].rule_id, "github-pat-token");
//! assert_eq!(findings[0].line, Some(1));
//! assert!(!findings[0].masked.contains(&token));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod baseline;
pub mod check;
pub mod cli;
pub mod finding;
pub mod fingerprints;
pub mod formats;
pub mod git;
pub mod hook;
pub mod matcher;
pub mod report;
pub mod rules;
pub mod scan;
