//! `keygate`: the one binary. `main` parses arguments, calls [`run`], prints one error
//! line and exits with a documented code:
//!
//! - 0: success
//! - 1: the operation failed (the line on stderr says why), or `audit verify` found a
//!   broken chain
//! - 2: invalid usage (from the argument parser)
//!
//! `keygate scan` has its own codes: 0 no findings, 1 findings, 2 error.

// The CLI reads server answers as `serde_json::Value`; indexing a `Value` by key yields
// `Null` for a missing key rather than panicking, so the lint's concern does not apply.
#![allow(clippy::indexing_slicing)]

mod client;
mod cmd;

/// mimalloc instead of the system allocator: the proxy's hot path allocates small,
/// short-lived buffers on two threads, where glibc's malloc showed as ~13% of the CPU
/// profile (`bench/proxy/run.sh` under `perf`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "Self-hosted gatekeeper that keeps third-party API keys off mobile devices",
    after_help = "Examples:\n  keygate demo                       # see it work on embedded defaults\n  keygate init --dir /etc/keygate    # real set-up: config, master key, admin token\n  keygate serve --config /etc/keygate/keygate.toml\n  echo -n \"$OPENAI_KEY\" | keygate secret put openai --stdin\n\nManagement commands talk to a running server: set KEYGATE_ADDR (default http://127.0.0.1:8080)\nand KEYGATE_TOKEN (the admin token printed by `keygate init`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a configuration, a master key and the first admin credential in a directory
    Init(cmd::init::InitArgs),
    /// Run the server
    Serve(cmd::serve::ServeArgs),
    /// Start a throw-away server on embedded defaults and walk through what it does
    Demo(cmd::demo::DemoArgs),
    /// Manage secrets in the vault (through the admin API)
    #[command(subcommand)]
    Secret(cmd::secret::SecretCommand),
    /// Inspect and verify the audit log
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Master-key operations that work directly on the store
    #[command(subcommand)]
    Vault(cmd::vault::VaultCommand),
    /// Operator console accounts (password + TOTP; the console is at /console/)
    #[command(subcommand)]
    Admin(cmd::admin::AdminCommand),
    /// Manage users who sign in on keygate's login page
    #[command(subcommand)]
    User(cmd::tokens::UserCommand),
    /// Manage OAuth clients (mobile apps, servers)
    #[command(subcommand)]
    Client(cmd::tokens::ClientCommand),
    /// List and revoke sign-in sessions
    #[command(subcommand)]
    Session(cmd::tokens::SessionCommand),
    /// Token signing keys
    #[command(subcommand)]
    Keys(cmd::tokens::KeysCommand),
    /// Proxy routes: which upstream, which calls, which key, which limits
    #[command(subcommand)]
    Route(cmd::route::RouteCommand),
    /// What the monitor saw and did: alerts, acknowledgement, current rates
    #[command(subcommand)]
    Alert(cmd::alert::AlertCommand),
    /// Throttles the monitor put in force, and lifting them
    #[command(subcommand)]
    Throttle(cmd::alert::ThrottleCommand),
    /// Policies: which secrets a CI job or server (a machine identity) may read
    #[command(subcommand)]
    Policy(cmd::machine::PolicyCommand),
    /// Static machine credentials for servers without OIDC
    #[command(subcommand)]
    Machine(cmd::machine::MachineCommand),
    /// Run a command with secrets in its environment only, masked in its output, as a
    /// machine identity (CI job or server)
    Run(cmd::run::RunArgs),
    /// CI/CD set-up: example pipelines using OIDC and `keygate run`
    #[command(subcommand)]
    Ci(cmd::ci::CiCommand),
    /// Certificate pin sets for app builds (SPKI SHA-256 of the current and backup keys:
    /// JSON, Android, iOS, TrustKit), and backup key generation
    Pins(cmd::pins::PinsArgs),
    /// Grade this deployment against the checklist: pass / warn / fail per item, with evidence
    Check(cmd::check::CheckArgs),
    /// Print the admin API's OpenAPI 3.1 description (the document a server serves at
    /// /admin/v1/openapi.json), for client generators and API testers
    Openapi,
    /// Find API keys and other secrets in files, git history, staged changes and APK/IPA
    /// packages (exit 0: none, 1: findings, 2: error)
    Scan(keygate_scan::cli::ScanArgs),
    /// Git hooks
    #[command(subcommand)]
    Hook(HookCommand),
}

#[derive(Subcommand)]
enum HookCommand {
    /// Install a git pre-commit hook that runs `keygate scan --staged`
    Install(keygate_scan::cli::HookArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The scanner is synchronous and uses every core itself: no async runtime for it.
    let cli = match cli.command {
        Command::Scan(args) => return keygate_scan::cli::run(args),
        Command::Hook(HookCommand::Install(args)) => {
            return keygate_scan::cli::run_hook_install(args);
        }
        command => Cli { command },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("keygate: {}", chain.join(": "));
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(a) => cmd::init::run(a).await,
        Command::Serve(a) => cmd::serve::run(a).await,
        Command::Demo(a) => cmd::demo::run(a).await,
        Command::Secret(c) => cmd::secret::run(c).await,
        Command::Audit(c) => cmd::audit::run(c).await,
        Command::Vault(c) => cmd::vault::run(c).await,
        Command::Admin(c) => cmd::admin::run(c).await,
        Command::User(c) => cmd::tokens::user(c).await,
        Command::Client(c) => cmd::tokens::client(c).await,
        Command::Session(c) => cmd::tokens::session(c).await,
        Command::Keys(c) => cmd::tokens::keys(c).await,
        Command::Route(c) => cmd::route::run(c).await,
        Command::Alert(c) => cmd::alert::alert(c).await,
        Command::Throttle(c) => cmd::alert::throttle(c).await,
        Command::Policy(c) => cmd::machine::policy(c).await,
        Command::Machine(c) => cmd::machine::machine(c).await,
        Command::Run(a) => cmd::run::run(a).await,
        Command::Ci(c) => cmd::ci::run(c),
        Command::Pins(a) => cmd::pins::run(a).await,
        Command::Check(a) => cmd::check::run(a).await,
        Command::Openapi => {
            let doc = keygate_server::admin::openapi();
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan(_) | Command::Hook(_) => Ok(ExitCode::from(2)),
    }
}
