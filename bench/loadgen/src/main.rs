//! `keygate-loadgen`: the load generator of `bench/proxy/run.sh`.
//!
//! HTTP/1 keep-alive connections (hyper), plain or over TLS (`https://` with `--ca`), driven either in a closed loop for the highest
//! throughput (`--connections N --duration S`) or in an open loop at a fixed request rate
//! (`--rate R`), where latency counts from each request's due time so that a slow server
//! cannot hide its queueing (no coordinated omission). With `--dpop-key` and
//! `--access-token` every request carries a fresh DPoP proof, signed ahead of the measured
//! window (see `proofs`). `--cpu-pid` samples the CPU time of the process under test at
//! the window's edges. `--new-connection-per-request` opens a new connection (with TLS, a
//! full handshake: no session resumption) for every request instead, so the rate is one
//! of handshakes and the CPU time one per handshake.
//!
//! ```text
//! keygate-loadgen token --token-url http://127.0.0.1:18183/oauth2/token \
//!     --client-id ID --client-secret SECRET --scope bench --dpop-key dpop.key
//! KEYGATE_LOADGEN_ACCESS_TOKEN=… keygate-loadgen run http://127.0.0.1:18183/proxy/bench/hello \
//!     --dpop-key dpop.key --connections 32 --duration 10s --cpu-pid 1234 --json
//! ```
//!
//! Exit status: 0 when the run finished (errors of individual requests are reported,
//! not fatal), 1 when it could not run, 2 for a usage error.

mod cpu;
mod load;
mod proofs;
mod schedule;
mod stats;
mod tls;
mod token;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Args, Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

use crate::load::{Conn, Mode, Target, Window, run_phase};
use crate::proofs::{MAX_DPOP_RUN, ProofPool, ProofSigner, load_key};
use crate::schedule::Schedule;
use crate::stats::{Stats, fmt_micros};

#[derive(Parser)]
#[command(
    name = "keygate-loadgen",
    version,
    about = "HTTP/1 load generator for keygate's proxy benchmark (closed loop, fixed rate, DPoP proofs, plain or TLS)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send load to one URL; report requests/s, latency percentiles and errors.
    Run(Box<RunArgs>),
    /// Get an access token with the client credentials grant (DPoP-bound with --dpop-key)
    /// and print it.
    Token(TokenArgs),
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[derive(Args)]
struct RunArgs {
    /// The URL: http://, or https:// with --ca.
    url: String,
    /// For https:// URLs: a PEM file of the CA certificate(s) to trust (only these).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Open a new connection for every request (TCP and, for https://, a full TLS
    /// handshake with no session resumption), send `Connection: close` and drop it after
    /// the answer: the rate is then one of new connections (handshakes) per second.
    #[arg(long)]
    new_connection_per_request: bool,
    /// The `htu` of the DPoP proofs (default: the URL). keygate compares `htu` with its
    /// configured public_url joined with the request path, whichever listener the request
    /// came in on; a request to another listener (e.g. keygate's separate HTTPS one) names
    /// the public URL here.
    #[arg(long, value_name = "URL")]
    htu: Option<String>,
    /// Keep-alive connections.
    #[arg(short, long, default_value_t = 32)]
    connections: usize,
    /// Length of the measured window (`10`, `10s`, `1500ms`).
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the window, not recorded.
    #[arg(short, long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop: this many requests per second over all connections. Without it, a
    /// closed loop at full speed.
    #[arg(short, long)]
    rate: Option<f64>,
    /// Worker threads of the generator. One (tokio's single-threaded scheduler) costs
    /// the least CPU per request and drives well over 100k req/s; more only help when the
    /// generator itself is the limit.
    #[arg(short, long, default_value_t = 1)]
    threads: usize,
    /// HTTP method (the body is empty).
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// An extra request header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Sent as `Authorization: Bearer …`, or `DPoP …` with --dpop-key.
    #[arg(long, env = "KEYGATE_LOADGEN_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,
    /// Sign a fresh DPoP proof (ES256) for every request with this key: a key file
    /// (created, mode 0600, if missing) or `generate` for a throwaway one.
    #[arg(long, value_name = "FILE|generate")]
    dpop_key: Option<String>,
    /// Proofs to sign ahead for the measured window. Default: open loop, exactly the
    /// requests due; closed loop, 1.5× what the warm-up rate predicts.
    #[arg(long)]
    proofs: Option<usize>,
    /// Proofs to sign ahead for the closed loop's warm-up (default: 15,000 per second of
    /// warm-up). If the warm-up uses them all, its rate undercounts and the window's
    /// proofs are sized with a larger margin.
    #[arg(long)]
    warmup_proofs: Option<usize>,
    /// Threads that sign proofs ahead (default: every core).
    #[arg(long)]
    sign_threads: Option<usize>,
    /// A process whose CPU time per request to report (Linux /proc); repeatable.
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// A name for this run, copied into the JSON.
    #[arg(long)]
    label: Option<String>,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TokenArgs {
    /// The token endpoint, e.g. http://127.0.0.1:8080/oauth2/token.
    #[arg(long)]
    token_url: String,
    /// A confidential client.
    #[arg(long)]
    client_id: String,
    /// The client's secret.
    #[arg(long, env = "KEYGATE_LOADGEN_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// Space-separated scopes.
    #[arg(long)]
    scope: Option<String>,
    /// Bind the token to this key file (created, mode 0600, if missing).
    #[arg(long, value_name = "FILE")]
    dpop_key: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Token(args) => token(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate-loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let token_url = Url::parse(&args.token_url).context("--token-url")?;
    let dpop_key = match args.dpop_key.as_deref() {
        Some("generate") => {
            return Err(anyhow!(
                "--dpop-key must be a file here: the run needs the same key"
            ));
        }
        Some(path) => Some(load_key(path)?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let access = rt.block_on(token::fetch(&token::TokenRequest {
        token_url: &token_url,
        client_id: &args.client_id,
        client_secret: &args.client_secret,
        scope: args.scope.as_deref(),
        dpop_key,
    }))?;
    println!("{access}");
    Ok(())
}

fn parse_header(text: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| anyhow!("header {text:?} is not `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("header name {:?}", name.trim()))?;
    let value = HeaderValue::from_str(value.trim()).context("header value")?;
    Ok((name, value))
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.connections == 0 {
        return Err(anyhow!("--connections must be at least 1"));
    }
    if args.duration.is_zero() {
        return Err(anyhow!("--duration must be positive"));
    }
    // One thread: tokio's single-threaded scheduler, the cheapest per request.
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run_async(args))
}

/// A pool of proofs signed on blocking threads (the workers stay free).
async fn presign(
    signer: &Arc<ProofSigner>,
    count: usize,
    threads: usize,
    quiet: bool,
) -> anyhow::Result<Arc<ProofPool>> {
    let s = signer.clone();
    let pool = tokio::task::spawn_blocking(move || ProofPool::presign(s, count, threads))
        .await
        .context("signing thread")??;
    if !quiet {
        eprintln!(
            "signed {} DPoP proofs ahead in {:.2} s",
            pool.presigned(),
            pool.signing_time().as_secs_f64()
        );
    }
    Ok(Arc::new(pool))
}

/// CPU ticks spent in the measured window: by the processes under test (`None` without
/// `--cpu-pid`), by the generator itself, and by the whole machine (busy and idle, summed
/// over its cores).
#[derive(Clone, Copy, Debug)]
struct CpuTicks {
    target: Option<u64>,
    generator: u64,
    machine_busy: u64,
    machine_idle: u64,
}

/// Samples the CPU ticks of `pids` and of this process at `from` and at `to`.
fn sample_cpu(
    pids: Vec<u32>,
    from: Instant,
    to: Instant,
) -> tokio::task::JoinHandle<anyhow::Result<CpuTicks>> {
    tokio::spawn(async move {
        let me = [std::process::id()];
        tokio::time::sleep_until(from).await;
        let before = (!pids.is_empty()).then(|| cpu::ticks(&pids)).transpose()?;
        let me_before = cpu::ticks(&me)?;
        let machine_before = cpu::machine()?;
        tokio::time::sleep_until(to).await;
        let after = (!pids.is_empty()).then(|| cpu::ticks(&pids)).transpose()?;
        let me_after = cpu::ticks(&me)?;
        let machine_after = cpu::machine()?;
        Ok(CpuTicks {
            target: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
            generator: me_after.saturating_sub(me_before),
            machine_busy: machine_after.0.saturating_sub(machine_before.0),
            machine_idle: machine_after.1.saturating_sub(machine_before.1),
        })
    })
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    let url = Url::parse(&args.url).context("URL")?;
    let method = Method::from_bytes(args.method.as_bytes()).context("--method")?;
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (name, value) = parse_header(h)?;
        headers.append(name, value);
    }
    let signer = match (&args.dpop_key, &args.access_token) {
        (Some(key), Some(token)) => {
            headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("DPoP {token}")).context("access token")?,
            );
            let key = load_key(key)?;
            let htu = match &args.htu {
                Some(h) => Url::parse(h).context("--htu")?,
                None => url.clone(),
            };
            Some(Arc::new(ProofSigner::new(
                key,
                method.as_str(),
                htu,
                token.clone(),
            )))
        }
        (Some(_), None) => return Err(anyhow!("--dpop-key needs --access-token")),
        (None, _) if args.htu.is_some() => return Err(anyhow!("--htu needs --dpop-key")),
        (None, Some(token)) => {
            headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).context("access token")?,
            );
            None
        }
        (None, None) => None,
    };
    if signer.is_some() && args.warmup + args.duration > MAX_DPOP_RUN {
        return Err(anyhow!(
            "with DPoP, warm-up + duration must stay within {} s: proofs are signed ahead and the server accepts them for 60 s",
            MAX_DPOP_RUN.as_secs()
        ));
    }
    let sign_threads = args.sign_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let target = Arc::new(Target::new(
        &url,
        method,
        headers,
        args.ca.as_deref(),
        args.new_connection_per_request,
    )?);
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(Conn::connect(&target).await?);
    }

    let (stats, cpu_ticks, pool, rate) = match args.rate {
        Some(rate) => {
            let schedule = Schedule::new(rate, args.connections)
                .ok_or_else(|| anyhow!("--rate must be a positive number"))?;
            let horizon = args.warmup + args.duration;
            let due: u64 = (0..args.connections)
                .map(|c| schedule.due_before(c, horizon))
                .sum();
            let pool = match &signer {
                Some(s) => {
                    let n = args.proofs.unwrap_or(usize::try_from(due)?);
                    Some(presign(s, n, sign_threads, args.json).await?)
                }
                None => None,
            };
            // A short lead so every connection task is waiting before the first is due.
            let start = Instant::now() + Duration::from_millis(20);
            let window = Window {
                start,
                record_from: start + args.warmup,
                end: start + horizon,
                timeout: args.timeout,
            };
            let cpu = sample_cpu(args.cpu_pids.clone(), window.record_from, window.end);
            let result = run_phase(
                conns,
                target.clone(),
                pool.clone(),
                window,
                Mode::Open(schedule),
            )
            .await?;
            let cpu = cpu.await.context("CPU sampler")??;
            (result.stats, cpu, pool, Some(rate))
        }
        None => {
            let mut warm_rate = None;
            let mut warm_pool_ran_dry = false;
            if !args.warmup.is_zero() {
                let pool = match &signer {
                    Some(s) => {
                        let n = args
                            .warmup_proofs
                            .unwrap_or(((15_000.0 * args.warmup.as_secs_f64()) as usize).max(1000));
                        Some(presign(s, n, sign_threads, args.json).await?)
                    }
                    None => None,
                };
                let start = Instant::now();
                let window = Window {
                    start,
                    record_from: start + args.warmup,
                    end: start + args.warmup,
                    timeout: args.timeout,
                };
                let warm =
                    run_phase(conns, target.clone(), pool.clone(), window, Mode::Closed).await?;
                conns = warm.conns;
                warm_pool_ran_dry = pool.is_some_and(|p| p.signed_inline() > 0);
                warm_rate = Some(warm.completed as f64 / args.warmup.as_secs_f64());
            }
            let pool = match &signer {
                Some(s) => {
                    // Without a warm-up there is nothing to go by: assume 20k/s.
                    let predicted = warm_rate.unwrap_or(20_000.0) * args.duration.as_secs_f64();
                    let margin = if warm_pool_ran_dry { 3.0 } else { 1.5 };
                    let n = args
                        .proofs
                        .unwrap_or((predicted * margin) as usize + 2 * args.connections);
                    Some(presign(s, n, sign_threads, args.json).await?)
                }
                None => None,
            };
            let start = Instant::now();
            let window = Window {
                start,
                record_from: start,
                end: start + args.duration,
                timeout: args.timeout,
            };
            let cpu = sample_cpu(args.cpu_pids.clone(), window.record_from, window.end);
            let result =
                run_phase(conns, target.clone(), pool.clone(), window, Mode::Closed).await?;
            let cpu = cpu.await.context("CPU sampler")??;
            (result.stats, cpu, pool, None)
        }
    };

    let report = Report {
        args: &args,
        stats: &stats,
        cpu_ticks,
        pool: pool.as_deref(),
        rate,
        tls: target.tls_negotiated(),
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

struct Report<'a> {
    args: &'a RunArgs,
    stats: &'a Stats,
    cpu_ticks: CpuTicks,
    pool: Option<&'a ProofPool>,
    rate: Option<f64>,
    /// What the TLS handshake agreed on (HTTPS).
    tls: Option<&'a tls::Negotiated>,
}

impl Report<'_> {
    fn rps(&self) -> f64 {
        self.stats.ok as f64 / self.args.duration.as_secs_f64()
    }

    fn requests(&self) -> u64 {
        self.stats.ok + self.stats.error_count()
    }

    fn cpu_us_per_request(&self) -> Option<f64> {
        self.per_request(self.cpu_ticks.target?)
    }

    /// The generator's own CPU time per request (it includes the generator's side of
    /// every TLS handshake).
    fn generator_cpu_us_per_request(&self) -> Option<f64> {
        self.per_request(self.cpu_ticks.generator)
    }

    /// The whole machine's busy CPU time per request, all cores: the target's, the
    /// generator's, the upstream's and the kernel's work outside them.
    fn machine_cpu_us_per_request(&self) -> Option<f64> {
        self.per_request(self.cpu_ticks.machine_busy)
    }

    /// The share of the machine's CPU time that was idle during the window.
    fn machine_idle_share(&self) -> Option<f64> {
        let total = self.cpu_ticks.machine_busy + self.cpu_ticks.machine_idle;
        (total > 0).then(|| self.cpu_ticks.machine_idle as f64 / total as f64)
    }

    fn per_request(&self, ticks: u64) -> Option<f64> {
        let n = self.requests();
        (n > 0 && self.args.clk_tck > 0)
            .then(|| ticks as f64 * 1e6 / self.args.clk_tck as f64 / n as f64)
    }

    /// The oldest a pre-signed proof was when sent.
    fn proof_age(&self) -> Option<f64> {
        self.pool.map(|p| p.max_age().as_secs_f64())
    }

    fn json(&self) -> Value {
        let s = self.stats;
        let lag = |q: f64| (!s.send_lag.is_empty()).then(|| s.send_lag.value_at_quantile(q));
        json!({
            "label": self.args.label,
            "url": self.args.url,
            "mode": if self.rate.is_some() { "open" } else { "closed" },
            "rate": self.rate,
            "connections": self.args.connections,
            "new_connection_per_request": self.args.new_connection_per_request,
            "tls": self.tls.map(|t| json!({
                "version": t.version,
                "cipher_suite": t.cipher_suite,
                "kx_group": t.kx_group,
            })),
            "threads": self.args.threads,
            "duration_s": self.args.duration.as_secs_f64(),
            "warmup_s": self.args.warmup.as_secs_f64(),
            "requests": self.requests(),
            "ok": s.ok,
            "errors": s.errors,
            "rps": self.rps(),
            "p50_us": s.latency_at(0.5),
            "p90_us": s.latency_at(0.9),
            "p99_us": s.latency_at(0.99),
            "p999_us": s.latency_at(0.999),
            "max_us": s.latency.max(),
            "mean_us": s.latency.mean(),
            "send_lag_p50_us": lag(0.5),
            "send_lag_p99_us": lag(0.99),
            "cpu_pids": self.args.cpu_pids,
            "cpu_us_per_req": self.cpu_us_per_request(),
            "generator_cpu_us_per_req": self.generator_cpu_us_per_request(),
            "machine_cpu_us_per_req": self.machine_cpu_us_per_request(),
            "machine_idle_share": self.machine_idle_share(),
            "dpop": self.pool.map(|p| json!({
                "presigned": p.presigned(),
                "used_presigned": p.used(),
                "signed_inline": p.signed_inline(),
                "signing_s": p.signing_time().as_secs_f64(),
                "max_proof_age_s": self.proof_age(),
            })),
        })
    }

    fn text(&self) -> String {
        use std::fmt::Write as _;
        let s = self.stats;
        let mut out = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {r:.0} req/s"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(out, "target    {}", self.args.url);
        let _ = writeln!(
            out,
            "load      {mode}, {} connections, {} generator thread(s), {:.1} s (+{:.1} s warm-up)",
            self.args.connections,
            self.args.threads,
            self.args.duration.as_secs_f64(),
            self.args.warmup.as_secs_f64()
        );
        let errors = if s.errors.is_empty() {
            "none".to_owned()
        } else {
            s.errors
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "requests  {} ({} ok), errors: {errors}",
            self.requests(),
            s.ok
        );
        let _ = writeln!(out, "rate      {:.1} req/s (2xx)", self.rps());
        if self.args.new_connection_per_request {
            let _ = writeln!(
                out,
                "          one new connection per request: {:.1} connections/s{}",
                self.rps(),
                if self.tls.is_some() {
                    " (full TLS handshakes)"
                } else {
                    ""
                }
            );
        }
        if let Some(t) = self.tls {
            let _ = writeln!(
                out,
                "tls       {}, {}, {}",
                t.version, t.cipher_suite, t.kx_group
            );
        }
        let _ = writeln!(
            out,
            "latency   p50 {}  p90 {}  p99 {}  max {}",
            fmt_micros(s.latency_at(0.5)),
            fmt_micros(s.latency_at(0.9)),
            fmt_micros(s.latency_at(0.99)),
            fmt_micros(s.latency.max())
        );
        if self.rate.is_some() && !s.send_lag.is_empty() {
            let _ = writeln!(
                out,
                "send lag  p50 {}  p99 {} (generator timer, not charged to the server)",
                fmt_micros(s.send_lag.value_at_quantile(0.5)),
                fmt_micros(s.send_lag.value_at_quantile(0.99))
            );
        }
        if let Some(cpu) = self.cpu_us_per_request() {
            let _ = writeln!(
                out,
                "cpu       {cpu:.1} µs/request (pids {:?})",
                self.args.cpu_pids
            );
        }
        if let Some(cpu) = self.generator_cpu_us_per_request() {
            let _ = writeln!(out, "generator {cpu:.1} µs/request of its own CPU");
        }
        if let Some(p) = self.pool {
            let _ = writeln!(
                out,
                "dpop      {} proofs signed ahead ({:.2} s), {} used, {} signed during the window; oldest proof {:.1} s old when sent",
                p.presigned(),
                p.signing_time().as_secs_f64(),
                p.used(),
                p.signed_inline(),
                self.proof_age().unwrap_or(0.0)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_bare_seconds_or_units() {
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn headers_parse_as_name_colon_value() {
        let (n, v) = parse_header("X-Test:  a b ").unwrap();
        assert_eq!(n.as_str(), "x-test");
        assert_eq!(v, "a b");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
