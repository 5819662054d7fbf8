//! The `[monitor]` section of `keygate.toml` and its validation into [`MonitorConfig`].
//!
//! ```toml
//! [monitor]
//! interval = "2s"
//! geoip_db = "GeoLite2-City.mmdb"   # optional; without it network rules use prefixes only
//!
//! [[monitor.rules]]
//! name = "user-spike"
//! kind = "spike"
//! scope = "user"
//! window = "15s"
//! factor = 10.0
//! min_calls = 12
//! actions = ["alert", "throttle"]
//! escalate_after = "1m"
//! throttle_per_minute = 10
//! throttle_for = "15m"
//! ```
//!
//! [`default_rules`] apply unless `default_rules = false`; `[[monitor.rules]]` add to them,
//! and a rule named like a default replaces it. Two rules of the same kind and
//! scope are allowed (a 5× alert and a 20× throttle are a sensible pair); each keeps its
//! own incidents because an incident is keyed by rule name and subject.

use keygate_auth::access::TrustTier;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keygate_proxy::RouteName;
use serde::Deserialize;

use crate::finding::{Action, RuleKind};

/// The `[monitor]` section as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitor {
    /// Whether the monitor runs (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often counters are closed and rules run (default 2s; 100ms..=60s).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// A MaxMind DB (GeoLite2-City shaped), relative to the config file's directory.
    #[serde(default)]
    pub geoip_db: Option<PathBuf>,
    /// How long an incident must stay quiet to close (default 10m).
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// Distinct users + sessions + routes counted per interval before events are dropped
    /// (default 100000).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Users, routes, session families and refusal keys remembered across intervals
    /// (default 200000 each; the least recently seen are forgotten first).
    #[serde(default = "default_max_subjects")]
    pub max_subjects: usize,
    /// How baselines learn.
    #[serde(default)]
    pub baseline: RawBaseline,
    /// Whether the built-in [`default_rules`] apply alongside `rules` (default true). A
    /// configured rule with a default's name replaces that default; adding a rule never
    /// silently turns the others off.
    #[serde(default = "yes")]
    pub default_rules: bool,
    /// Rules added to (or replacing, by name) the defaults.
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

impl Default for RawMonitor {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_interval(),
            geoip_db: None,
            cooldown: default_cooldown(),
            max_keys: default_max_keys(),
            max_subjects: default_max_subjects(),
            baseline: RawBaseline::default(),
            default_rules: true,
            rules: Vec::new(),
        }
    }
}

/// `[monitor.baseline]`: two exponentially weighted moving averages of calls per minute.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBaseline {
    /// Time constant of the short average (default 15m).
    #[serde(default = "default_short", with = "humantime_serde")]
    pub short: Duration,
    /// Time constant of the long average (default 3h).
    #[serde(default = "default_long", with = "humantime_serde")]
    pub long: Duration,
    /// A baseline counts only once its subject was first seen this long ago (default 30m).
    #[serde(default = "default_min_age", with = "humantime_serde")]
    pub min_age: Duration,
    /// ... and after this many calls in all (default 30).
    #[serde(default = "default_min_calls")]
    pub min_calls: u64,
}

impl Default for RawBaseline {
    fn default() -> Self {
        Self {
            short: default_short(),
            long: default_long(),
            min_age: default_min_age(),
            min_calls: default_min_calls(),
        }
    }
}

/// One `[[monitor.rules]]` entry as written. Which fields apply depends on `kind`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique name, `a-z 0-9 _ -`.
    pub name: String,
    /// `spike`, `ceiling`, `new_network`, `impossible_travel`, `key_change`, `refusals`.
    pub kind: String,
    /// `user` | `route` (spike, ceiling); `session` (network, travel, key rules);
    /// `ip` | `client` | `user` (refusals).
    #[serde(default)]
    pub scope: Option<String>,
    /// Spike, ceiling and refusal window.
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// Spike: rate over the window ≥ factor × baseline.
    #[serde(default)]
    pub factor: Option<f64>,
    /// Spike: and at least this many calls in the window.
    #[serde(default)]
    pub min_calls: Option<u64>,
    /// Ceiling: calls per minute, measured over the window.
    #[serde(default)]
    pub calls_per_minute: Option<u64>,
    /// Ceiling: cost units per UTC day.
    #[serde(default)]
    pub cost_per_day: Option<u64>,
    /// Impossible travel: fastest believable speed.
    #[serde(default)]
    pub max_speed_kmh: Option<f64>,
    /// Impossible travel: distances below this are GeoIP noise.
    #[serde(default)]
    pub min_distance_km: Option<f64>,
    /// Refusals: at least this many in the window.
    #[serde(default)]
    pub min_count: Option<u64>,
    /// Route-scoped rules: only these routes (default all).
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// Ceiling rules: count only calls from tokens of these app attestation tiers
    /// (`failed`, `unattested`, `attested`), so lower tiers can get a lower ceiling.
    #[serde(default)]
    pub tiers: Option<Vec<String>>,
    /// The ladder: `alert`, `throttle`, `revoke`, `disable`, `rotate`, in order.
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    /// How long an incident must keep firing before the next step.
    #[serde(default, with = "humantime_serde")]
    pub escalate_after: Option<Duration>,
    /// Throttle step: calls per minute allowed.
    #[serde(default)]
    pub throttle_per_minute: Option<u32>,
    /// Throttle step: how long it holds.
    #[serde(default, with = "humantime_serde")]
    pub throttle_for: Option<Duration>,
    /// Quiet time before this rule's incidents close (default the section's `cooldown`).
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
}

fn yes() -> bool {
    true
}
fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(600)
}
fn default_max_keys() -> usize {
    100_000
}
fn default_max_subjects() -> usize {
    200_000
}
fn default_short() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_long() -> Duration {
    Duration::from_secs(3 * 3600)
}
fn default_min_age() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_min_calls() -> u64 {
    30
}

/// A configuration error, naming the field (`monitor.rules[2].factor`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MonitorConfigError {
    /// The dotted path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// What a rule is counted per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Per user.
    User,
    /// Per session (refresh token family).
    Session,
    /// Per route.
    Route,
    /// Per OAuth client.
    Client,
    /// Per address prefix (/24, /48).
    Ip,
}

impl Scope {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Session => "session",
            Self::Route => "route",
            Self::Client => "client",
            Self::Ip => "ip",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::User,
            Self::Session,
            Self::Route,
            Self::Client,
            Self::Ip,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's kind-specific settings.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleParams {
    /// Rate over `window` ≥ `factor` × baseline and ≥ `min_calls` calls.
    Spike {
        /// Measurement window.
        window: Duration,
        /// Multiple of the baseline.
        factor: f64,
        /// Absolute floor of calls in the window.
        min_calls: u64,
    },
    /// Absolute limits.
    Ceiling {
        /// Window the per-minute rate is measured over.
        window: Duration,
        /// Calls per minute.
        calls_per_minute: Option<u64>,
        /// Cost units per UTC day.
        cost_per_day: Option<u64>,
    },
    /// A session family on a never-used prefix or country.
    NewNetwork,
    /// Speed between two locations of a family.
    ImpossibleTravel {
        /// Fastest believable speed.
        max_speed_kmh: f64,
        /// Shorter hops are ignored.
        min_distance_km: f64,
    },
    /// A family's DPoP key changed.
    KeyChange,
    /// Refused tokens, proofs and logins.
    Refusals {
        /// Counting window.
        window: Duration,
        /// Floor.
        min_count: u64,
    },
}

/// A validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Kind.
    pub kind: RuleKind,
    /// What it counts per.
    pub scope: Scope,
    /// Kind-specific settings.
    pub params: RuleParams,
    /// Route-scoped rules: the routes it watches (`None`: all).
    pub routes: Option<BTreeSet<RouteName>>,
    /// Ceiling rules: only calls of these attestation tiers count (`None`: all).
    pub tiers: Option<BTreeSet<TrustTier>>,
    /// The action ladder, at least one step.
    pub ladder: Vec<Action>,
    /// Time an incident must keep firing before the next step.
    pub escalate_after: Duration,
    /// Quiet time before an incident closes.
    pub cooldown: Duration,
}

/// Baseline settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BaselineConfig {
    /// Short EWMA time constant.
    pub short: Duration,
    /// Long EWMA time constant.
    pub long: Duration,
    /// Minimum age before a baseline counts.
    pub min_age: Duration,
    /// Minimum calls before a baseline counts.
    pub min_calls: u64,
}

/// The validated monitor configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorConfig {
    /// Whether the monitor runs.
    pub enabled: bool,
    /// Evaluation interval.
    pub interval: Duration,
    /// Absolute path of the GeoIP database, if configured (checked to exist).
    pub geoip_db: Option<PathBuf>,
    /// Distinct keys counted per interval.
    pub max_keys: usize,
    /// Subjects remembered across intervals, per kind of subject.
    pub max_subjects: usize,
    /// Baselines.
    pub baseline: BaselineConfig,
    /// Rules, in configuration order.
    pub rules: Vec<Rule>,
}

impl MonitorConfig {
    /// The built-in configuration (every default, [`default_rules`]).
    pub fn defaults() -> Self {
        RawMonitor::default()
            .validate(Path::new("."), &BTreeSet::new())
            .unwrap_or_else(|_| Self {
                enabled: true,
                interval: default_interval(),
                geoip_db: None,
                max_keys: default_max_keys(),
                max_subjects: default_max_subjects(),
                baseline: BaselineConfig {
                    short: default_short(),
                    long: default_long(),
                    min_age: default_min_age(),
                    min_calls: default_min_calls(),
                },
                rules: Vec::new(),
            })
    }
}

fn rule(name: &str, kind: &str, scope: &str) -> RawRule {
    RawRule {
        name: name.into(),
        kind: kind.into(),
        scope: Some(scope.into()),
        ..RawRule::default()
    }
}

/// The default rule that needs a GeoIP database to be on.
pub const DEFAULT_NEW_NETWORK: &str = "new-network";

/// The built-in rules (every kind-specific setting at its default); `new-network` only
/// with a GeoIP database:
///
/// | name | kind | scope | ladder |
/// |---|---|---|---|
/// | `user-spike` | spike (15s window, 10×, ≥ 12 calls) | user | alert → throttle after 1m |
/// | `route-spike` | spike (60s window, 5×, ≥ 200 calls) | route | alert |
/// | `user-ceiling` | ceiling (300 calls/min over 10s) | user | alert → throttle after 1m |
/// | `new-network` | new_network | session | alert |
/// | `impossible-travel` | impossible_travel (1000 km/h, ≥ 300 km) | session | alert → revoke after 5m |
/// | `key-change` | key_change | session | revoke |
/// | `ip-refusals` | refusals (60s window, ≥ 20) | ip | alert → throttle after 1m |
pub fn default_rules() -> Vec<RawRule> {
    vec![
        rule("user-spike", "spike", "user"),
        RawRule {
            window: Some(Duration::from_secs(60)),
            factor: Some(5.0),
            min_calls: Some(200),
            actions: Some(vec!["alert".into()]),
            ..rule("route-spike", "spike", "route")
        },
        RawRule {
            calls_per_minute: Some(300),
            ..rule("user-ceiling", "ceiling", "user")
        },
        rule("new-network", "new_network", "session"),
        RawRule {
            escalate_after: Some(Duration::from_secs(300)),
            ..rule("impossible-travel", "impossible_travel", "session")
        },
        rule("key-change", "key_change", "session"),
        rule("ip-refusals", "refusals", "ip"),
    ]
}

fn err(field: impl Into<String>, message: impl Into<String>) -> MonitorConfigError {
    MonitorConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl RawMonitor {
    /// Checks every setting and resolves `geoip_db` against `base_dir`. `routes` are the
    /// configured route names a route-scoped rule may name.
    pub fn validate(
        self,
        base_dir: &Path,
        routes: &BTreeSet<String>,
    ) -> Result<MonitorConfig, MonitorConfigError> {
        let interval_ok =
            Duration::from_millis(100) <= self.interval && self.interval <= Duration::from_secs(60);
        if !interval_ok {
            return Err(err(
                "monitor.interval",
                format!(
                    "{} is outside 100ms..=60s",
                    humantime::format_duration(self.interval)
                ),
            ));
        }
        if self.cooldown < self.interval {
            return Err(err("monitor.cooldown", "must be at least the interval"));
        }
        if self.max_keys == 0 {
            return Err(err("monitor.max_keys", "must be at least 1"));
        }
        if self.max_subjects == 0 {
            return Err(err("monitor.max_subjects", "must be at least 1"));
        }
        let b = &self.baseline;
        if b.short < self.interval {
            return Err(err(
                "monitor.baseline.short",
                "must be at least the interval",
            ));
        }
        if b.long < b.short {
            return Err(err(
                "monitor.baseline.long",
                "must be at least monitor.baseline.short",
            ));
        }
        let geoip_db = match self.geoip_db {
            None => None,
            Some(path) => {
                let full = if path.is_absolute() {
                    path
                } else {
                    base_dir.join(path)
                };
                if !full.is_file() {
                    return Err(err(
                        "monitor.geoip_db",
                        format!("no such file: {}", full.display()),
                    ));
                }
                Some(full)
            }
        };
        let configured: BTreeSet<String> = self.rules.iter().map(|r| r.name.clone()).collect();
        let mut raw_rules: Vec<(String, RawRule)> = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| (format!("monitor.rules[{i}]"), r))
            .collect();
        if self.default_rules {
            raw_rules.extend(
                default_rules()
                    .into_iter()
                    .filter(|r| !configured.contains(&r.name))
                    // On prefixes alone a new network is every phone's second network
                    // (about one alert per user in the replay benchmark): the default
                    // watches countries, so it needs a GeoIP database. A configured
                    // `new_network` rule works on prefixes without one.
                    .filter(|r| geoip_db.is_some() || r.name != DEFAULT_NEW_NETWORK)
                    .map(|r| (format!("monitor (default rule {})", r.name), r)),
            );
        }
        let mut rules = Vec::with_capacity(raw_rules.len());
        let mut names = BTreeSet::new();
        for (at, raw) in raw_rules {
            let rule = validate_rule(raw, &at, self.interval, self.cooldown, routes)?;
            if !names.insert(rule.name.clone()) {
                return Err(err(
                    format!("{at}.name"),
                    format!("duplicate rule name {:?}", rule.name),
                ));
            }
            rules.push(rule);
        }
        Ok(MonitorConfig {
            enabled: self.enabled,
            interval: self.interval,
            geoip_db,
            max_keys: self.max_keys,
            max_subjects: self.max_subjects,
            baseline: BaselineConfig {
                short: b.short,
                long: b.long,
                min_age: b.min_age,
                min_calls: b.min_calls,
            },
            rules,
        })
    }
}

fn window(
    raw: Option<Duration>,
    default: Duration,
    at: &str,
    interval: Duration,
) -> Result<Duration, MonitorConfigError> {
    let w = raw.unwrap_or(default);
    if w < interval || w > Duration::from_secs(3600) {
        return Err(err(
            format!("{at}.window"),
            "must be between the interval and 1h",
        ));
    }
    Ok(w)
}

fn validate_rule(
    raw: RawRule,
    at: &str,
    interval: Duration,
    cooldown: Duration,
    known_routes: &BTreeSet<String>,
) -> Result<Rule, MonitorConfigError> {
    let name_ok = (1..=64).contains(&raw.name.len())
        && raw
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(err(
            format!("{at}.name"),
            "must be 1-64 characters of a-z 0-9 _ -",
        ));
    }
    let kind = RuleKind::parse(&raw.kind).ok_or_else(|| {
        err(
            format!("{at}.kind"),
            format!(
                "unknown kind {:?} (spike, ceiling, new_network, impossible_travel, key_change, refusals)",
                raw.kind
            ),
        )
    })?;
    let allowed: &[Scope] = match kind {
        RuleKind::Spike | RuleKind::Ceiling => &[Scope::User, Scope::Route],
        RuleKind::NewNetwork | RuleKind::ImpossibleTravel | RuleKind::KeyChange => {
            &[Scope::Session]
        }
        RuleKind::Refusals => &[Scope::Ip, Scope::Client, Scope::User],
    };
    let scope = match &raw.scope {
        None => allowed.first().copied().unwrap_or(Scope::User),
        Some(text) => {
            let scope = Scope::parse(text).ok_or_else(|| {
                err(
                    format!("{at}.scope"),
                    format!("unknown scope {text:?} (user, session, route, client, ip)"),
                )
            })?;
            if !allowed.contains(&scope) {
                let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
                return Err(err(
                    format!("{at}.scope"),
                    format!("a {kind} rule takes scope {}", names.join(" or ")),
                ));
            }
            scope
        }
    };
    // Fields that belong to other kinds are refused rather than silently ignored.
    let present: [(&str, bool, &[RuleKind]); 7] = [
        (
            "window",
            raw.window.is_some(),
            &[RuleKind::Spike, RuleKind::Ceiling, RuleKind::Refusals],
        ),
        ("factor", raw.factor.is_some(), &[RuleKind::Spike]),
        ("min_calls", raw.min_calls.is_some(), &[RuleKind::Spike]),
        (
            "calls_per_minute",
            raw.calls_per_minute.is_some(),
            &[RuleKind::Ceiling],
        ),
        (
            "cost_per_day",
            raw.cost_per_day.is_some(),
            &[RuleKind::Ceiling],
        ),
        ("min_count", raw.min_count.is_some(), &[RuleKind::Refusals]),
        (
            "max_speed_kmh",
            raw.max_speed_kmh.is_some() || raw.min_distance_km.is_some(),
            &[RuleKind::ImpossibleTravel],
        ),
    ];
    for (field, set, kinds) in present {
        if set && !kinds.contains(&kind) {
            let field = if field == "max_speed_kmh" && raw.max_speed_kmh.is_none() {
                "min_distance_km"
            } else {
                field
            };
            return Err(err(
                format!("{at}.{field}"),
                format!("does not apply to a {kind} rule"),
            ));
        }
    }
    let params = match kind {
        RuleKind::Spike => {
            let factor = raw.factor.unwrap_or(10.0);
            if !(factor.is_finite() && factor > 1.0) {
                return Err(err(
                    format!("{at}.factor"),
                    format!("must be a number above 1 (got {factor})"),
                ));
            }
            let min_calls = raw.min_calls.unwrap_or(12);
            if min_calls == 0 {
                return Err(err(
                    format!("{at}.min_calls"),
                    "must be at least 1: without a floor a quiet subject's second call is a spike",
                ));
            }
            RuleParams::Spike {
                window: window(raw.window, Duration::from_secs(15), at, interval)?,
                factor,
                min_calls,
            }
        }
        RuleKind::Ceiling => {
            if raw.calls_per_minute.is_none() && raw.cost_per_day.is_none() {
                return Err(err(
                    format!("{at}.calls_per_minute"),
                    "a ceiling rule needs calls_per_minute, cost_per_day or both",
                ));
            }
            if raw.calls_per_minute == Some(0) {
                return Err(err(format!("{at}.calls_per_minute"), "must be at least 1"));
            }
            if raw.cost_per_day == Some(0) {
                return Err(err(format!("{at}.cost_per_day"), "must be at least 1"));
            }
            RuleParams::Ceiling {
                window: window(raw.window, Duration::from_secs(10), at, interval)?,
                calls_per_minute: raw.calls_per_minute,
                cost_per_day: raw.cost_per_day,
            }
        }
        RuleKind::NewNetwork => RuleParams::NewNetwork,
        RuleKind::KeyChange => RuleParams::KeyChange,
        RuleKind::ImpossibleTravel => {
            let max_speed_kmh = raw.max_speed_kmh.unwrap_or(1000.0);
            if !(max_speed_kmh.is_finite() && max_speed_kmh > 0.0) {
                return Err(err(format!("{at}.max_speed_kmh"), "must be above 0"));
            }
            let min_distance_km = raw.min_distance_km.unwrap_or(300.0);
            if !(min_distance_km.is_finite() && min_distance_km >= 0.0) {
                return Err(err(format!("{at}.min_distance_km"), "must be 0 or more"));
            }
            RuleParams::ImpossibleTravel {
                max_speed_kmh,
                min_distance_km,
            }
        }
        RuleKind::Refusals => {
            let min_count = raw.min_count.unwrap_or(20);
            if min_count == 0 {
                return Err(err(format!("{at}.min_count"), "must be at least 1"));
            }
            RuleParams::Refusals {
                window: window(raw.window, Duration::from_secs(60), at, interval)?,
                min_count,
            }
        }
    };
    let routes = match raw.routes {
        None => None,
        Some(_) if scope != Scope::Route => {
            return Err(err(
                format!("{at}.routes"),
                "only a rule with scope \"route\" can name routes",
            ));
        }
        Some(list) if list.is_empty() => {
            return Err(err(
                format!("{at}.routes"),
                "is empty: leave it out to watch every route",
            ));
        }
        Some(list) => {
            let mut set = BTreeSet::new();
            for (j, name) in list.iter().enumerate() {
                let parsed = RouteName::parse(name)
                    .ok()
                    .filter(|_| known_routes.contains(name));
                let Some(parsed) = parsed else {
                    return Err(err(
                        format!("{at}.routes[{j}]"),
                        format!("{name:?} is not a configured route"),
                    ));
                };
                set.insert(parsed);
            }
            Some(set)
        }
    };
    let default_ladder: &[&str] = match kind {
        RuleKind::Spike | RuleKind::Ceiling if scope == Scope::Route => &["alert"],
        RuleKind::Spike | RuleKind::Ceiling | RuleKind::Refusals => &["alert", "throttle"],
        RuleKind::NewNetwork => &["alert"],
        RuleKind::ImpossibleTravel => &["alert", "revoke"],
        RuleKind::KeyChange => &["revoke"],
    };
    let names: Vec<String> = raw
        .actions
        .unwrap_or_else(|| default_ladder.iter().map(|s| (*s).to_owned()).collect());
    if names.is_empty() {
        return Err(err(format!("{at}.actions"), "needs at least one action"));
    }
    let throttle_per_minute = raw.throttle_per_minute.unwrap_or(10);
    let throttle_for = raw.throttle_for.unwrap_or(Duration::from_secs(15 * 60));
    let mut ladder = Vec::with_capacity(names.len());
    for (j, name) in names.iter().enumerate() {
        let field = format!("{at}.actions[{j}]");
        let action = match name.as_str() {
            "alert" => Action::Alert,
            "throttle" => Action::Throttle {
                per_minute: throttle_per_minute,
                for_secs: throttle_for.as_secs(),
            },
            "revoke" => Action::Revoke,
            "disable" => Action::Disable,
            "rotate" => Action::Rotate,
            other => {
                return Err(err(
                    field,
                    format!("unknown action {other:?} (alert, throttle, revoke, disable, rotate)"),
                ));
            }
        };
        let fits = match action {
            Action::Alert => true,
            Action::Throttle { .. } => scope != Scope::Route,
            Action::Revoke | Action::Disable => matches!(scope, Scope::User | Scope::Session),
            Action::Rotate => scope == Scope::Route,
        };
        if !fits {
            let needs = match action {
                Action::Throttle { .. } => "user, session, ip or client",
                Action::Rotate => "route",
                _ => "user or session",
            };
            return Err(err(
                field,
                format!("{name} cannot apply to scope {scope}: it needs scope {needs}"),
            ));
        }
        if ladder
            .iter()
            .any(|a: &Action| a.as_str() == action.as_str())
        {
            return Err(err(field, format!("{name} appears twice in the ladder")));
        }
        ladder.push(action);
    }
    let has_throttle = ladder.iter().any(|a| matches!(a, Action::Throttle { .. }));
    if !has_throttle {
        if raw.throttle_per_minute.is_some() {
            return Err(err(
                format!("{at}.throttle_per_minute"),
                "is set but the ladder has no throttle",
            ));
        }
        if raw.throttle_for.is_some() {
            return Err(err(
                format!("{at}.throttle_for"),
                "is set but the ladder has no throttle",
            ));
        }
    }
    if has_throttle && throttle_per_minute == 0 {
        return Err(err(
            format!("{at}.throttle_per_minute"),
            "must be at least 1 (use revoke or disable to stop all calls)",
        ));
    }
    if has_throttle && throttle_for < Duration::from_secs(1) {
        return Err(err(format!("{at}.throttle_for"), "must be at least 1s"));
    }
    if ladder.len() == 1 && raw.escalate_after.is_some() {
        return Err(err(
            format!("{at}.escalate_after"),
            "has no effect with a one-step ladder",
        ));
    }
    let escalate_after = raw.escalate_after.unwrap_or(Duration::from_secs(60));
    if escalate_after < interval {
        return Err(err(
            format!("{at}.escalate_after"),
            "must be at least the interval",
        ));
    }
    let cooldown = raw.cooldown.unwrap_or(cooldown);
    if cooldown < interval {
        return Err(err(
            format!("{at}.cooldown"),
            "must be at least the interval",
        ));
    }
    let tiers = match raw.tiers {
        None => None,
        Some(list) => {
            let calls_only = matches!(
                params,
                RuleParams::Ceiling {
                    calls_per_minute: Some(_),
                    cost_per_day: None,
                    ..
                }
            );
            if !calls_only {
                return Err(err(
                    format!("{at}.tiers"),
                    "only a ceiling rule on calls_per_minute (without cost_per_day) counts by tier",
                ));
            }
            let mut set = BTreeSet::new();
            for (i, t) in list.iter().enumerate() {
                set.insert(TrustTier::parse(t).ok_or_else(|| {
                    err(
                        format!("{at}.tiers[{i}]"),
                        "must be failed, unattested or attested",
                    )
                })?);
            }
            if set.is_empty() {
                return Err(err(format!("{at}.tiers"), "name at least one tier"));
            }
            Some(set)
        }
    };
    Ok(Rule {
        name: raw.name,
        kind,
        scope,
        params,
        routes,
        tiers,
        ladder,
        escalate_after,
        cooldown,
    })
}
