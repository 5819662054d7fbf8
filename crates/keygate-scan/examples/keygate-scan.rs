//! A stand-alone `keygate-scan` binary for trying the scanner and for the benchmark
//! script, before (and besides) the `keygate` binary wires it in:
//! `cargo run --release --example keygate-scan -- scan PATH…`.

use clap::{Parser, Subcommand};
use keygate_scan::cli::{HookArgs, ScanArgs};

#[derive(Parser)]
#[command(name = "keygate")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find secrets in files, packages and git history.
    Scan(ScanArgs),
    /// Git hooks.
    Hook {
        #[command(subcommand)]
        command: HookCommand,
    },
}

#[derive(Subcommand)]
enum HookCommand {
    /// Install a pre-commit hook running `keygate scan --staged`.
    Install(HookArgs),
}

fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Scan(args) => keygate_scan::cli::run(args),
        Command::Hook {
            command: HookCommand::Install(args),
        } => keygate_scan::cli::run_hook_install(args),
    }
}
