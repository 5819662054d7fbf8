//! Rule tests driven by a [`ManualClock`]: each simulates minutes to hours of traffic.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keygate_auth::ids::{ClientId, SessionId, UserId};
use keygate_auth::jwk::Jkt;
use keygate_proxy::RouteName;
use keygate_proxy::usage::{StatusClass, UsageEvent};

use crate::clock::{Clock, ManualClock};
use crate::config::RawMonitor;
use crate::geo::testing::write_mmdb;
use crate::geo::{GeoDb, GeoInfo};
use crate::{Action, Finding, Monitor, RuleKind, Signal, Subject};

const T0: i64 = 1_700_000_000_000;

struct Rig {
    clock: Arc<ManualClock>,
    monitor: Monitor,
    _dir: Option<tempfile::TempDir>,
}

fn config(toml_text: &str) -> crate::config::MonitorConfig {
    config_with(toml_text, None)
}

/// `toml_text`'s `[monitor]`, with `geoip_db` set to `geo` when given.
fn config_with(toml_text: &str, geo: Option<&Path>) -> crate::config::MonitorConfig {
    #[derive(serde::Deserialize)]
    struct File {
        monitor: RawMonitor,
    }
    let mut file: File = toml::from_str(toml_text).unwrap();
    file.monitor.geoip_db = geo.map(Path::to_path_buf);
    // A test that writes its own rules watches only those.
    if !file.monitor.rules.is_empty() {
        file.monitor.default_rules = false;
    }
    let routes: BTreeSet<String> = ["openai", "maps"].iter().map(|s| s.to_string()).collect();
    file.monitor.validate(Path::new("/"), &routes).unwrap()
}

fn rig(toml_text: &str) -> Rig {
    rig_with(toml_text, None)
}

fn rig_with(toml_text: &str, geo: Option<&[(IpAddr, u8, GeoInfo)]>) -> Rig {
    let clock = Arc::new(ManualClock::new(T0));
    let (db, dir, path) = match geo {
        None => (None, None, None),
        Some(entries) => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("geo.mmdb");
            std::fs::write(&path, write_mmdb(entries)).unwrap();
            (Some(GeoDb::open(&path).unwrap()), Some(dir), Some(path))
        }
    };
    let monitor = Monitor::new(config_with(toml_text, path.as_deref()), db, clock.clone());
    Rig {
        clock,
        monitor,
        _dir: dir,
    }
}

impl Rig {
    fn tick(&self) -> Vec<Finding> {
        self.clock.advance(self.monitor.interval());
        self.monitor.evaluate()
    }
}

fn jkt(c: char) -> Jkt {
    let mut s: String = std::iter::repeat_n(c, 42).collect();
    s.push('A');
    Jkt::parse(&s).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn event(user: &str, session: &str, from: &str) -> UsageEvent {
    UsageEvent {
        user: UserId::parse(user).unwrap(),
        client: ClientId::parse("app").unwrap(),
        session: SessionId::parse(session).unwrap(),
        jkt: Some(jkt('B')),
        client_ip: ip(from),
        cost: 1,
        route: RouteName::parse("openai").unwrap(),
        status_class: StatusClass::Success,
        latency: Duration::from_millis(40),
        fault: None,
        tier: keygate_auth::access::TrustTier::Unattested,
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn poisson(&mut self, mean: f64) -> u32 {
        let limit = (-mean).exp();
        let mut k = 0;
        let mut p = self.next();
        while p > limit {
            k += 1;
            p *= self.next();
        }
        k
    }
}

const DEFAULTS: &str = "[monitor]\n";

/// `minutes` of one user at `per_min` calls a minute, spread evenly; returns findings.
fn steady(rig: &Rig, e: &UsageEvent, per_min: f64, minutes: u64) -> Vec<Finding> {
    let ticks = minutes * 30;
    let mut owed = 0.0;
    let mut out = Vec::new();
    for _ in 0..ticks {
        owed += per_min / 30.0;
        while owed >= 1.0 {
            rig.monitor.observe(e);
            owed -= 1.0;
        }
        out.extend(rig.tick());
    }
    out
}

#[test]
fn spike_on_established_user_alerts_then_throttles_once_each() {
    let rig = rig(DEFAULTS);
    let e = event("alice", "s1", "198.51.100.7");
    assert!(steady(&rig, &e, 3.0, 45).is_empty(), "learning is quiet");
    let snap = rig.monitor.snapshot();
    let alice = snap.users.iter().find(|u| u.name == "alice").unwrap();
    assert!(
        alice.baseline_counts,
        "45 minutes and 135 calls establish it"
    );
    assert!((alice.baseline_per_min - 3.0).abs() < 0.5, "{alice:?}");

    // 20× the baseline, for five minutes.
    let spike_start = rig.clock.now_ms();
    let findings = steady(&rig, &e, 60.0, 5);
    let spikes: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.kind == RuleKind::Spike)
        .collect();
    assert_eq!(
        spikes.len(),
        2,
        "step 0 then step 1, never again: {spikes:#?}"
    );
    assert_eq!(spikes[0].step, 0);
    assert_eq!(spikes[0].action, Action::Alert);
    assert_eq!(
        spikes[0].subject,
        Subject::User(UserId::parse("alice").unwrap())
    );
    assert_eq!(spikes[0].incident, "user-spike:user:alice");
    assert!(
        spikes[0].at_ms - spike_start <= 20_000,
        "caught within 20 s"
    );
    assert!(spikes[0].started_ms >= spike_start - 20_000);
    assert_eq!(spikes[1].step, 1);
    assert_eq!(
        spikes[1].action,
        Action::Throttle {
            per_minute: 10,
            for_secs: 900
        }
    );
    assert!(
        spikes[1].at_ms - spikes[0].at_ms >= 60_000,
        "escalate_after is 1m"
    );
    assert!(spikes[1].at_ms - spikes[0].at_ms <= 62_000);
    assert_eq!(spikes[0].evidence["factor"], 10.0);
    assert!(spikes[0].evidence["calls"].as_u64().unwrap() >= 12);
    let open = rig.monitor.snapshot().incidents;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].step, 1);
}

#[test]
fn incident_closes_after_cooldown_and_reset_restarts_ladder() {
    let rig = rig(DEFAULTS);
    let e = event("bob", "s1", "198.51.100.7");
    steady(&rig, &e, 3.0, 45);
    let first = steady(&rig, &e, 60.0, 1);
    assert_eq!(
        first.iter().filter(|f| f.kind == RuleKind::Spike).count(),
        1
    );
    let key = first[0].incident.clone();
    rig.monitor.reset_incident(&key);
    assert!(rig.monitor.snapshot().incidents.is_empty(), "ack closes it");
    let again = steady(&rig, &e, 60.0, 1);
    let steps: Vec<usize> = again.iter().map(|f| f.step).collect();
    assert_eq!(steps, vec![0], "the ladder restarted at step 0");
    // Quiet for longer than the 10 minute cooldown: the incident closes by itself.
    steady(&rig, &e, 0.0, 11);
    assert!(rig.monitor.snapshot().incidents.is_empty());
}

#[test]
fn quiet_users_burst_below_the_floor_is_not_a_spike() {
    let rig = rig(DEFAULTS);
    let e = event("carol", "s1", "198.51.100.7");
    assert!(steady(&rig, &e, 0.8, 60).is_empty());
    // Eleven calls at once: far above 10 × 0.8/min by rate, but under the 12-call floor.
    for _ in 0..11 {
        rig.monitor.observe(&e);
    }
    assert!(rig.tick().is_empty());
    assert!(steady(&rig, &e, 0.8, 5).is_empty());
    // A brand-new user's burst: no baseline yet, so no spike at all.
    let new = event("dave", "s2", "198.51.100.8");
    for _ in 0..40 {
        rig.monitor.observe(&new);
    }
    assert!(rig.tick().is_empty());
}

#[test]
fn fifty_steady_users_over_six_hours_raise_nothing() {
    let rig = rig(DEFAULTS);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let users: Vec<(UsageEvent, f64)> = (0..50)
        .map(|i| {
            let e = event(
                &format!("u{i}"),
                &format!("s{i}"),
                &format!("198.51.{}.{}", i % 7, i),
            );
            (e, 0.5 + 7.5 * rng.next())
        })
        .collect();
    let mut findings = Vec::new();
    let ticks = 6 * 3600 / 2;
    for t in 0..ticks {
        // A compressed day: six hours from trough to peak and back (×0.3 to ×1.7).
        let phase = t as f64 / ticks as f64 * std::f64::consts::TAU;
        let diurnal = 1.0 - 0.7 * phase.cos();
        for (e, rate) in &users {
            let jitter = 0.75 + 0.5 * rng.next();
            for _ in 0..rng.poisson(rate * diurnal * jitter / 30.0) {
                rig.monitor.observe(e);
            }
        }
        findings.extend(rig.tick());
    }
    assert!(findings.is_empty(), "{findings:#?}");
    let snap = rig.monitor.snapshot();
    assert_eq!(snap.users.len(), 50);
    assert!(snap.users.iter().all(|u| u.baseline_counts));
    assert_eq!(snap.routes.len(), 1);
}

/// A ceiling for lower attestation tiers counts only their calls: an attested app at a
/// rate the unattested ceiling would refuse is left alone; an unattested one is caught.
#[test]
fn a_tier_ceiling_counts_only_the_tiers_it_names() {
    use keygate_auth::access::TrustTier;
    let rig = rig(r#"
[monitor]
default_rules = false
[[monitor.rules]]
name = "unattested-ceiling"
kind = "ceiling"
calls_per_minute = 20
tiers = ["failed", "unattested"]
"#);
    let mut attested = event("gina", "s1", "198.51.100.7");
    attested.tier = TrustTier::Attested;
    assert!(
        steady(&rig, &attested, 90.0, 2).is_empty(),
        "attested calls do not count"
    );
    let mut unattested = event("hank", "s2", "198.51.100.8");
    unattested.tier = TrustTier::Unattested;
    let findings = steady(&rig, &unattested, 90.0, 1);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].rule, "unattested-ceiling");
    assert_eq!(
        findings[0].subject,
        Subject::User(UserId::parse("hank").unwrap())
    );
    assert_eq!(
        findings[0].evidence["tiers"],
        serde_json::json!(["failed", "unattested"])
    );
    // Mixed traffic: only the failed share counts toward the ceiling.
    let mut failed = event("ivy", "s3", "198.51.100.9");
    failed.tier = TrustTier::Failed;
    let mut ivy_attested = failed.clone();
    ivy_attested.tier = TrustTier::Attested;
    let mut mixed = Vec::new();
    for _ in 0..3 {
        for _ in 0..10 {
            rig.monitor.observe(&ivy_attested);
        }
        rig.monitor.observe(&failed);
        mixed.extend(rig.tick());
    }
    assert!(
        mixed
            .iter()
            .all(|f| f.subject != Subject::User(UserId::parse("ivy").unwrap())),
        "{mixed:#?}"
    );
}

#[test]
fn ceilings_on_calls_and_cost() {
    let rig = rig(r#"
[monitor]
[[monitor.rules]]
name = "calls"
kind = "ceiling"
calls_per_minute = 60
[[monitor.rules]]
name = "cost"
kind = "ceiling"
scope = "route"
cost_per_day = 1000
actions = ["alert", "rotate"]
"#);
    let e = event("erin", "s1", "198.51.100.7");
    // 30 calls a minute: under the ceiling.
    assert!(steady(&rig, &e, 30.0, 2).is_empty());
    // 150 a minute: over it within the 10 s window.
    let start = rig.clock.now_ms();
    let findings = steady(&rig, &e, 150.0, 1);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].rule, "calls");
    assert_eq!(findings[0].kind, RuleKind::Ceiling);
    assert!(findings[0].at_ms - start <= 10_000);
    assert_eq!(findings[0].evidence["calls_per_minute"], 60);

    let mut pricey = event("frank", "s2", "198.51.100.9");
    pricey.cost = 400;
    let cost_before = rig.monitor.snapshot().routes[0].cost_today;
    assert!(cost_before < 1000);
    let needed = (1000 - cost_before).div_ceil(400);
    for _ in 0..needed {
        rig.monitor.observe(&pricey);
    }
    let findings = rig.tick();
    let cost: Vec<&Finding> = findings.iter().filter(|f| f.rule == "cost").collect();
    assert_eq!(cost.len(), 1, "{findings:#?}");
    assert_eq!(
        cost[0].subject,
        Subject::Route(RouteName::parse("openai").unwrap())
    );
    assert!(cost[0].evidence["cost_today"].as_u64().unwrap() >= 1000);
}

#[test]
fn new_network_by_prefix_without_a_database() {
    // Not a default without a database: configured explicitly.
    let rig = rig("[monitor]\n[[monitor.rules]]\nname = \"new-network\"\nkind = \"new_network\"\n");
    assert_eq!(rig.monitor.snapshot().geoip, "none: prefix rules only");
    assert_eq!(
        rig.monitor.snapshot().impossible_travel,
        "inactive: no GeoIP database"
    );
    rig.monitor.observe(&event("gina", "fam", "198.51.100.7"));
    assert!(rig.tick().is_empty(), "first sight sets the home");
    rig.monitor.observe(&event("gina", "fam", "198.51.100.200"));
    assert!(rig.tick().is_empty(), "same /24");
    rig.monitor.observe(&event("gina", "fam", "203.0.113.5"));
    let findings = rig.tick();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.kind, RuleKind::NewNetwork);
    assert_eq!(f.evidence["prefix"], "203.0.113.0/24");
    assert_eq!(f.evidence["by"], "prefix");
    assert_eq!(
        f.subject,
        Subject::Session {
            session: SessionId::parse("fam").unwrap(),
            user: UserId::parse("gina").unwrap()
        }
    );
    // Still used from there: the incident is open, nothing more is emitted (one step).
    rig.monitor.observe(&event("gina", "fam", "203.0.113.6"));
    assert!(rig.tick().is_empty());
    // The operator acknowledges: the network becomes known.
    rig.monitor.reset_incident(&f.incident);
    rig.monitor.observe(&event("gina", "fam", "203.0.113.7"));
    assert!(rig.tick().is_empty());
    // IPv6 prefixes are /48s.
    rig.monitor
        .observe(&event("gina", "fam", "2001:db8:1:2::1"));
    let v6 = rig.tick();
    assert_eq!(v6[0].evidence["prefix"], "2001:db8:1::/48");
}

fn geo(country: &str, lat: f64, lon: f64) -> GeoInfo {
    GeoInfo {
        country: country.into(),
        asn: Some(64_500),
        location: Some((lat, lon)),
    }
}

fn world() -> Vec<(IpAddr, u8, GeoInfo)> {
    vec![
        (ip("198.51.100.0"), 24, geo("DE", 52.52, 13.40)), // Berlin
        (ip("198.51.101.0"), 24, geo("DE", 48.14, 11.58)), // Munich
        (ip("203.0.113.0"), 24, geo("BR", -23.55, -46.63)), // São Paulo
        (ip("192.0.2.0"), 24, geo("JP", 35.68, 139.69)),   // Tokyo
    ]
}

#[test]
fn new_network_by_country_with_a_database() {
    let rig = rig_with(DEFAULTS, Some(&world()));
    assert!(rig.monitor.snapshot().geoip.ends_with("geo.mmdb"));
    rig.monitor.observe(&event("hana", "fam", "198.51.100.7"));
    assert!(rig.tick().is_empty());
    // A new prefix in the home country, five hours later (a train, not a plane).
    rig.clock.advance(Duration::from_secs(5 * 3600));
    rig.monitor.observe(&event("hana", "fam", "198.51.101.9"));
    assert!(rig.tick().is_empty(), "same country is not a new network");
    rig.clock.advance(Duration::from_secs(20 * 3600));
    rig.monitor.observe(&event("hana", "fam", "203.0.113.5"));
    let findings = rig.tick();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].kind, RuleKind::NewNetwork);
    assert_eq!(findings[0].evidence["country"], "BR");
    assert_eq!(findings[0].evidence["by"], "country");
    assert_eq!(
        findings[0].evidence["known_countries"],
        serde_json::json!(["DE"])
    );
}

#[test]
fn impossible_travel_needs_speed_and_distance() {
    let rig = rig_with(DEFAULTS, Some(&world()));
    assert_eq!(rig.monitor.snapshot().impossible_travel, "active");
    rig.monitor.observe(&event("ines", "fam", "198.51.100.7"));
    assert!(rig.tick().is_empty());
    // Berlin to Munich (~500 km) in 2 hours: 250 km/h, possible.
    rig.clock.advance(Duration::from_secs(2 * 3600));
    rig.monitor.observe(&event("ines", "fam", "198.51.101.7"));
    assert!(rig.tick().is_empty());
    // Munich to Tokyo (~9400 km) ten minutes later.
    rig.clock.advance(Duration::from_secs(600));
    rig.monitor.observe(&event("ines", "fam", "192.0.2.44"));
    let findings = rig.tick();
    let travel: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.kind == RuleKind::ImpossibleTravel)
        .collect();
    assert_eq!(travel.len(), 1, "{findings:#?}");
    assert_eq!(travel[0].action, Action::Alert);
    let km = travel[0].evidence["distance_km"].as_f64().unwrap();
    assert!((9000.0..9800.0).contains(&km), "{km}");
    assert!(travel[0].evidence["speed_kmh"].as_f64().unwrap() > 40_000.0);
    assert_eq!(travel[0].evidence["to_country"], "JP");
    // The same network also counts as new (country JP).
    assert!(findings.iter().any(|f| f.kind == RuleKind::NewNetwork));
}

#[test]
fn key_change_by_thumbprint_and_by_signal_revokes_once() {
    let rig = rig(DEFAULTS);
    let mut e = event("jo", "fam", "198.51.100.7");
    rig.monitor.observe(&e);
    assert!(rig.tick().is_empty());
    e.jkt = Some(jkt('C'));
    rig.monitor.observe(&e);
    let findings = rig.tick();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].kind, RuleKind::KeyChange);
    assert_eq!(findings[0].action, Action::Revoke);
    assert!(
        !serde_json::to_string(&findings[0])
            .unwrap()
            .contains(jkt('C').as_str()),
        "no thumbprint in the finding"
    );
    for _ in 0..30 {
        rig.monitor.observe(&e);
        assert!(rig.tick().is_empty(), "revoked once, not again");
    }

    rig.monitor.signal(Signal::KeyMismatch {
        session: SessionId::parse("other").unwrap(),
        user: UserId::parse("kim").unwrap(),
        client: ClientId::parse("app").unwrap(),
        ip: ip("203.0.113.9"),
    });
    let findings = rig.tick();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].incident, "key-change:session:other@kim");
    assert_eq!(findings[0].evidence["source"], "signal");
    assert_eq!(findings[0].evidence["prefix"], "203.0.113.0/24");
}

#[test]
fn refusal_burst_from_one_prefix() {
    let rig = rig(DEFAULTS);
    // Ten refusals from elsewhere: below the floor of 20.
    for i in 0..10 {
        rig.monitor.signal(Signal::TokenRefused {
            ip: ip(&format!("192.0.2.{i}")),
            client: None,
        });
    }
    assert!(rig.tick().is_empty());
    let mut findings = Vec::new();
    for i in 0..25 {
        rig.monitor.signal(Signal::LoginFailed {
            ip: ip(&format!("203.0.113.{i}")),
            client: Some(ClientId::parse("app").unwrap()),
            user: None,
        });
        if i % 5 == 4 {
            findings.extend(rig.tick());
        }
    }
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].kind, RuleKind::Refusals);
    assert_eq!(findings[0].subject, Subject::Ip("203.0.113.0/24".into()));
    assert_eq!(findings[0].evidence["logins_failed"], 20);
    assert_eq!(findings[0].action, Action::Alert);
}

#[test]
fn bounded_keys_count_drops() {
    let rig = rig("[monitor]\nmax_keys = 32\n");
    for i in 0..200 {
        rig.monitor.observe(&event(
            &format!("user{i}"),
            &format!("s{i}"),
            "198.51.100.1",
        ));
    }
    let dropped = rig.monitor.snapshot().dropped;
    assert!(dropped.users > 0, "{dropped:?}");
    assert!(dropped.sessions > 0);
    rig.tick();
    let snap = rig.monitor.snapshot();
    assert!(snap.users.len() < 200 && !snap.users.is_empty());
}

#[test]
fn disabled_monitor_does_nothing() {
    let rig = rig("[monitor]\nenabled = false\n");
    assert!(!rig.monitor.enabled());
    rig.monitor.observe(&event("x", "s", "198.51.100.1"));
    assert!(rig.tick().is_empty());
    assert!(rig.monitor.snapshot().users.is_empty());
}

fn invalid(toml_text: &str) -> crate::config::MonitorConfigError {
    #[derive(serde::Deserialize)]
    struct File {
        monitor: RawMonitor,
    }
    let file: File = toml::from_str(toml_text).unwrap();
    let routes: BTreeSet<String> = ["openai"].iter().map(|s| s.to_string()).collect();
    file.monitor
        .validate(Path::new("/nonexistent"), &routes)
        .unwrap_err()
}

#[test]
fn config_errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("interval = \"50ms\"", "monitor.interval", "outside 100ms"),
        ("interval = \"2m\"", "monitor.interval", "outside"),
        (
            "geoip_db = \"geo.mmdb\"",
            "monitor.geoip_db",
            "no such file",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"bogus\"",
            "monitor.rules[0].kind",
            "unknown kind",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"\ntiers = [\"failed\"]",
            "monitor.rules[0].tiers",
            "only a ceiling rule",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"ceiling\"\ncalls_per_minute = 5\ntiers = [\"gold\"]",
            "monitor.rules[0].tiers[0]",
            "failed, unattested or attested",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"ceiling\"\ncost_per_day = 5\ntiers = [\"failed\"]",
            "monitor.rules[0].tiers",
            "calls_per_minute",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"\nscope = \"planet\"",
            "monitor.rules[0].scope",
            "unknown scope",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"new_network\"\nscope = \"route\"",
            "monitor.rules[0].scope",
            "takes scope session",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"\nscope = \"route\"\nactions = [\"alert\", \"revoke\"]",
            "monitor.rules[0].actions[1]",
            "needs scope user or session",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"\nactions = [\"rotate\"]",
            "monitor.rules[0].actions[0]",
            "needs scope route",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"\nscope = \"route\"\nactions = [\"throttle\"]",
            "monitor.rules[0].actions[0]",
            "cannot apply to scope route",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"key_change\"\nactions = [\"explode\"]",
            "monitor.rules[0].actions[0]",
            "unknown action",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"\nscope = \"route\"\nroutes = [\"nope\"]",
            "monitor.rules[0].routes[0]",
            "not a configured route",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"key_change\"\n[[monitor.rules]]\nname = \"b\"\nkind = \"key_change\"\n[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"",
            "monitor.rules[2].name",
            "duplicate",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"\nfactor = 1.0",
            "monitor.rules[0].factor",
            "above 1",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"\nmin_calls = 0",
            "monitor.rules[0].min_calls",
            "at least 1",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"ceiling\"\nfactor = 3.0\ncalls_per_minute = 5",
            "monitor.rules[0].factor",
            "does not apply to a ceiling rule",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"ceiling\"",
            "monitor.rules[0].calls_per_minute",
            "needs calls_per_minute",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"key_change\"\nthrottle_per_minute = 3",
            "monitor.rules[0].throttle_per_minute",
            "no throttle",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"refusals\"\nmin_count = 0",
            "monitor.rules[0].min_count",
            "at least 1",
        ),
        (
            "[[monitor.rules]]\nname = \"a\"\nkind = \"spike\"\nwindow = \"1s\"",
            "monitor.rules[0].window",
            "between the interval",
        ),
        (
            "[[monitor.rules]]\nname = \"Bad Name\"\nkind = \"spike\"",
            "monitor.rules[0].name",
            "a-z 0-9",
        ),
    ];
    for (body, field, message) in cases {
        let e = invalid(&format!("[monitor]\n{body}\n"));
        assert_eq!(e.field, *field, "{body}");
        assert!(e.message.contains(message), "{body}: {e}");
        assert_eq!(e.to_string(), format!("{}: {}", e.field, e.message));
    }
    // Unknown keys are refused while parsing.
    let unknown: Result<RawMonitor, _> = toml::from_str("intervall = \"2s\"");
    assert!(unknown.unwrap_err().to_string().contains("intervall"));
}

#[test]
fn configured_rules_add_to_the_defaults_and_replace_them_by_name() {
    #[derive(serde::Deserialize)]
    struct File {
        monitor: RawMonitor,
    }
    let parse = |text: &str| {
        let file: File = toml::from_str(text).unwrap();
        let names: Vec<String> = file
            .monitor
            .validate(Path::new("/"), &BTreeSet::new())
            .unwrap()
            .rules
            .into_iter()
            .map(|r| r.name)
            .collect();
        names
    };
    let added = parse(
        "[monitor]\n[[monitor.rules]]\nname = \"burst\"\nkind = \"ceiling\"\ncalls_per_minute = 20\n",
    );
    assert_eq!(added.first().map(String::as_str), Some("burst"));
    assert!(
        added.iter().any(|n| n == "key-change"),
        "defaults stay on: {added:?}"
    );
    assert_eq!(
        added.len(),
        7,
        "six defaults without GeoIP, and the new rule"
    );
    let replaced = parse(
        "[monitor]\n[[monitor.rules]]\nname = \"user-spike\"\nkind = \"spike\"\nfactor = 20.0\n",
    );
    assert_eq!(replaced.len(), 6, "same name replaces: {replaced:?}");
    let only = parse(
        "[monitor]\ndefault_rules = false\n[[monitor.rules]]\nname = \"burst\"\nkind = \"ceiling\"\ncalls_per_minute = 20\n",
    );
    assert_eq!(only, ["burst"]);
    assert!(parse("[monitor]\ndefault_rules = false\n").is_empty());
}

#[test]
fn empty_section_gives_the_default_rules() {
    let c = config(DEFAULTS);
    assert!(c.enabled);
    assert_eq!(c.interval, Duration::from_secs(2));
    let names: Vec<&str> = c.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "user-spike",
            "route-spike",
            "user-ceiling",
            "impossible-travel",
            "key-change",
            "ip-refusals"
        ],
        "without a GeoIP database the default new-network rule is off"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("geo.mmdb"), write_mmdb(&[])).unwrap();
    #[derive(serde::Deserialize)]
    struct File {
        monitor: RawMonitor,
    }
    let file: File = toml::from_str("[monitor]\ngeoip_db = \"geo.mmdb\"\n").unwrap();
    let with_geo = file.monitor.validate(dir.path(), &BTreeSet::new()).unwrap();
    assert!(
        with_geo.rules.iter().any(|r| r.name == "new-network"),
        "with one it is on"
    );
    let key = c
        .rules
        .iter()
        .find(|r| r.kind == RuleKind::KeyChange)
        .unwrap();
    assert_eq!(key.ladder, vec![Action::Revoke]);
    // A configured route is accepted by name.
    let c = config(
        "[monitor]\n[[monitor.rules]]\nname = \"r\"\nkind = \"spike\"\nscope = \"route\"\nroutes = [\"maps\"]\nactions = [\"alert\", \"rotate\"]\n",
    );
    assert_eq!(c.rules[0].ladder, vec![Action::Alert, Action::Rotate]);
}

#[test]
fn prefix_only_new_network_alerts_once_then_joins_the_family() {
    let rig = rig("[monitor]\n[[monitor.rules]]\nname = \"new-network\"\nkind = \"new_network\"\n");
    rig.monitor.observe(&event("lena", "fam", "198.51.100.7"));
    assert!(rig.tick().is_empty());
    rig.monitor.observe(&event("lena", "fam", "203.0.113.5"));
    assert_eq!(rig.tick().len(), 1);
    // Quiet for longer than the cooldown: the incident closes and the network is learnt.
    steady(&rig, &event("lena", "fam", "198.51.100.7"), 1.0, 11);
    assert!(rig.monitor.snapshot().incidents.is_empty());
    rig.monitor.observe(&event("lena", "fam", "203.0.113.5"));
    assert!(
        rig.tick().is_empty(),
        "the mobile network now belongs to the family"
    );
}

#[test]
fn usage_sink_feeds_the_snapshot_which_serialises() {
    use keygate_proxy::usage::UsageSink;
    let rig = rig(DEFAULTS);
    let mut e = event("mia", "fam", "198.51.100.7");
    e.cost = 7;
    rig.monitor.record(e.clone());
    rig.monitor.record_ref(&e);
    rig.monitor.signal(Signal::KeyMismatch {
        session: SessionId::parse("fam").unwrap(),
        user: UserId::parse("mia").unwrap(),
        client: ClientId::parse("app").unwrap(),
        ip: ip("198.51.100.7"),
    });
    assert_eq!(rig.tick().len(), 1);
    let snap = rig.monitor.snapshot();
    let mia = snap.users.iter().find(|u| u.name == "mia").unwrap();
    assert_eq!(mia.rate_per_min, 2.0);
    assert_eq!(mia.cost_today, 14);
    assert!(!mia.baseline_counts, "too young to count");
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["geoip"], "none: prefix rules only");
    assert_eq!(json["dropped"]["users"], 0);
    assert_eq!(json["incidents"][0]["kind"], "key_change");
    assert_eq!(json["incidents"][0]["action"], "revoke");
    assert_eq!(json["incidents"][0]["subject"]["scope"], "session");
    assert_eq!(json["routes"][0]["name"], "openai");
}

/// Three replicas, each seeing a third of the traffic, exchanging deltas as the server
/// does through Redis: `publish` collects each one's delta; each evaluation receives the
/// others' since its last.
struct Replicas {
    clock: Arc<ManualClock>,
    monitors: Vec<Monitor>,
    /// (sender, delta) in publication order, through the wire form.
    log: std::sync::Mutex<Vec<(usize, String)>>,
    cursors: std::sync::Mutex<Vec<usize>>,
}

impl Replicas {
    fn new(toml_text: &str, n: usize) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let monitors = (0..n)
            .map(|_| Monitor::new(config(toml_text), None, clock.clone()))
            .collect();
        Self {
            clock,
            monitors,
            log: std::sync::Mutex::new(Vec::new()),
            cursors: std::sync::Mutex::new(vec![0; n]),
        }
    }

    /// One interval: every replica evaluates in turn; the findings per replica.
    fn tick(&self) -> Vec<Vec<Finding>> {
        self.clock.advance(self.monitors[0].interval());
        let mut out = Vec::new();
        for (i, m) in self.monitors.iter().enumerate() {
            let remote: Vec<crate::Delta> = {
                let log = self.log.lock().unwrap();
                let mut cursors = self.cursors.lock().unwrap();
                let from = cursors[i];
                cursors[i] = log.len();
                log[from..]
                    .iter()
                    .filter(|(sender, _)| *sender != i)
                    .map(|(_, json)| serde_json::from_str(json).unwrap())
                    .collect()
            };
            let (findings, delta) = m.evaluate_shared(remote);
            if !delta.is_empty() {
                let json = serde_json::to_string(&delta).unwrap();
                self.log.lock().unwrap().push((i, json));
            }
            out.push(findings);
        }
        out
    }
}

#[test]
fn replicas_sharing_deltas_see_the_cluster_and_share_acknowledgements() {
    let rules = "[monitor]\n[[monitor.rules]]\nname = \"calls\"\nkind = \"ceiling\"\ncalls_per_minute = 60\n";
    // Alone, none of three replicas sees 90/min from one user spread over them.
    let alone: Vec<Rig> = (0..3).map(|_| rig(rules)).collect();
    let e = event("erin", "s1", "198.51.100.7");
    for _ in 0..10 {
        for r in &alone {
            // One call per 2 s interval: 30 a minute each.
            r.monitor.observe(&e);
            assert!(r.tick().is_empty(), "one replica alone sees 30/min");
        }
    }
    // Sharing, each sees the whole: the first to evaluate after the window fills fires.
    let cluster = Replicas::new(rules, 3);
    let mut fired = vec![Vec::new(); 3];
    for _ in 0..10 {
        for m in &cluster.monitors {
            m.observe(&e);
        }
        for (i, f) in cluster.tick().into_iter().enumerate() {
            fired[i].extend(f);
        }
    }
    for (i, f) in fired.iter().enumerate() {
        assert_eq!(f.len(), 1, "replica {i}: {f:#?}");
        assert_eq!(f[0].incident, "calls:user:erin");
        assert_eq!(f[0].step, 0);
    }
    // The snapshot shows the cluster's calls over the last minute (all 30 on the replica
    // that evaluates last), not this replica's third.
    assert_eq!(alone[2].monitor.snapshot().users[0].rate_per_min, 10.0);
    assert_eq!(cluster.monitors[2].snapshot().users[0].rate_per_min, 30.0);

    // Acknowledged on replica 1: the incident closes everywhere, so when the user goes on
    // every replica opens it again at step 0 (the server lets one of them record it).
    cluster.monitors[1].reset_incident("calls:user:erin");
    let mut again = vec![Vec::new(); 3];
    for _ in 0..2 {
        for m in &cluster.monitors {
            m.observe(&e);
        }
        for (i, f) in cluster.tick().into_iter().enumerate() {
            again[i].extend(f);
        }
    }
    for (i, f) in again.iter().enumerate() {
        assert_eq!(f.len(), 1, "replica {i} after the acknowledgement: {f:#?}");
        assert_eq!(f[0].step, 0);
    }
}

/// A tier ceiling sees the cluster too: unattested calls spread over three replicas add
/// up, and attested ones stay out on every replica.
#[test]
fn replicas_share_calls_by_attestation_tier() {
    use keygate_auth::access::TrustTier;
    let rules = "[monitor]\ndefault_rules = false\n[[monitor.rules]]\nname = \"low\"\nkind = \"ceiling\"\ncalls_per_minute = 60\ntiers = [\"unattested\"]\n";
    let cluster = Replicas::new(rules, 3);
    let mut attested = event("gina", "s1", "198.51.100.7");
    attested.tier = TrustTier::Attested;
    let mut unattested = event("hank", "s2", "198.51.100.8");
    unattested.tier = TrustTier::Unattested;
    let mut fired = vec![Vec::new(); 3];
    for _ in 0..10 {
        for m in &cluster.monitors {
            // 30 a minute per replica of each: 90 a minute in the cluster.
            m.observe(&attested);
            m.observe(&unattested);
        }
        for (i, f) in cluster.tick().into_iter().enumerate() {
            fired[i].extend(f);
        }
    }
    for (i, f) in fired.iter().enumerate() {
        assert_eq!(f.len(), 1, "replica {i}: {f:#?}");
        assert_eq!(f[0].incident, "low:user:hank");
    }
}

#[test]
fn stale_or_malformed_deltas_are_dropped_and_counted() {
    let rules = "[monitor]\n[[monitor.rules]]\nname = \"calls\"\nkind = \"ceiling\"\ncalls_per_minute = 6\n";
    let cluster = Replicas::new(rules, 2);
    for _ in 0..10 {
        cluster.monitors[0].observe(&event("erin", "s1", "198.51.100.7"));
    }
    cluster.clock.advance(Duration::from_secs(2));
    let (_, delta) = cluster.monitors[0].evaluate_shared(Vec::new());
    assert_eq!(delta.users.len(), 1);
    // Two minutes later it is stale (30 s, plus 60 s for clock skew, have passed):
    // replica 1 drops it rather than fold old calls in now.
    cluster.clock.advance(Duration::from_secs(120));
    let (findings, _) = cluster.monitors[1].evaluate_shared(vec![delta.clone()]);
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(cluster.monitors[1].snapshot().dropped.stale_deltas, 1);
    // An id that does not parse is dropped; the rest of the delta counts.
    let mut bad = delta;
    bad.at_ms = cluster.clock.now_ms();
    bad.users.push(("has space".into(), 50, 0, bad.at_ms));
    let (findings, _) = cluster.monitors[1].evaluate_shared(vec![bad]);
    assert_eq!(findings.len(), 1, "erin's 10 calls count: {findings:#?}");
    assert_eq!(cluster.monitors[1].snapshot().dropped.stale_deltas, 2);
}
