//! Command-line surface: clap argument types and `run` functions for the `keygate`
//! binary. Exit codes: 0 no findings, 1 findings, 2 error (one line on stderr).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::baseline::Baseline;
use crate::check::check_rules;
use crate::fingerprints::Fingerprints;
use crate::matcher::Matcher;
use crate::report::{self, Format, Summary};
use crate::rules::RuleSet;
use crate::scan::{Collector, Limits, Scanner};

pub const EXIT_CLEAN: u8 = 0;
pub const EXIT_FINDINGS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

const SCAN_EXAMPLES: &str = "\
Examples:
  keygate scan .                                  scan a source tree
  keygate scan build/app-release.apk --format sarif > scan.sarif
  keygate scan --git                              scan every commit of this repository
  keygate scan --staged                           what is about to be committed
  keygate scan . --write-baseline .keygate-baseline.json
  keygate scan . --baseline .keygate-baseline.json
  keygate scan app.ipa --fingerprints fingerprints.json
  keygate scan rules check --rules my-rules.toml

Exit status: 0 no findings, 1 findings, 2 error.
Add `keygate:allow` to a line to accept what is on it.";

/// `keygate scan [PATH]… [OPTIONS]` and `keygate scan rules check|list`.
///
/// A first positional argument named `rules` is the subcommand; scan a directory of
/// that name as `./rules`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, after_help = SCAN_EXAMPLES)]
pub struct ScanArgs {
    #[command(subcommand)]
    pub command: Option<ScanCommand>,

    /// Files, directories, archives or packages (APK, AAB, IPA, JAR, ZIP) to scan.
    /// Default: the current directory. With --git or --staged: the repository.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Scan every blob in the repository's history (all refs), once each.
    #[arg(long, conflicts_with = "staged")]
    pub git: bool,

    /// Scan what the index adds against HEAD (for a pre-commit hook).
    #[arg(long)]
    pub staged: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Ignore findings recorded in this baseline file.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Record all current findings in this baseline file (and exit 0).
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,

    /// Extra rule file (TOML); may be repeated. A rule with a built-in id replaces it.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,

    /// Keyed fingerprints of managed secrets, from `keygate secret fingerprints`.
    #[arg(long, value_name = "FILE")]
    pub fingerprints: Option<PathBuf>,

    /// No progress line, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ScanCommand {
    /// Work with detection rules.
    Rules(RulesArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RulesCommand {
    /// Run every rule's positive and negative examples; exit 1 if one fails.
    Check(RulesCheckArgs),
    /// List the rules (id, severity, name).
    List(RulesCheckArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RulesCheckArgs {
    /// Extra rule file (TOML) to load after the built-in rules; may be repeated.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
}

/// `keygate hook install`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example:\n  keygate hook install            # in a git working tree")]
pub struct HookArgs {
    /// The repository (any path inside it).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,

    /// Replace an existing pre-commit hook that keygate did not write.
    #[arg(long)]
    pub force: bool,

    /// The command the hook runs.
    #[arg(long, value_name = "CMD", default_value = "keygate")]
    pub command: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Rules(#[from] crate::rules::RuleError),
    #[error(transparent)]
    Matcher(#[from] crate::matcher::MatcherError),
    #[error(transparent)]
    Fingerprints(#[from] crate::fingerprints::FingerprintError),
    #[error(transparent)]
    Baseline(#[from] crate::baseline::BaselineError),
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error("{0}")]
    Other(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

fn load_rules(extra: &[PathBuf]) -> Result<Matcher, CliError> {
    let mut set = RuleSet::builtin()?;
    for f in extra {
        set.add_file(f)?;
    }
    Ok(Matcher::new(set)?)
}

fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// Entry point of `keygate scan …` (and `keygate scan rules …`).
pub fn run(args: ScanArgs) -> ExitCode {
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    exit(run_std(&args, progress))
}

fn run_std(args: &ScanArgs, progress: bool) -> u8 {
    // No stream lock is held across the scan: the progress thread writes to stderr too.
    run_with(
        args,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        progress,
    )
}

/// Entry point of `keygate scan rules check`.
pub fn run_rules_check(args: RulesCheckArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    exit(rules_command(
        &RulesCommand::Check(args),
        &mut out,
        &mut err,
    ))
}

/// Entry point of `keygate hook install`.
pub fn run_hook_install(args: HookArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    match crate::hook::install(&args.repo, &args.command, args.force) {
        Ok(path) => {
            let _ = writeln!(out, "installed pre-commit hook {}", path.display());
            exit(EXIT_CLEAN)
        }
        Err(e) => {
            let _ = writeln!(err, "keygate hook install: error: {e}");
            exit(EXIT_ERROR)
        }
    }
}

/// Like [`run`], writing to the given streams; returns the exit code. With `progress`,
/// a thread writes a progress line to the process's stderr, so the caller must not hold
/// `std::io::stderr().lock()` meanwhile.
pub fn run_with(args: &ScanArgs, out: &mut dyn Write, err: &mut dyn Write, progress: bool) -> u8 {
    if let Some(ScanCommand::Rules(r)) = &args.command {
        return rules_command(&r.command, out, err);
    }
    match scan(args, out, err, progress) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "keygate scan: error: {e}");
            EXIT_ERROR
        }
    }
}

fn rules_command(cmd: &RulesCommand, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let (RulesCommand::Check(a) | RulesCommand::List(a)) = cmd;
    let matcher = match load_rules(&a.rules) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "keygate scan rules: error: {e}");
            return EXIT_ERROR;
        }
    };
    if let RulesCommand::List(_) = cmd {
        for r in matcher.rules().rules() {
            let _ = writeln!(
                out,
                "{:<40} {:<6} {}",
                r.id(),
                r.severity().as_str(),
                r.name()
            );
        }
        return EXIT_CLEAN;
    }
    let report = check_rules(&matcher);
    for f in &report.failures {
        let _ = writeln!(out, "FAIL {} ({}): {}", f.rule_id, f.source_name, f.message);
    }
    let _ = writeln!(
        out,
        "{} rules, {} examples, {} negatives: {} passed, {} failed",
        report.rules,
        report.examples,
        report.negatives,
        (report.examples + report.negatives).saturating_sub(report.failures.len()),
        report.failures.len()
    );
    if report.failures.is_empty() {
        EXIT_CLEAN
    } else {
        EXIT_FINDINGS
    }
}

fn scan(
    args: &ScanArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> Result<u8, CliError> {
    let started = Instant::now();
    if (args.git || args.staged) && args.paths.len() > 1 {
        return Err(CliError::Other(
            "with --git or --staged, give at most one path (the repository)".into(),
        ));
    }
    let matcher = load_rules(&args.rules)?;
    let fingerprints = match &args.fingerprints {
        Some(p) => Some(Fingerprints::load(p)?),
        None => None,
    };
    let baseline = match &args.baseline {
        Some(p) => Some(Baseline::load(p)?),
        None => None,
    };
    let scanner = Scanner::new(matcher, fingerprints, Limits::default());
    let sink = Collector::default();
    let default_paths = [PathBuf::from(".")];
    let paths: &[PathBuf] = if args.paths.is_empty() {
        &default_paths
    } else {
        &args.paths
    };
    let repo = paths.first().map_or(Path::new("."), PathBuf::as_path);

    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        if progress {
            s.spawn(|| progress_loop(&sink, &done, progress_delay()));
        }
        let r = if args.git {
            crate::git::scan_history(repo, &scanner, &sink).map_err(CliError::from)
        } else if args.staged {
            crate::git::scan_staged(repo, &scanner, &sink).map_err(CliError::from)
        } else {
            scanner.scan_paths(paths, &sink);
            Ok(())
        };
        done.store(true, Ordering::Relaxed);
        r
    });
    result?;

    let files = sink.files.load(Ordering::Relaxed);
    let bytes = sink.bytes.load(Ordering::Relaxed);
    let skipped_binary = sink.skipped_binary.load(Ordering::Relaxed);
    let (mut findings, warnings) = sink.finish();
    if let Some(path) = &args.write_baseline {
        let b = Baseline::from_findings(&findings);
        b.save(path)?;
        let _ = writeln!(
            err,
            "wrote baseline {} with {} entries",
            path.display(),
            b.findings.len()
        );
    }
    let mut baselined = 0;
    if let Some(b) = &baseline {
        baselined += b.filter(&mut findings);
    }
    if args.write_baseline.is_some() {
        baselined += findings.len();
        findings.clear();
    }
    let summary = Summary {
        files,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        findings: findings.len(),
        warnings: warnings.len(),
        skipped_binary,
        baselined,
    };
    match args.format {
        Format::Text => {
            report::write_text(out, &findings)?;
            const MAX_WARNINGS: usize = 50;
            for w in warnings.iter().take(MAX_WARNINGS) {
                let _ = writeln!(
                    err,
                    "warning: {}: {}",
                    if w.path.is_empty() { "-" } else { &w.path },
                    w.message
                );
            }
            if warnings.len() > MAX_WARNINGS {
                let _ = writeln!(err, "warning: … and {} more", warnings.len() - MAX_WARNINGS);
            }
        }
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut *out,
                &report::to_json(&findings, &warnings, &summary),
            )
            .map_err(|e| CliError::Other(e.to_string()))?;
            writeln!(out)?;
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &report::to_sarif(&findings, &warnings))
                .map_err(|e| CliError::Other(e.to_string()))?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    let _ = writeln!(err, "{}", summary.line());
    Ok(if findings.is_empty() {
        EXIT_CLEAN
    } else {
        EXIT_FINDINGS
    })
}

/// Scans shorter than this get no progress line.
#[cfg(not(test))]
fn progress_delay() -> Duration {
    Duration::from_millis(500)
}

// Unit tests show the progress line at once, to exercise it on short scans.
#[cfg(test)]
fn progress_delay() -> Duration {
    Duration::ZERO
}

fn progress_loop(sink: &Collector, done: &AtomicBool, delay: Duration) {
    let mut err = std::io::stderr();
    let mut shown = false;
    let started = Instant::now();
    while !done.load(Ordering::Relaxed) {
        if started.elapsed() >= delay {
            let mb = sink.bytes.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = write!(
                err,
                "\r\x1b[2Kscanning: {} files, {:.1} MB, {} findings",
                sink.files.load(Ordering::Relaxed),
                mb,
                sink.findings_so_far()
            );
            let _ = err.flush();
            shown = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if shown {
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: ScanArgs,
    }

    /// Regression: `run` held the stderr lock for the whole scan while the progress
    /// thread wrote to stderr, so every scan on a terminal longer than the progress delay
    /// hung.
    #[test]
    fn progress_line_does_not_deadlock_with_the_stderr_writer() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..200 {
            std::fs::write(
                dir.path().join(format!("f{i}.txt")),
                "nothing here\n".repeat(2000),
            )
            .unwrap();
        }
        let path = dir.path().to_str().unwrap().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let t = T::try_parse_from(["scan", path.as_str()]).unwrap();
            // Exactly what `run` does, with the progress thread forced on.
            let code = run_std(&t.args, true);
            let _ = tx.send(code);
        });
        let code = rx.recv_timeout(Duration::from_secs(60)).expect("scan hung");
        assert_eq!(code, EXIT_CLEAN);
    }
}
