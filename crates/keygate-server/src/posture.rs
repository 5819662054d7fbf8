//! The posture report: a deployment graded against the practices keygate is built on,
//! one item per practice with pass / warn / fail and the evidence. `keygate check` prints
//! it (text, JSON, SARIF) with facts from the configuration file and the admin API; the
//! console shows it at `/console/posture` with facts from the running server itself.
//!
//! The grading ([`grade`]) is a pure function of [`Facts`], so each rule is tested without
//! a server; an item whose facts could not be gathered is a warning that says why, never
//! a pass.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keygate_proxy::route::RawRoute;
use serde::Serialize;

use crate::AppState;
use crate::admin::api::AuditVerification;
use crate::config::{Config, MasterKeySource, is_loopback};
use crate::oauth::DPOP_OPTIONAL;

/// The longest access-token lifetime that passes (the checklist: minutes, not hours).
const MAX_ACCESS_TTL_SECS: i64 = 15 * 60;

/// An item's grade, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Pass,
    Warn,
    Fail,
}

impl Grade {
    pub fn label(self) -> &'static str {
        match self {
            Grade::Pass => "PASS",
            Grade::Warn => "WARN",
            Grade::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Stable, dotted (`tokens.access_ttl`): what scripts and SARIF rules key on.
    pub id: &'static str,
    pub title: &'static str,
    pub grade: Grade,
    /// What was seen, never a secret.
    pub evidence: String,
}

/// The whole report: `version` changes only when the JSON's shape does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub version: u32,
    pub config: String,
    /// The admin API asked, or `null` when none was.
    pub server: Option<String>,
    pub summary: Summary,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

/// Everything [`grade`] looks at.
#[derive(Debug, Clone)]
pub struct Facts {
    pub access_ttl_secs: i64,
    pub dpop_required: bool,
    pub refresh_idle_secs: i64,
    pub refresh_absolute_secs: i64,
    pub monitor_enabled: bool,
    pub monitor_rules: usize,
    /// Webhooks that receive `alert` events.
    pub alert_webhooks: usize,
    pub listen: SocketAddr,
    pub public_url: String,
    pub tls: Option<TlsFacts>,
    pub log_level: String,
    pub master_key: MasterKeyFacts,
    pub checkpoint: CheckpointFacts,
    /// Routes from the configuration file (used when the server cannot be asked).
    pub config_routes: Vec<RouteFacts>,
    /// What the running server said, or why it could not be asked.
    pub live: Result<LiveFacts, String>,
    /// With `--repo`: the repository, and its keygate hook (or why it could not be read).
    pub repo: Option<(PathBuf, Result<Option<PathBuf>, String>)>,
}

#[derive(Debug, Clone)]
pub struct TlsFacts {
    /// Backup pins of `[tls.pins]`, when pins are published.
    pub pin_backups: Option<usize>,
}

#[derive(Debug, Clone)]
pub enum MasterKeyFacts {
    /// No `[master_key]`: the server starts sealed.
    None,
    Env(String),
    File {
        path: PathBuf,
        /// What `serve` checks too ([`keygate_vault::check_key_file_permissions`]):
        /// `Err(reason)` when others may read the file, or it cannot be read.
        private: Result<(), String>,
        inside_data_dir: bool,
    },
    /// In a PKCS#11 token: described, never opened by the report.
    Pkcs11(String),
}

#[derive(Debug, Clone)]
pub struct CheckpointFacts {
    pub path: PathBuf,
    pub interval: Duration,
    /// How long ago the file was last written, `None` when there is none.
    pub age: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFacts {
    pub name: String,
    pub scopes: usize,
    /// Whether a rate or a quota bounds each caller (`limits` with only `per` does not).
    pub limited: bool,
}

impl RouteFacts {
    pub fn of(name: &str, route: &RawRoute) -> Self {
        Self {
            name: name.to_owned(),
            scopes: route.scopes.len(),
            limited: route
                .limits
                .as_ref()
                .is_some_and(|l| l.rate.is_some() || l.quota.is_some()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LiveFacts {
    pub routes: Vec<RouteFacts>,
    /// Clients whose own policy lets them use Bearer tokens (`--dpop optional`).
    pub bearer_clients: Vec<String>,
    /// Secrets that exist (not deleted).
    pub secrets: Vec<String>,
    pub schedules: Vec<ScheduleFacts>,
    pub audit: AuditVerification,
}

#[derive(Debug, Clone)]
pub struct ScheduleFacts {
    pub secret: String,
    pub rotate_every: String,
    pub overdue: bool,
    pub last_error: Option<String>,
}

impl Facts {
    /// The facts of `config` (and the files it names), with what the server said and,
    /// for `keygate check --repo`, a repository's hook as the caller read it.
    pub fn gather(
        config: &Config,
        live: Result<LiveFacts, String>,
        repo: Option<(PathBuf, Result<Option<PathBuf>, String>)>,
    ) -> Self {
        let t = &config.tokens;
        let master_key = match &config.master_key {
            None => MasterKeyFacts::None,
            Some(MasterKeySource::Env(var)) => MasterKeyFacts::Env(var.clone()),
            Some(MasterKeySource::Pkcs11(c)) => MasterKeyFacts::Pkcs11(format!(
                "key {:?} in {} ({})",
                c.key_label,
                c.token,
                c.module.display()
            )),
            Some(MasterKeySource::File(path)) => MasterKeyFacts::File {
                path: path.clone(),
                private: keygate_vault::check_key_file_permissions(path),
                inside_data_dir: inside(path, &config.data_dir),
            },
        };
        let age = std::fs::metadata(&config.checkpoint_file)
            .and_then(|m| m.modified())
            .ok()
            .map(|at| SystemTime::now().duration_since(at).unwrap_or_default());
        Self {
            access_ttl_secs: t.access_ttl_secs,
            dpop_required: t.dpop_required,
            refresh_idle_secs: t.refresh_idle_secs,
            refresh_absolute_secs: t.refresh_absolute_secs,
            monitor_enabled: config.monitor.enabled,
            monitor_rules: config.monitor.rules.len(),
            alert_webhooks: config.webhooks.iter().filter(|w| w.wants("alert")).count(),
            listen: config.listen,
            public_url: config.public_url.to_string(),
            tls: config.tls.as_ref().map(|tls| TlsFacts {
                pin_backups: tls.pins.as_ref().map(|p| p.backup.len()),
            }),
            log_level: config.log_level.clone(),
            master_key,
            checkpoint: CheckpointFacts {
                path: config.checkpoint_file.clone(),
                interval: config.checkpoint_interval,
                age,
            },
            config_routes: config
                .routes_raw
                .iter()
                .map(|(name, r)| RouteFacts::of(name, r))
                .collect(),
            live,
            repo,
        }
    }
}

/// What the running server knows about itself, for the console's report: the same facts
/// `keygate check` asks the admin API for.
pub async fn live_facts(s: &AppState) -> Result<LiveFacts, String> {
    let why = |e: &dyn std::fmt::Display| format!("not checked: {e}");
    let Some(px) = s.proxy.as_deref() else {
        return Err("not checked: the proxy is unavailable while the vault is sealed".into());
    };
    let routes = px
        .routes()
        .iter()
        .filter_map(|r| {
            px.raw(r.name().as_str())
                .map(|(raw, _)| RouteFacts::of(r.name().as_str(), &raw))
        })
        .collect();
    let clients = s.store.list_clients().await.map_err(|e| why(&e))?;
    let secrets = s.vault.list().await.map_err(|e| why(&e))?;
    let schedules = s.store.schedules().await.map_err(|e| why(&e))?;
    let key = s.vault.keyring().map(|k| &k.checkpoint);
    let v = crate::audit_ops::verify(s.store.as_ref(), &s.config.checkpoint_file, key).await;
    Ok(LiveFacts {
        routes,
        bearer_clients: clients
            .into_iter()
            .filter(|c| c.dpop.as_deref() == Some(DPOP_OPTIONAL))
            .map(|c| c.id)
            .collect(),
        secrets: secrets
            .into_iter()
            .filter(|m| m.deleted_ms.is_none())
            .map(|m| m.name)
            .collect(),
        schedules: schedules
            .iter()
            .map(|sch| {
                let api = crate::admin::api::Schedule::from(sch);
                ScheduleFacts {
                    secret: api.secret,
                    rotate_every: api.rotate_every,
                    overdue: api.overdue,
                    last_error: api.last_error,
                }
            })
            .collect(),
        audit: crate::audit_ops::verification(&v),
    })
}

/// Whether `path` lies inside `dir` (both made absolute where they exist).
fn inside(path: &Path, dir: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(path).starts_with(canon(dir))
}

/// `90d`, `12h`, `5m` or `45s`: the largest unit that divides `secs`, as in the config.
fn human(secs: i64) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn ago(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

fn names(list: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = list
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOWN {
        text.push_str(&format!(" and {} more", list.len() - SHOWN));
    }
    text
}

/// One item's verdict: its grade and the evidence for it.
type Verdict = (Grade, String);

/// Grades `facts`: one item per practice, in a fixed order.
pub fn grade(f: &Facts) -> Vec<Item> {
    let (routes, source) = match &f.live {
        Ok(l) => (&l.routes, "in force on the server"),
        Err(_) => (&f.config_routes, "in the configuration file"),
    };
    let mut items = vec![
        item(
            "routes.token",
            "no route forwards without a token",
            routes_token(routes, source),
        ),
        item(
            "routes.limits",
            "every route has per-user limits",
            routes_limits(routes, source),
        ),
        item(
            "tokens.access_ttl",
            "access tokens live 15 minutes or less",
            access_ttl(f),
        ),
        item(
            "tokens.dpop",
            "DPoP is required for public clients",
            dpop(f),
        ),
        item(
            "clients.dpop",
            "no client is exempt from DPoP",
            clients_dpop(&f.live),
        ),
        item(
            "tokens.refresh_rotation",
            "refresh tokens rotate and reuse ends the session",
            refresh_rotation(f),
        ),
        item(
            "secrets.rotation",
            "every secret is rotated on a schedule",
            secrets_rotation(&f.live),
        ),
        item(
            "monitor.rules",
            "the monitor runs with rules",
            monitor_rules(f),
        ),
        item("monitor.alert_sink", "alerts reach someone", alert_sink(f)),
        item(
            "tls.listener",
            "TLS on every listener that is not loopback",
            tls_listener(f),
        ),
        item("tls.hsts", "HSTS is sent", hsts(f)),
        item(
            "tls.pins",
            "certificate pins are published with a backup",
            pins(f),
        ),
        item("log.level", "logs at info or above, redacted", log_level(f)),
        item(
            "audit.chain",
            "the audit chain verifies",
            audit_chain(&f.live),
        ),
        item(
            "audit.checkpoints",
            "audit checkpoints are recent",
            checkpoints(&f.checkpoint),
        ),
        item(
            "master_key",
            "the master key is private and apart from the data",
            master_key(&f.master_key),
        ),
    ];
    if let Some((dir, hook)) = &f.repo {
        items.push(item(
            "scan.hook",
            "the secret scanner runs before each commit",
            scan_hook(dir, hook),
        ));
    }
    items
}

fn item(id: &'static str, title: &'static str, (grade, evidence): Verdict) -> Item {
    Item {
        id,
        title,
        grade,
        evidence,
    }
}

/// The proxy verifies a token before it forwards anything; a route with no scope takes
/// any token of any client.
fn routes_token(routes: &[RouteFacts], source: &str) -> Verdict {
    let open: Vec<String> = routes
        .iter()
        .filter(|r| r.scopes == 0)
        .map(|r| r.name.clone())
        .collect();
    if routes.is_empty() {
        (Grade::Pass, format!("no routes {source}"))
    } else if open.is_empty() {
        (
            Grade::Pass,
            format!(
                "{} route(s) {source}; each needs an access token with one of its scopes",
                routes.len()
            ),
        )
    } else {
        (
            Grade::Warn,
            format!(
                "route(s) {} need a token but no scope: any client's token passes",
                names(&open)
            ),
        )
    }
}

/// A route with neither a rate nor a quota lets one user drain the key.
fn routes_limits(routes: &[RouteFacts], source: &str) -> Verdict {
    let unlimited: Vec<String> = routes
        .iter()
        .filter(|r| !r.limited)
        .map(|r| r.name.clone())
        .collect();
    if routes.is_empty() {
        (Grade::Pass, format!("no routes {source}"))
    } else if unlimited.is_empty() {
        (
            Grade::Pass,
            format!("{} route(s) {source}, each with limits", routes.len()),
        )
    } else {
        (
            Grade::Warn,
            format!("no rate or quota on {}", names(&unlimited)),
        )
    }
}

fn access_ttl(f: &Facts) -> Verdict {
    let ttl = human(f.access_ttl_secs);
    if f.access_ttl_secs <= MAX_ACCESS_TTL_SECS {
        (Grade::Pass, format!("tokens.access_ttl = {ttl}"))
    } else {
        (
            Grade::Fail,
            format!("tokens.access_ttl = {ttl}: a stolen token stays good that long"),
        )
    }
}

fn dpop(f: &Facts) -> Verdict {
    if f.dpop_required {
        (Grade::Pass, "tokens.dpop = \"required\"".into())
    } else {
        (
            Grade::Fail,
            "tokens.dpop = \"optional\": public clients get Bearer tokens a copy of which works anywhere"
                .into(),
        )
    }
}

fn clients_dpop(live: &Result<LiveFacts, String>) -> Verdict {
    match live {
        Err(why) => (Grade::Warn, why.clone()),
        Ok(l) if l.bearer_clients.is_empty() => (
            Grade::Pass,
            "no client registered with --dpop optional".into(),
        ),
        Ok(l) => (
            Grade::Warn,
            format!(
                "{} on --dpop optional (Bearer tokens of at most 2 minutes); end the migration with `keygate client dpop ID required`",
                names(&l.bearer_clients)
            ),
        ),
    }
}

/// Always on in keygate; the item says so, with the session lifetimes in force.
fn refresh_rotation(f: &Facts) -> Verdict {
    (
        Grade::Pass,
        format!(
            "always on: each refresh token works once, a reused one revokes its session; sessions end after {} idle, {} in all",
            human(f.refresh_idle_secs),
            human(f.refresh_absolute_secs)
        ),
    )
}

fn secrets_rotation(live: &Result<LiveFacts, String>) -> Verdict {
    let l = match live {
        Err(why) => return (Grade::Warn, why.clone()),
        Ok(l) => l,
    };
    let overdue: Vec<String> = l
        .schedules
        .iter()
        .filter(|s| s.overdue)
        .map(|s| match &s.last_error {
            Some(e) => format!("{} (last error: {e})", s.secret),
            None => s.secret.clone(),
        })
        .collect();
    let unscheduled: Vec<String> = l
        .secrets
        .iter()
        .filter(|name| !l.schedules.iter().any(|s| &s.secret == *name))
        .cloned()
        .collect();
    if !overdue.is_empty() {
        (Grade::Fail, format!("overdue: {}", names(&overdue)))
    } else if !unscheduled.is_empty() {
        (
            Grade::Warn,
            format!(
                "no rotate_every for {} (`keygate secret schedule NAME --every 30d`)",
                names(&unscheduled)
            ),
        )
    } else if l.schedules.is_empty() {
        (Grade::Pass, "no secrets stored".into())
    } else {
        let every: Vec<String> = l
            .schedules
            .iter()
            .map(|s| format!("{} every {}", s.secret, s.rotate_every))
            .collect();
        (Grade::Pass, format!("on schedule: {}", names(&every)))
    }
}

fn monitor_rules(f: &Facts) -> Verdict {
    match (f.monitor_enabled, f.monitor_rules) {
        (true, n) if n > 0 => (Grade::Pass, format!("{n} rule(s)")),
        (true, _) => (
            Grade::Fail,
            "[monitor] runs with no rules: abuse is not acted on".into(),
        ),
        (false, _) => (
            Grade::Fail,
            "[monitor] enabled = false: abuse is not acted on".into(),
        ),
    }
}

fn alert_sink(f: &Facts) -> Verdict {
    if f.alert_webhooks > 0 {
        (
            Grade::Pass,
            format!("{} webhook(s) take alert events", f.alert_webhooks),
        )
    } else {
        (
            Grade::Warn,
            "no webhook takes alert events: alerts wait in `keygate alert list`".into(),
        )
    }
}

fn tls_listener(f: &Facts) -> Verdict {
    let public = url::Url::parse(&f.public_url).ok();
    if f.tls.is_some() {
        (
            Grade::Pass,
            format!("[tls] terminates TLS; public_url {}", f.public_url),
        )
    } else if !f.listen.ip().is_loopback() {
        (
            Grade::Fail,
            format!("plain HTTP on {} without [tls]", f.listen),
        )
    } else if public.as_ref().is_some_and(|u| u.scheme() == "https") {
        (
            Grade::Pass,
            format!(
                "plain HTTP on loopback only ({}), behind a TLS proxy serving {}",
                f.listen, f.public_url
            ),
        )
    } else if public.as_ref().is_some_and(is_loopback) {
        (
            Grade::Pass,
            format!(
                "loopback only ({}), for development: apps on other machines cannot reach it",
                f.listen
            ),
        )
    } else {
        (
            Grade::Fail,
            format!(
                "public_url {} is plain HTTP: apps send tokens in clear",
                f.public_url
            ),
        )
    }
}

fn hsts(f: &Facts) -> Verdict {
    if f.tls.is_some() {
        (
            Grade::Pass,
            "keygate sends Strict-Transport-Security on its TLS listener".into(),
        )
    } else {
        (
            Grade::Warn,
            "no [tls]: the TLS proxy in front must send Strict-Transport-Security".into(),
        )
    }
}

fn pins(f: &Facts) -> Verdict {
    match f.tls.as_ref().and_then(|t| t.pin_backups) {
        Some(n) if n > 0 => (
            Grade::Pass,
            format!("/.well-known/keygate-pins with {n} backup pin(s)"),
        ),
        Some(_) => (
            Grade::Fail,
            "[tls.pins] has no backup: a key change would lock every pinned app out".into(),
        ),
        None => (
            Grade::Warn,
            "no [tls.pins]: apps cannot update their pins over the air".into(),
        ),
    }
}

fn log_level(f: &Facts) -> Verdict {
    let level = f.log_level.to_ascii_lowercase();
    if level.contains("debug") || level.contains("trace") {
        (
            Grade::Warn,
            format!(
                "log.level = \"{}\": verbose logs (secrets are still redacted)",
                f.log_level
            ),
        )
    } else {
        (
            Grade::Pass,
            format!(
                "log.level = \"{}\"; the redacting writer is always on",
                f.log_level
            ),
        )
    }
}

fn audit_chain(live: &Result<LiveFacts, String>) -> Verdict {
    match live {
        Err(why) => (Grade::Warn, why.clone()),
        Ok(l) if l.audit.ok => (
            Grade::Pass,
            format!(
                "{} entries, {} checkpoint(s) checked",
                l.audit.entries.unwrap_or(0),
                l.audit.checkpoints_checked.unwrap_or(0)
            ),
        ),
        Ok(l) => (
            Grade::Fail,
            format!(
                "broken: {}",
                l.audit
                    .error
                    .as_deref()
                    .unwrap_or("see `keygate audit verify`")
            ),
        ),
    }
}

fn checkpoints(c: &CheckpointFacts) -> Verdict {
    let stale_after = c.interval * 2 + Duration::from_secs(60);
    let every = humantime::format_duration(c.interval);
    match c.age {
        Some(age) if age <= stale_after => (
            Grade::Pass,
            format!(
                "{} written {} ago (every {every})",
                c.path.display(),
                ago(age)
            ),
        ),
        Some(age) => (
            Grade::Warn,
            format!(
                "{} last written {} ago (every {every}): is the server running?",
                c.path.display(),
                ago(age)
            ),
        ),
        None => (
            Grade::Warn,
            format!("no checkpoint file at {}", c.path.display()),
        ),
    }
}

fn master_key(m: &MasterKeyFacts) -> Verdict {
    match m {
        MasterKeyFacts::None => (
            Grade::Fail,
            "no [master_key]: the vault stays sealed".into(),
        ),
        MasterKeyFacts::Env(var) => (
            Grade::Warn,
            format!(
                "in the environment ({var}): readable by the process's user through /proc; a 0600 file or an HSM is tighter"
            ),
        ),
        MasterKeyFacts::File {
            path,
            private: Err(reason),
            ..
        } => (Grade::Fail, format!("{}: {reason}", path.display())),
        MasterKeyFacts::File {
            path,
            inside_data_dir: true,
            ..
        } => (
            Grade::Fail,
            format!(
                "{} is inside the data directory: one backup holds both the key and what it opens",
                path.display()
            ),
        ),
        MasterKeyFacts::File { path, .. } => (
            Grade::Pass,
            format!(
                "{}: others cannot read it, outside the data directory",
                path.display()
            ),
        ),
        MasterKeyFacts::Pkcs11(what) => (
            Grade::Pass,
            format!("in an HSM over PKCS#11, {what}: the key never leaves the token"),
        ),
    }
}

fn scan_hook(dir: &Path, hook: &Result<Option<PathBuf>, String>) -> Verdict {
    match hook {
        Ok(Some(path)) => (
            Grade::Pass,
            format!("{} runs `keygate scan --staged`", path.display()),
        ),
        Ok(None) => (
            Grade::Fail,
            format!(
                "no keygate pre-commit hook in {} (`keygate hook install --repo {}`)",
                dir.display(),
                dir.display()
            ),
        ),
        Err(e) => (Grade::Fail, format!("{}: {e}", dir.display())),
    }
}

impl Report {
    pub fn new(config: String, server: Option<String>, items: Vec<Item>) -> Self {
        let count = |g: Grade| items.iter().filter(|i| i.grade == g).count();
        let summary = Summary {
            pass: count(Grade::Pass),
            warn: count(Grade::Warn),
            fail: count(Grade::Fail),
        };
        Self {
            version: 1,
            config,
            server,
            summary,
            items,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strong() -> Facts {
        Facts {
            access_ttl_secs: 300,
            dpop_required: true,
            refresh_idle_secs: 14 * 86400,
            refresh_absolute_secs: 90 * 86400,
            monitor_enabled: true,
            monitor_rules: 6,
            alert_webhooks: 1,
            listen: "127.0.0.1:8080".parse().unwrap(),
            public_url: "https://gate.example.com/".into(),
            tls: Some(TlsFacts {
                pin_backups: Some(1),
            }),
            log_level: "info".into(),
            master_key: MasterKeyFacts::File {
                path: "/etc/keygate/master.key".into(),
                private: Ok(()),
                inside_data_dir: false,
            },
            checkpoint: CheckpointFacts {
                path: "/var/lib/keygate/audit-checkpoints.jsonl".into(),
                interval: Duration::from_secs(60),
                age: Some(Duration::from_secs(10)),
            },
            config_routes: vec![],
            live: Ok(LiveFacts {
                routes: vec![RouteFacts {
                    name: "openai".into(),
                    scopes: 1,
                    limited: true,
                }],
                bearer_clients: vec![],
                secrets: vec!["openai".into()],
                schedules: vec![ScheduleFacts {
                    secret: "openai".into(),
                    rotate_every: "30days".into(),
                    overdue: false,
                    last_error: None,
                }],
                audit: AuditVerification {
                    ok: true,
                    entries: Some(12),
                    head_seq: Some(12),
                    head_hash: None,
                    checkpoints_checked: Some(1),
                    first_bad_seq: None,
                    error: None,
                    warnings: vec![],
                },
            }),
            repo: Some((
                "/src/app".into(),
                Ok(Some("/src/app/.git/hooks/pre-commit".into())),
            )),
        }
    }

    fn grades(f: &Facts) -> Vec<(&'static str, Grade)> {
        grade(f).into_iter().map(|i| (i.id, i.grade)).collect()
    }

    fn grade_of(f: &Facts, id: &str) -> Grade {
        grade(f)
            .into_iter()
            .find(|i| i.id == id)
            .map(|i| i.grade)
            .unwrap()
    }

    #[test]
    fn a_strong_deployment_passes_every_item_in_a_fixed_order() {
        let got = grades(&strong());
        let ids: Vec<&str> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            [
                "routes.token",
                "routes.limits",
                "tokens.access_ttl",
                "tokens.dpop",
                "clients.dpop",
                "tokens.refresh_rotation",
                "secrets.rotation",
                "monitor.rules",
                "monitor.alert_sink",
                "tls.listener",
                "tls.hsts",
                "tls.pins",
                "log.level",
                "audit.chain",
                "audit.checkpoints",
                "master_key",
                "scan.hook",
            ]
        );
        assert!(got.iter().all(|(_, g)| *g == Grade::Pass), "{got:?}");
    }

    #[test]
    fn each_weakness_grades_its_own_item() {
        let mut f = strong();
        f.access_ttl_secs = 3600;
        assert_eq!(grade_of(&f, "tokens.access_ttl"), Grade::Fail);
        let mut f = strong();
        f.dpop_required = false;
        assert_eq!(grade_of(&f, "tokens.dpop"), Grade::Fail);
        let mut f = strong();
        if let Ok(l) = f.live.as_mut() {
            l.bearer_clients = vec!["legacy-1a2b".into()];
        }
        assert_eq!(grade_of(&f, "clients.dpop"), Grade::Warn);
        let mut f = strong();
        if let Ok(l) = f.live.as_mut() {
            l.schedules[0].overdue = true;
        }
        assert_eq!(grade_of(&f, "secrets.rotation"), Grade::Fail);
        let mut f = strong();
        if let Ok(l) = f.live.as_mut() {
            l.schedules.clear();
        }
        assert_eq!(grade_of(&f, "secrets.rotation"), Grade::Warn);
        let mut f = strong();
        f.monitor_enabled = false;
        assert_eq!(grade_of(&f, "monitor.rules"), Grade::Fail);
        let mut f = strong();
        f.alert_webhooks = 0;
        assert_eq!(grade_of(&f, "monitor.alert_sink"), Grade::Warn);
        let mut f = strong();
        f.tls = None;
        assert_eq!(
            grade_of(&f, "tls.listener"),
            Grade::Pass,
            "behind a TLS proxy"
        );
        assert_eq!(grade_of(&f, "tls.hsts"), Grade::Warn);
        f.public_url = "http://127.0.0.1:8080/".into();
        assert_eq!(grade_of(&f, "tls.listener"), Grade::Pass, "development");
        f.public_url = "http://gate.example.com/".into();
        assert_eq!(
            grade_of(&f, "tls.listener"),
            Grade::Fail,
            "plain public URL"
        );
        f.public_url = "https://gate.example.com/".into();
        f.listen = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(grade_of(&f, "tls.listener"), Grade::Fail, "plain listener");
        let mut f = strong();
        f.tls = Some(TlsFacts {
            pin_backups: Some(0),
        });
        assert_eq!(grade_of(&f, "tls.pins"), Grade::Fail);
        let mut f = strong();
        f.log_level = "keygate=debug".into();
        assert_eq!(grade_of(&f, "log.level"), Grade::Warn);
        let mut f = strong();
        if let Ok(l) = f.live.as_mut() {
            l.audit.ok = false;
        }
        assert_eq!(grade_of(&f, "audit.chain"), Grade::Fail);
        let mut f = strong();
        f.checkpoint.age = Some(Duration::from_secs(3600));
        assert_eq!(grade_of(&f, "audit.checkpoints"), Grade::Warn);
        for (private, inside) in [
            (Err("mode 0644 lets others read it".to_owned()), false),
            (Ok(()), true),
        ] {
            let mut f = strong();
            f.master_key = MasterKeyFacts::File {
                path: "/k".into(),
                private: private.clone(),
                inside_data_dir: inside,
            };
            assert_eq!(
                grade_of(&f, "master_key"),
                Grade::Fail,
                "{private:?} {inside}"
            );
        }
        // A key in an HSM passes; one in the environment is a warning.
        let mut f = strong();
        f.master_key = MasterKeyFacts::Pkcs11("key \"m\" in token \"t\" (/m.so)".into());
        assert_eq!(grade_of(&f, "master_key"), Grade::Pass);
        f.master_key = MasterKeyFacts::Env("KEYGATE_MASTER_KEY".into());
        assert_eq!(grade_of(&f, "master_key"), Grade::Warn);
        let mut f = strong();
        f.repo = Some(("/src/app".into(), Ok(None)));
        assert_eq!(grade_of(&f, "scan.hook"), Grade::Fail);
        let mut f = strong();
        if let Ok(l) = f.live.as_mut() {
            l.routes[0].scopes = 0;
            l.routes[0].limited = false;
        }
        assert_eq!(grade_of(&f, "routes.token"), Grade::Warn);
        assert_eq!(grade_of(&f, "routes.limits"), Grade::Warn);
    }

    #[test]
    fn what_could_not_be_asked_is_a_warning_saying_why_never_a_pass() {
        let mut f = strong();
        f.live = Err("not checked: KEYGATE_TOKEN is not set".into());
        f.config_routes = vec![RouteFacts {
            name: "maps".into(),
            scopes: 1,
            limited: false,
        }];
        let items = grade(&f);
        for id in ["clients.dpop", "secrets.rotation", "audit.chain"] {
            let i = items.iter().find(|i| i.id == id).unwrap();
            assert_eq!(i.grade, Grade::Warn, "{id}");
            assert!(i.evidence.contains("KEYGATE_TOKEN"), "{}", i.evidence);
        }
        // Routes fall back to the configuration file.
        let limits = items.iter().find(|i| i.id == "routes.limits").unwrap();
        assert_eq!(limits.grade, Grade::Warn);
        assert!(limits.evidence.contains("maps"), "{}", limits.evidence);
        // Without --repo there is no hook item.
        f.repo = None;
        assert!(grade(&f).iter().all(|i| i.id != "scan.hook"));
    }

    #[test]
    fn a_route_is_limited_by_a_rate_or_a_quota_not_by_a_limits_table() {
        let route = |limits: serde_json::Value| {
            let raw: RawRoute = serde_json::from_value(serde_json::json!({
                "upstream": "https://api.example.com", "secret": "k",
                "inject": {"header": "Authorization", "value": "Bearer {secret}"},
                "allow": ["GET /v1/*"], "scopes": ["ai"], "limits": limits,
            }))
            .unwrap();
            RouteFacts::of("r", &raw).limited
        };
        assert!(route(serde_json::json!({"rate": "20/min"})));
        assert!(route(serde_json::json!({"quota": "500/day"})));
        assert!(
            !route(serde_json::json!({"per": "user"})),
            "per alone bounds nothing"
        );
        assert!(!route(serde_json::Value::Null));
    }
}
