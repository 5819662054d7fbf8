//! `keygate run [--secret ENV=NAME[@VERSION]]… [--all-of-policy] [--mount PATH=NAME]… --
//! CMD ARGS…`: logs in as a machine identity, fetches secrets and starts CMD with them in
//! its environment only, masking them in its output (`keygate-runner`).
//!
//! The identity comes from the environment, first match wins:
//! 1. `KEYGATE_TOKEN` holding a machine token (`kgm_…`; an admin token is refused);
//! 2. `KEYGATE_CLIENT_ID` + `KEYGATE_CLIENT_SECRET` (`keygate machine add`), exchanged with
//!    `client_credentials`;
//! 3. a CI job's OIDC ID token: `KEYGATE_ID_TOKEN`, or a file named by
//!    `KEYGATE_ID_TOKEN_FILE`, or GitHub Actions' `ACTIONS_ID_TOKEN_REQUEST_URL` /
//!    `ACTIONS_ID_TOKEN_REQUEST_TOKEN` (audience `KEYGATE_AUDIENCE`, default
//!    `KEYGATE_ADDR`), logged in at `/ci/v1/login`.
//!
//! These variables are removed from CMD's environment. Values never touch the disk, the
//! command line or keygate's own output; exit codes are CMD's (127: not found, 126: not
//! executable; 1: keygate itself failed before CMD started).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use keygate_runner::{Command, EnvVars, Exit, FifoHandle, SpawnError, Supervisor};
use keygate_server::admin::api::{ErrorBody, SecretValue};
use keygate_server::ci::endpoints::GrantedSecrets;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Variables that hold keygate's own credentials: never passed on to CMD.
const CREDENTIAL_VARS: &[&str] = &[
    "KEYGATE_TOKEN",
    "KEYGATE_CLIENT_SECRET",
    "KEYGATE_ID_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
];

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keygate run --secret STRIPE_KEY=deploy.stripe -- ./deploy.sh\n  \
    keygate run --all-of-policy --watch -- ./server\n  \
    keygate run --mount /run/app/key=signing-key -- tool --key-file /run/app/key\n\n\
    Identity (first found): KEYGATE_TOKEN (a machine token), KEYGATE_CLIENT_ID + KEYGATE_CLIENT_SECRET,\n\
    KEYGATE_ID_TOKEN / KEYGATE_ID_TOKEN_FILE, or GitHub Actions' OIDC (permissions: id-token: write).\n\
    Every value, and its base64, hex and URL-encoded forms, is printed as **** in CMD's output.\n\
    Exit code: CMD's own; 127 when CMD does not exist, 126 when it cannot be run, 1 when keygate failed.")]
pub struct RunArgs {
    /// Put secret NAME (at VERSION, or the current one) in CMD's environment as ENV
    #[arg(long = "secret", value_name = "ENV=NAME[@VERSION]")]
    secrets: Vec<String>,
    /// Every secret the identity's policy grants, as ENV named after it (deploy.stripe:
    /// DEPLOY_STRIPE); --secret entries take precedence
    #[arg(long)]
    all_of_policy: bool,
    /// Serve secret NAME at PATH through a named pipe that can be read once and is removed
    /// afterwards (and on exit); for tools that only read files
    #[arg(long = "mount", value_name = "PATH=NAME[@VERSION]")]
    mounts: Vec<String>,
    /// Restart CMD when a secret gets a new version
    #[arg(long)]
    watch: bool,
    /// How often --watch looks for new versions
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    watch_interval: Duration,
    /// Time between SIGTERM and SIGKILL when --watch stops CMD for a restart
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// One `--secret` or `--mount`: where the value goes, which secret, which version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    target: String,
    name: String,
    version: Option<i64>,
}

fn parse_spec(raw: &str, flag: &str, what: &str) -> anyhow::Result<Spec> {
    let (target, source) = raw
        .split_once('=')
        .ok_or_else(|| anyhow!("{flag} `{raw}`: expected {what}=NAME or {what}=NAME@VERSION"))?;
    let (name, version) = match source.rsplit_once('@') {
        Some((name, v)) => {
            let version = v.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                anyhow!("{flag} `{raw}`: the version after @ must be a number ≥ 1")
            })?;
            (name, Some(version))
        }
        None => (source, None),
    };
    keygate_vault::SecretName::parse(name).map_err(|e| anyhow!("{flag} `{raw}`: {e}"))?;
    if target.is_empty() {
        bail!("{flag} `{raw}`: {what} is empty");
    }
    Ok(Spec {
        target: target.to_owned(),
        name: name.to_owned(),
        version,
    })
}

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variable `--all-of-policy` uses for a secret: `deploy.stripe-key` → `DEPLOY_STRIPE_KEY`.
pub fn env_name_for(secret: &str) -> String {
    let mut out: String = secret
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// How this process proves who it is.
enum Credentials {
    Token(SecretString),
    Client {
        id: String,
        secret: SecretString,
    },
    IdToken(SecretString),
    IdTokenFile(PathBuf),
    GitHub {
        url: String,
        request_token: SecretString,
        audience: String,
    },
}

impl Credentials {
    fn from_env(base: &str) -> anyhow::Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(t) = var("KEYGATE_TOKEN") {
            let t = t.trim().to_owned();
            if t.starts_with("kgm_") {
                return Ok(Self::Token(SecretString::from(t)));
            }
            if t.starts_with("kga_") {
                bail!(
                    "KEYGATE_TOKEN holds an admin token; `keygate run` runs as a machine identity with only the secrets its policy grants: set KEYGATE_TOKEN to a machine token, KEYGATE_CLIENT_ID/KEYGATE_CLIENT_SECRET, or use the CI's OIDC token"
                );
            }
            bail!("KEYGATE_TOKEN is not a machine token (kgm_…)");
        }
        if let Some(id) = var("KEYGATE_CLIENT_ID") {
            let secret = var("KEYGATE_CLIENT_SECRET").ok_or_else(|| {
                anyhow!("KEYGATE_CLIENT_ID is set but KEYGATE_CLIENT_SECRET is not")
            })?;
            return Ok(Self::Client {
                id,
                secret: SecretString::from(secret),
            });
        }
        if let Some(t) = var("KEYGATE_ID_TOKEN") {
            return Ok(Self::IdToken(SecretString::from(t.trim().to_owned())));
        }
        if let Some(f) = var("KEYGATE_ID_TOKEN_FILE") {
            return Ok(Self::IdTokenFile(PathBuf::from(f)));
        }
        if let (Some(url), Some(token)) = (
            var("ACTIONS_ID_TOKEN_REQUEST_URL"),
            var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
        ) {
            return Ok(Self::GitHub {
                url,
                request_token: SecretString::from(token),
                audience: var("KEYGATE_AUDIENCE").unwrap_or_else(|| base.to_owned()),
            });
        }
        bail!(
            "no machine identity in the environment: set KEYGATE_TOKEN (a machine token), KEYGATE_CLIENT_ID and KEYGATE_CLIENT_SECRET, KEYGATE_ID_TOKEN or KEYGATE_ID_TOKEN_FILE, or run in GitHub Actions with `permissions: id-token: write`"
        )
    }
}

/// A logged-in machine identity.
struct Session {
    base: String,
    http: reqwest::Client,
    creds: Credentials,
    token: SecretString,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: SecretString,
}

#[derive(Deserialize)]
struct GitHubToken {
    value: SecretString,
}

async fn refusal(what: &str, resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body: Option<ErrorBody> = resp.json().await.ok();
    match body {
        Some(b) => anyhow!(
            "{what}: {} (HTTP {}, {})",
            b.message,
            status.as_u16(),
            b.error
        ),
        None => anyhow!("{what}: HTTP {}", status.as_u16()),
    }
}

impl Session {
    async fn login(base: &str) -> anyhow::Result<Self> {
        let creds = Credentials::from_env(base)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let mut s = Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            creds,
            token: SecretString::from(String::new()),
        };
        s.token = s.fresh_token().await?;
        Ok(s)
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow!("cannot reach keygate at {}: {}", self.base, e.without_url())
    }

    async fn fresh_token(&self) -> anyhow::Result<SecretString> {
        let id_token = match &self.creds {
            Credentials::Token(t) => return Ok(t.clone()),
            Credentials::Client { id, secret } => {
                let resp = self
                    .http
                    .post(format!("{}/oauth2/token", self.base))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", id.as_str()),
                        ("client_secret", secret.expose_secret()),
                    ])
                    .send()
                    .await
                    .map_err(|e| self.unreachable(e))?;
                if !resp.status().is_success() {
                    let status = resp.status().as_u16();
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    bail!(
                        "the machine login was refused (HTTP {status}, {})",
                        body["error"].as_str().unwrap_or("error")
                    );
                }
                let t: TokenAnswer = resp.json().await.context("reading the token answer")?;
                return Ok(t.access_token);
            }
            Credentials::IdToken(t) => t.clone(),
            Credentials::IdTokenFile(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).with_context(|| {
                    format!("KEYGATE_ID_TOKEN_FILE: cannot read {}", path.display())
                })?);
                SecretString::from(text.trim().to_owned())
            }
            Credentials::GitHub {
                url,
                request_token,
                audience,
            } => {
                let mut u = reqwest::Url::parse(url)
                    .context("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL")?;
                u.query_pairs_mut().append_pair("audience", audience);
                let resp = self
                    .http
                    .get(u)
                    .bearer_auth(request_token.expose_secret())
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!("fetching the GitHub Actions ID token: {}", e.without_url())
                    })?;
                if !resp.status().is_success() {
                    bail!(
                        "GitHub Actions refused the ID token request (HTTP {}); does the job have `permissions: id-token: write`?",
                        resp.status().as_u16()
                    );
                }
                let t: GitHubToken = resp
                    .json()
                    .await
                    .context("reading GitHub's ID token answer")?;
                t.value
            }
        };
        let resp = self
            .http
            .post(format!("{}/ci/v1/login", self.base))
            .json(&serde_json::json!({ "id_token": id_token.expose_secret() }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(refusal("the CI login was refused", resp).await);
        }
        let t: TokenAnswer = resp.json().await.context("reading the login answer")?;
        Ok(t.access_token)
    }

    /// `GET path` as the machine; on 401 (an expired token) logs in once more.
    async fn get(&mut self, path: &str, what: &str) -> anyhow::Result<reqwest::Response> {
        for attempt in 0..2 {
            let resp = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(self.token.expose_secret())
                .send()
                .await
                .map_err(|e| self.unreachable(e))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                && attempt == 0
                && !matches!(self.creds, Credentials::Token(_))
            {
                self.token = self.fresh_token().await?;
                continue;
            }
            if !resp.status().is_success() {
                return Err(refusal(what, resp).await);
            }
            return Ok(resp);
        }
        Err(anyhow!(
            "{what}: the machine token was refused after a fresh login"
        ))
    }

    async fn granted(&mut self) -> anyhow::Result<GrantedSecrets> {
        self.get("/ci/v1/secrets", "listing the policy's secrets")
            .await?
            .json()
            .await
            .context("reading the list of secrets")
    }

    async fn read(&mut self, name: &str, version: Option<i64>) -> anyhow::Result<SecretValue> {
        let path = match version {
            Some(v) => format!("/ci/v1/secrets/{name}?version={v}"),
            None => format!("/ci/v1/secrets/{name}"),
        };
        self.get(&path, &format!("reading secret `{name}`"))
            .await?
            .json()
            .await
            .with_context(|| format!("reading secret `{name}`"))
    }
}

/// What CMD gets: variables and mounted values, with the versions they came from.
struct Fetched {
    env: EnvVars,
    mounts: Vec<(PathBuf, Zeroizing<Vec<u8>>)>,
    /// Secret name → version read, for `--watch` (pinned versions are left out).
    versions: BTreeMap<String, i64>,
}

struct Plan {
    env: Vec<Spec>,
    mounts: Vec<Spec>,
    all_of_policy: bool,
}

impl Plan {
    fn from_args(args: &RunArgs) -> anyhow::Result<Self> {
        let mut env: Vec<Spec> = Vec::new();
        for raw in &args.secrets {
            let spec = parse_spec(raw, "--secret", "ENV")?;
            if !env_name_ok(&spec.target) {
                bail!(
                    "--secret `{raw}`: `{}` is not a variable name (letters, digits, _; not starting with a digit)",
                    spec.target
                );
            }
            if env.iter().any(|e| e.target == spec.target) {
                bail!("--secret: `{}` is given twice", spec.target);
            }
            env.push(spec);
        }
        let mut mounts: Vec<Spec> = Vec::new();
        for raw in &args.mounts {
            let spec = parse_spec(raw, "--mount", "PATH")?;
            if mounts.iter().any(|m| m.target == spec.target) {
                bail!("--mount: `{}` is given twice", spec.target);
            }
            mounts.push(spec);
        }
        if env.is_empty() && mounts.is_empty() && !args.all_of_policy {
            bail!("name what CMD needs: --secret ENV=NAME, --mount PATH=NAME or --all-of-policy");
        }
        Ok(Self {
            env,
            mounts,
            all_of_policy: args.all_of_policy,
        })
    }

    async fn fetch(&self, session: &mut Session) -> anyhow::Result<Fetched> {
        let mut env_specs = self.env.clone();
        if self.all_of_policy {
            let granted = session.granted().await?;
            if granted.secrets.is_empty() {
                eprintln!(
                    "keygate run: warning: policy `{}` grants no secret that exists",
                    granted.policy
                );
            }
            for s in granted.secrets {
                let target = env_name_for(&s.name);
                if !env_specs.iter().any(|e| e.target == target) {
                    env_specs.push(Spec {
                        target,
                        name: s.name,
                        version: None,
                    });
                }
            }
        }
        let mut fetched = Fetched {
            env: Vec::new(),
            mounts: Vec::new(),
            versions: BTreeMap::new(),
        };
        for spec in &env_specs {
            let v = session.read(&spec.name, spec.version).await?;
            if spec.version.is_none() {
                fetched.versions.insert(spec.name.clone(), v.version);
            }
            fetched.env.push((
                spec.target.clone(),
                Zeroizing::new(v.value.expose_secret().to_owned()),
            ));
        }
        for spec in &self.mounts {
            let v = session.read(&spec.name, spec.version).await?;
            if spec.version.is_none() {
                fetched.versions.insert(spec.name.clone(), v.version);
            }
            fetched.mounts.push((
                PathBuf::from(&spec.target),
                Zeroizing::new(v.value.expose_secret().as_bytes().to_vec()),
            ));
        }
        let values: Vec<&[u8]> = fetched
            .env
            .iter()
            .map(|(_, v)| v.as_bytes())
            .chain(fetched.mounts.iter().map(|(_, v)| v.as_slice()))
            .collect();
        for i in keygate_runner::Masker::too_short(values) {
            let name = env_specs
                .get(i)
                .map(|s| s.name.as_str())
                .or_else(|| {
                    self.mounts
                        .get(i.saturating_sub(env_specs.len()))
                        .map(|s| s.name.as_str())
                })
                .unwrap_or("?");
            eprintln!(
                "keygate run: warning: secret `{name}` is shorter than {} bytes and is not masked in the output",
                keygate_runner::MIN_MASK_LEN
            );
        }
        Ok(fetched)
    }

    /// The versions that would be read now, for `--watch`.
    async fn current_versions(
        &self,
        session: &mut Session,
    ) -> anyhow::Result<BTreeMap<String, i64>> {
        let granted = session.granted().await?;
        let mut now = BTreeMap::new();
        for s in granted.secrets {
            now.insert(s.name, s.current_version);
        }
        Ok(now)
    }
}

/// Serves each mounted value through its one-read pipe.
async fn mount_all(mounts: &[(PathBuf, Zeroizing<Vec<u8>>)]) -> anyhow::Result<Vec<FifoHandle>> {
    let mut handles = Vec::with_capacity(mounts.len());
    for (path, value) in mounts {
        let h = keygate_runner::fifo_once(path, value.clone())
            .await
            .with_context(|| format!("--mount {}", path.display()))?;
        handles.push(h);
    }
    Ok(handles)
}

fn exit_code(e: Exit) -> ExitCode {
    ExitCode::from(u8::try_from(e.code().clamp(0, 255)).unwrap_or(1))
}

fn spawn_error(e: SpawnError) -> anyhow::Result<ExitCode> {
    match e {
        SpawnError::NotFound { program } => {
            eprintln!("keygate run: {program}: command not found");
            Ok(ExitCode::from(127))
        }
        SpawnError::NotExecutable { program } => {
            eprintln!("keygate run: {program}: permission denied (not executable)");
            Ok(ExitCode::from(126))
        }
        other => Err(anyhow!(other)),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::from_args(&args)?;
    let base = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let mut session = Session::login(&base).await?;
    let fetched = plan.fetch(&mut session).await?;
    let mut mounts = mount_all(&fetched.mounts).await?;

    let Some((program, rest)) = args.command.split_first() else {
        bail!("no command given after --");
    };
    let mut cmd = Command::new(program.clone())
        .args(rest.iter().cloned())
        .grace_period(args.grace)
        .envs(fetched.env);
    for var in CREDENTIAL_VARS {
        cmd = cmd.env_remove(*var);
    }
    for (_, value) in &fetched.mounts {
        cmd = cmd.mask_value(value.clone());
    }
    let mut child = match Supervisor::start(cmd).await {
        Ok(c) => c,
        Err(e) => return spawn_error(e),
    };
    if !args.watch {
        let exit = child.wait().await.context("waiting for the command")?;
        mounts.drain(..).for_each(FifoHandle::remove);
        return Ok(exit_code(exit));
    }

    let mut versions = fetched.versions;
    let mut tick = tokio::time::interval(args.watch_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            exit = child.wait() => {
                let exit = exit.context("waiting for the command")?;
                mounts.drain(..).for_each(FifoHandle::remove);
                return Ok(exit_code(exit));
            }
            _ = tick.tick() => {}
        }
        let now = match plan.current_versions(&mut session).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("keygate run: watch: {e:#}; the command keeps running");
                continue;
            }
        };
        let vanished: Vec<&String> = versions.keys().filter(|n| !now.contains_key(*n)).collect();
        if !vanished.is_empty() {
            eprintln!(
                "keygate run: watch: secret `{}` is no longer readable; the command keeps running with the value it has",
                vanished
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("`, `")
            );
            continue;
        }
        let changed = versions
            .iter()
            .any(|(name, v)| now.get(name).is_some_and(|n| n != v))
            || (plan.all_of_policy && now.keys().any(|n| !versions.contains_key(n)));
        if !changed {
            continue;
        }
        let fresh = match plan.fetch(&mut session).await {
            Ok(f) => f,
            Err(e) => {
                eprintln!("keygate run: watch: {e:#}; the command keeps running");
                continue;
            }
        };
        eprintln!("keygate run: a secret has a new version; restarting the command");
        mounts.drain(..).for_each(FifoHandle::remove);
        mounts = mount_all(&fresh.mounts).await?;
        let masked = fresh.mounts.iter().map(|(_, v)| v.clone()).collect();
        versions = fresh.versions;
        if let Err(e) = child.restart_masking(fresh.env, masked).await {
            return spawn_error(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_clear_errors() {
        let s = parse_spec("KEY=deploy.stripe@3", "--secret", "ENV").unwrap();
        assert_eq!(
            s,
            Spec {
                target: "KEY".into(),
                name: "deploy.stripe".into(),
                version: Some(3)
            }
        );
        assert_eq!(parse_spec("K=a", "--secret", "ENV").unwrap().version, None);
        for bad in ["K", "=a", "K=", "K=a@0", "K=a@x", "K=bad name"] {
            assert!(parse_spec(bad, "--secret", "ENV").is_err(), "{bad}");
        }
        assert!(env_name_ok("STRIPE_KEY") && env_name_ok("_x1"));
        assert!(!env_name_ok("1X") && !env_name_ok("A-B") && !env_name_ok(""));
        assert_eq!(env_name_for("deploy.stripe-key"), "DEPLOY_STRIPE_KEY");
        assert_eq!(env_name_for("1pass"), "_1PASS");
    }
}
