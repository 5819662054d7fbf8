//! Replays a synthetic trace through the monitor with a manual clock and reports, per
//! injected incident kind, how many were caught and how fast, plus false alarms on benign
//! traffic and evaluation time per tick.
//!
//! `cargo run --release -p keygate-monitor --features test-support --example replay -- --users 5000 --hours 6 --seed 1`
//!
//! Benign traffic: every user has a home city, a mean rate (log-normal, median 0.5 calls
//! a minute, 0.05..2), a local-time diurnal cycle (×0.2 at 04:00 to ×1.5 at 16:00),
//! app sessions (active about a third of the time at three times the mean rate, Poisson
//! within), two home networks (Wi-Fi and mobile, switched at session starts) and for a
//! few users a domestic flight (≤ 700 km/h plus 90 minutes of airport time) to a hotel
//! network in another city. Incidents are injected after the first hour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_auth::ids::{ClientId, SessionId, UserId};
use keygate_auth::jwk::Jkt;
use keygate_monitor::clock::ManualClock;
use keygate_monitor::config::RawMonitor;
use keygate_monitor::geo::testing::write_mmdb;
use keygate_monitor::geo::{GeoDb, GeoInfo};
use keygate_monitor::{Finding, Monitor, RuleKind, Signal, Subject};
use keygate_proxy::RouteName;
use keygate_proxy::usage::{StatusClass, UsageEvent};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00Z
const TICK_MS: i64 = 2_000;

/// City: country, latitude, longitude, UTC offset in hours.
const CITIES: &[(&str, f64, f64, f64)] = &[
    ("US", 40.71, -74.01, -5.0),
    ("US", 34.05, -118.24, -8.0),
    ("US", 41.88, -87.63, -6.0),
    ("US", 47.61, -122.33, -8.0),
    ("US", 25.76, -80.19, -5.0),
    ("DE", 52.52, 13.40, 1.0),
    ("DE", 48.14, 11.58, 1.0),
    ("DE", 53.55, 9.99, 1.0),
    ("FR", 48.86, 2.35, 1.0),
    ("FR", 43.30, 5.37, 1.0),
    ("BR", -23.55, -46.63, -3.0),
    ("BR", -22.91, -43.17, -3.0),
    ("BR", -15.79, -47.88, -3.0),
    ("JP", 35.68, 139.69, 9.0),
    ("JP", 34.69, 135.50, 9.0),
    ("JP", 43.06, 141.35, 9.0),
    ("AU", -33.87, 151.21, 10.0),
    ("AU", -31.95, 115.86, 8.0),
    ("IN", 28.61, 77.21, 5.5),
    ("IN", 19.08, 72.88, 5.5),
    ("IN", 12.97, 77.59, 5.5),
    ("CA", 43.65, -79.38, -5.0),
    ("CA", 49.28, -123.12, -8.0),
    ("GB", 51.51, -0.13, 0.0),
    ("NG", 6.52, 3.38, 1.0),
];

fn city_ip(city: usize, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([40 + city as u8, b, c, d])
}

fn km(a: usize, b: usize) -> f64 {
    let (_, la1, lo1, _) = CITIES[a];
    let (_, la2, lo2, _) = CITIES[b];
    let (la1, lo1, la2, lo2) = (
        la1.to_radians(),
        lo1.to_radians(),
        la2.to_radians(),
        lo2.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() * n as f64) as usize).min(n.saturating_sub(1))
    }
    fn byte(&mut self) -> u8 {
        self.below(250) as u8 + 1
    }
    fn normal(&mut self) -> f64 {
        let u = self.next().max(1e-12);
        let v = self.next();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn poisson(&mut self, mean: f64) -> u32 {
        if mean <= 0.0 {
            return 0;
        }
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

fn jkt(n: u64) -> Jkt {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::new();
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..42 {
        s.push(ALPHA[(x % 64) as usize] as char);
        x = x.rotate_left(7).wrapping_mul(31).wrapping_add(17);
    }
    s.push('A');
    Jkt::parse(&s).unwrap()
}

struct User {
    wifi: UsageEvent,
    cell: UsageEvent,
    on_cell: bool,
    rate: f64,
    tz: f64,
    active: bool,
    next_switch: i64,
    /// (departure, arrival, hotel event).
    trip: Option<(i64, i64, UsageEvent)>,
    arrived: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Spike,
    Ceiling,
    NewNetwork,
    ImpossibleTravel,
    KeyChange,
    Refusals,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Spike,
        Kind::Ceiling,
        Kind::NewNetwork,
        Kind::ImpossibleTravel,
        Kind::KeyChange,
        Kind::Refusals,
    ];
    fn rule_kind(self) -> RuleKind {
        match self {
            Kind::Spike => RuleKind::Spike,
            Kind::Ceiling => RuleKind::Ceiling,
            Kind::NewNetwork => RuleKind::NewNetwork,
            Kind::ImpossibleTravel => RuleKind::ImpossibleTravel,
            Kind::KeyChange => RuleKind::KeyChange,
            Kind::Refusals => RuleKind::Refusals,
        }
    }
}

struct Incident {
    kind: Kind,
    user: usize,
    start: i64,
    end: i64,
    /// Calls (or refusals) per minute.
    rate: f64,
    attacker: Option<UsageEvent>,
    prefix: Option<(IpAddr, String)>,
    by_signal: bool,
    first_event: Option<i64>,
    caught: Option<i64>,
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n_users = arg(&args, "--users", 5000) as usize;
    let hours = arg(&args, "--hours", 6);
    let seed = arg(&args, "--seed", 1);
    let per_kind = arg(&args, "--incidents", (n_users as u64 / 250).max(5)) as usize;
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);

    // GeoIP database: one /8 per city.
    let dir = std::env::temp_dir().join(format!("keygate-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db_path = dir.join("world.mmdb");
    let entries: Vec<(IpAddr, u8, GeoInfo)> = CITIES
        .iter()
        .enumerate()
        .map(|(i, (cc, lat, lon, _))| {
            (
                city_ip(i, 0, 0, 0),
                8,
                GeoInfo {
                    country: (*cc).into(),
                    asn: Some(64_512 + i as u32),
                    location: Some((*lat, *lon)),
                },
            )
        })
        .collect();
    std::fs::write(&db_path, write_mmdb(&entries)).unwrap();
    let use_geo = !args.iter().any(|a| a == "--no-geo");
    let geo = use_geo.then(|| GeoDb::open(&db_path).unwrap());

    // The server's configuration: the default rules, and the database when there is one
    // (without it the default new-network rule is off).
    let config = RawMonitor {
        geoip_db: use_geo.then(|| db_path.clone()),
        ..RawMonitor::default()
    }
    .validate(Path::new("."), &BTreeSet::new())
    .unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let monitor = Monitor::new(config, geo, clock.clone());

    let routes = ["chat", "maps", "speech"].map(|r| RouteName::parse(r).unwrap());
    let client = ClientId::parse("mobile-app").unwrap();
    let end = T0 + hours as i64 * 3_600_000;
    let mut users: Vec<User> = (0..n_users)
        .map(|i| {
            let city = rng.below(CITIES.len());
            let base = UsageEvent {
                user: UserId::parse(&format!("user{i}")).unwrap(),
                client: client.clone(),
                session: SessionId::parse(&format!("fam{i}")).unwrap(),
                jkt: Some(jkt(i as u64)),
                client_ip: city_ip(city, rng.byte(), rng.byte(), rng.byte()),
                cost: 1,
                route: routes[rng.below(3)].clone(),
                status_class: StatusClass::Success,
                latency: Duration::from_millis(80),
                fault: None,
                tier: keygate_auth::access::TrustTier::Unattested,
            };
            let mut cell = base.clone();
            cell.client_ip = city_ip(city, rng.byte(), rng.byte(), rng.byte());
            let rate = (0.5 * (0.8 * rng.normal()).exp()).clamp(0.05, 2.0);
            let trip = if rng.next() < 0.03 {
                let dests: Vec<usize> = (0..CITIES.len())
                    .filter(|&c| c != city && CITIES[c].0 == CITIES[city].0)
                    .collect();
                (!dests.is_empty()).then(|| {
                    let dest = dests[rng.below(dests.len())];
                    let depart =
                        T0 + 3_600_000 + (rng.next() * (end - T0 - 7_200_000) as f64) as i64;
                    let flight_h = km(city, dest) / 700.0 + 1.5;
                    let arrive = depart + (flight_h * 3_600_000.0) as i64;
                    let mut hotel = base.clone();
                    hotel.client_ip = city_ip(dest, rng.byte(), rng.byte(), rng.byte());
                    (depart, arrive, hotel)
                })
            } else {
                None
            };
            User {
                wifi: base,
                cell,
                on_cell: false,
                rate,
                tz: CITIES[city].3,
                active: rng.next() < 0.33,
                next_switch: T0 + (rng.next() * 1_200_000.0) as i64,
                trip,
                arrived: false,
            }
        })
        .collect();

    // Incidents: distinct non-travelling victims, starting after the first hour.
    let mut victims: Vec<usize> = (0..n_users).filter(|&u| users[u].trip.is_none()).collect();
    for i in (1..victims.len()).rev() {
        victims.swap(i, rng.below(i + 1));
    }
    let mut incidents = Vec::new();
    let window = (end - T0 - 3_600_000 - 1_800_000).max(60_000);
    let mut attacker_serial = 0u64;
    for kind in Kind::ALL {
        for _ in 0..per_kind {
            let Some(user) = victims.pop() else { break };
            let start = T0 + 3_600_000 + (rng.next() * window as f64) as i64 / TICK_MS * TICK_MS;
            let u = &users[user];
            let home_city = (match u.wifi.client_ip {
                IpAddr::V4(v4) => v4.octets()[0],
                IpAddr::V6(_) => 40,
            } - 40) as usize;
            attacker_serial += 1;
            let mut inc = Incident {
                kind,
                user,
                start,
                end: start + 600_000,
                rate: 0.0,
                attacker: None,
                prefix: None,
                by_signal: false,
                first_event: None,
                caught: None,
            };
            match kind {
                Kind::Spike => {
                    // 20× the user's mean rate, at least 60 a minute (a script, not a thumb).
                    inc.rate = (20.0 * u.rate).max(60.0) * (1.0 + rng.next());
                }
                Kind::Ceiling => {
                    inc.rate = 400.0 + 400.0 * rng.next();
                    inc.end = start + 180_000;
                }
                Kind::NewNetwork => {
                    let foreign: Vec<usize> = (0..CITIES.len())
                        .filter(|&c| CITIES[c].0 != CITIES[home_city].0)
                        .collect();
                    let city = foreign[rng.below(foreign.len())];
                    let mut e = u.wifi.clone();
                    e.client_ip = city_ip(city, rng.byte(), rng.byte(), rng.byte());
                    inc.attacker = Some(e);
                    inc.rate = 3.0;
                    inc.end = start + 1_200_000;
                }
                Kind::ImpossibleTravel => {
                    // Same country, ≥ 1500 km away: only the speed gives it away.
                    let far: Vec<usize> = (0..CITIES.len())
                        .filter(|&c| {
                            CITIES[c].0 == CITIES[home_city].0 && km(c, home_city) > 1500.0
                        })
                        .collect();
                    let city = if far.is_empty() {
                        // No such city at home: another continent.
                        (0..CITIES.len())
                            .max_by(|a, b| km(*a, home_city).total_cmp(&km(*b, home_city)))
                            .unwrap_or(0)
                    } else {
                        far[rng.below(far.len())]
                    };
                    let mut e = u.wifi.clone();
                    e.client_ip = city_ip(city, rng.byte(), rng.byte(), rng.byte());
                    inc.attacker = Some(e);
                    inc.rate = 3.0;
                    inc.end = start + 1_200_000;
                }
                Kind::KeyChange => {
                    let mut e = u.wifi.clone();
                    e.jkt = Some(jkt(1_000_000 + attacker_serial));
                    inc.attacker = Some(e);
                    inc.by_signal = attacker_serial % 2 == 0;
                    inc.rate = 2.0;
                }
                Kind::Refusals => {
                    let city = rng.below(CITIES.len());
                    let (b, c) = (rng.byte(), rng.byte());
                    let ip = city_ip(city, b, c, 0);
                    let label = format!("{}.{b}.{c}.0/24", 40 + city);
                    inc.prefix = Some((ip, label));
                    inc.rate = 120.0 + 480.0 * rng.next();
                    inc.end = start + 120_000;
                }
            }
            incidents.push(inc);
        }
    }
    let victim_of: HashMap<String, usize> = incidents
        .iter()
        .enumerate()
        .map(|(i, inc)| (users[inc.user].wifi.user.as_str().to_owned(), i))
        .collect();
    let prefix_of: HashMap<String, usize> = incidents
        .iter()
        .enumerate()
        .filter_map(|(i, inc)| inc.prefix.as_ref().map(|(_, p)| (p.clone(), i)))
        .collect();

    let mut events = 0u64;
    let mut eval_times: Vec<Duration> = Vec::new();
    let mut false_alarms: BTreeMap<String, u64> = BTreeMap::new();
    let mut false_examples: Vec<Finding> = Vec::new();
    let mut related = 0u64;
    let wall = Instant::now();
    let mut now = T0;
    while now < end {
        // Benign traffic for the tick ending at now + TICK_MS.
        for u in users.iter_mut() {
            if now >= u.next_switch {
                u.active = !u.active;
                let mean_min = if u.active { 10.0 } else { 20.0 };
                u.next_switch = now + (-(rng.next().max(1e-9)).ln() * mean_min * 60_000.0) as i64;
                if u.active && rng.next() < 0.4 {
                    u.on_cell = !u.on_cell;
                }
            }
            if !u.active {
                continue;
            }
            let hour = ((now - T0) as f64 / 3_600_000.0 + u.tz).rem_euclid(24.0);
            // Low at 04:00, high at 16:00.
            let diurnal = 0.85 - 0.65 * ((hour - 4.0) / 24.0 * std::f64::consts::TAU).cos();
            let mean = 3.0 * u.rate * diurnal / 30.0;
            let n = rng.poisson(mean);
            if n == 0 {
                continue;
            }
            let e = match &u.trip {
                Some((depart, arrive, hotel)) if now >= *depart => {
                    if now < *arrive {
                        continue; // in the air
                    }
                    u.arrived = true;
                    hotel
                }
                _ if u.on_cell => &u.cell,
                _ => &u.wifi,
            };
            for _ in 0..n {
                monitor.observe(e);
            }
            events += u64::from(n);
        }
        // Injected traffic.
        for inc in incidents.iter_mut() {
            if now < inc.start || now >= inc.end {
                continue;
            }
            let u = &users[inc.user];
            match inc.kind {
                Kind::Spike | Kind::Ceiling => {
                    let n = rng.poisson(inc.rate / 30.0);
                    for _ in 0..n {
                        monitor.observe(&u.wifi);
                    }
                    if n > 0 && inc.first_event.is_none() {
                        inc.first_event = Some(now);
                    }
                    events += u64::from(n);
                }
                Kind::NewNetwork | Kind::ImpossibleTravel | Kind::KeyChange => {
                    if now == inc.start && inc.kind == Kind::ImpossibleTravel {
                        // The victim is using the app at home right then.
                        monitor.observe(&u.wifi);
                    }
                    let Some(e) = &inc.attacker else { continue };
                    let mut n = rng.poisson(inc.rate / 30.0);
                    if inc.first_event.is_none() {
                        n = n.max(1);
                        inc.first_event = Some(now + TICK_MS / 2);
                        clock.set(now + TICK_MS / 2);
                        if inc.by_signal {
                            monitor.signal(Signal::KeyMismatch {
                                session: e.session.clone(),
                                user: e.user.clone(),
                                client: e.client.clone(),
                                ip: e.client_ip,
                            });
                        }
                    }
                    if !inc.by_signal {
                        for _ in 0..n {
                            monitor.observe(e);
                        }
                        events += u64::from(n);
                    }
                }
                Kind::Refusals => {
                    let Some((ip, _)) = &inc.prefix else { continue };
                    let n = rng.poisson(inc.rate / 30.0);
                    if n > 0 && inc.first_event.is_none() {
                        inc.first_event = Some(now);
                    }
                    for k in 0..n {
                        let IpAddr::V4(v4) = ip else { continue };
                        let [a, b, c, _] = v4.octets();
                        monitor.signal(Signal::TokenRefused {
                            ip: IpAddr::from([a, b, c, (k % 250) as u8 + 1]),
                            client: None,
                        });
                    }
                }
            }
        }
        now += TICK_MS;
        clock.set(now);
        let t = Instant::now();
        let findings = monitor.evaluate();
        eval_times.push(t.elapsed());
        for f in findings {
            let owner = match &f.subject {
                Subject::User(u) | Subject::Session { user: u, .. } => {
                    victim_of.get(u.as_str()).copied()
                }
                Subject::Ip(p) => prefix_of.get(p).copied(),
                _ => None,
            };
            match owner {
                Some(i) if f.at_ms >= incidents[i].start => {
                    related += 1;
                    let inc = &mut incidents[i];
                    if f.kind == inc.kind.rule_kind() && inc.caught.is_none() {
                        inc.caught = Some(f.at_ms);
                    }
                }
                _ => {
                    *false_alarms.entry(f.rule.clone()).or_default() += 1;
                    if false_examples.len() < 5 {
                        false_examples.push(f);
                    }
                }
            }
        }
    }
    let wall = wall.elapsed();

    println!(
        "replay: {n_users} users, {hours} h simulated, seed {seed}, GeoIP {}, {events} calls, {} ticks of {} s, wall {:.1} s",
        if use_geo {
            "on"
        } else {
            "off (prefix rules only)"
        },
        eval_times.len(),
        TICK_MS / 1000,
        wall.as_secs_f64()
    );
    println!(
        "{:<18} {:>8} {:>6} {:>6} {:>12} {:>9}",
        "kind", "injected", "caught", "missed", "median_s", "max_s"
    );
    let mut all_caught = true;
    for kind in Kind::ALL {
        let of: Vec<&Incident> = incidents.iter().filter(|i| i.kind == kind).collect();
        let mut lat: Vec<f64> = of
            .iter()
            .filter_map(|i| {
                let from = i.first_event.unwrap_or(i.start);
                i.caught.map(|c| (c - from) as f64 / 1000.0)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        let caught = lat.len();
        all_caught &= caught == of.len();
        let median = lat.get(lat.len() / 2).copied().unwrap_or(f64::NAN);
        let max = lat.last().copied().unwrap_or(f64::NAN);
        println!(
            "{:<18} {:>8} {:>6} {:>6} {:>12.1} {:>9.1}",
            kind.rule_kind().as_str(),
            of.len(),
            caught,
            of.len() - caught,
            median,
            max
        );
    }
    let benign_user_hours = (n_users - incidents.len()) as f64 * hours as f64;
    let false_total: u64 = false_alarms.values().sum();
    println!(
        "false alarms: {false_total} over {benign_user_hours:.0} benign user-hours = {:.2} per 10,000 user-hours {:?}",
        false_total as f64 / benign_user_hours * 10_000.0,
        false_alarms
    );
    println!("findings on injected incidents (all kinds and steps): {related}");
    let travellers = users.iter().filter(|u| u.arrived).count();
    println!("benign domestic trips completed: {travellers}");
    eval_times.sort();
    let mean = eval_times.iter().sum::<Duration>() / eval_times.len().max(1) as u32;
    let p99 = eval_times[(eval_times.len() * 99 / 100).min(eval_times.len() - 1)];
    let max = eval_times.last().copied().unwrap_or_default();
    println!(
        "evaluate per tick: mean {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        mean.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    let snap = monitor.snapshot();
    println!(
        "snapshot: {} users, {} routes, {} open incidents, dropped {:?}",
        snap.users.len(),
        snap.routes.len(),
        snap.incidents.len(),
        snap.dropped
    );
    for f in &false_examples {
        println!(
            "false alarm example: {} {} {}",
            f.rule,
            f.subject,
            serde_json::Value::Object(f.evidence.clone())
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !all_caught {
        println!("NOTE: some incidents were missed");
    }
}
