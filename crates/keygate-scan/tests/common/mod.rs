//! Shared helpers for the integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use clap::{Parser, Subcommand};
use keygate_scan::cli::{HookArgs, ScanArgs, run_with};

#[derive(Parser)]
#[command(name = "keygate")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Scan(ScanArgs),
    Hook {
        #[command(subcommand)]
        command: HookCmd,
    },
}

#[derive(Subcommand)]
enum HookCmd {
    Install(HookArgs),
}

pub struct Run {
    pub code: u8,
    pub out: String,
    pub err: String,
}

/// Runs `keygate scan ARGS…` in-process.
pub fn scan(args: &[&str]) -> Run {
    let argv = std::iter::once("keygate")
        .chain(std::iter::once("scan"))
        .chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).unwrap();
    let Cmd::Scan(a) = cli.command else {
        panic!("not scan")
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run_with(&a, &mut out, &mut err, false);
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

pub fn hook_args(args: &[&str]) -> HookArgs {
    let argv = ["keygate", "hook", "install"]
        .into_iter()
        .chain(args.iter().copied());
    match Cli::try_parse_from(argv).unwrap().command {
        Cmd::Hook {
            command: HookCmd::Install(a),
        } => a,
        Cmd::Scan(_) => panic!("not hook"),
    }
}

/// Deterministic pseudo-random strings, so test keys look like real ones (high entropy)
/// without any real key in the sources.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn from(&mut self, chars: &str, n: usize) -> String {
        let c: Vec<char> = chars.chars().collect();
        (0..n)
            .map(|_| c[(self.next() % c.len() as u64) as usize])
            .collect()
    }
    pub fn alnum(&mut self, n: usize) -> String {
        self.from(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            n,
        )
    }
    pub fn hex(&mut self, n: usize) -> String {
        self.from("0123456789abcdef", n)
    }
    pub fn urlsafe(&mut self, n: usize) -> String {
        self.from(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
            n,
        )
    }
    pub fn upper32(&mut self, n: usize) -> String {
        self.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", n)
    }

    pub fn github(&mut self) -> String {
        format!("ghp_{}", self.alnum(36))
    }
    pub fn google(&mut self) -> String {
        format!("AIza{}", self.urlsafe(35))
    }
    pub fn stripe(&mut self) -> String {
        format!("sk_{}_{}", "live", self.alnum(24))
    }
    pub fn aws(&mut self) -> String {
        format!("AKIA{}", self.upper32(16))
    }
    pub fn openai(&mut self) -> String {
        format!("sk-proj-{}T3BlbkFJ{}", self.urlsafe(40), self.urlsafe(40))
    }
    pub fn slack(&mut self) -> String {
        format!(
            "xoxb-{}-{}-{}",
            self.from("0123456789", 12),
            self.from("0123456789", 13),
            self.alnum(24)
        )
    }
}
