//! The console's pages, as `maud` templates: every value is escaped by construction, and
//! no page holds a secret value, a token or a password.

use std::collections::HashMap;

use keygate_audit::AuditEntry;
use keygate_store::{
    AlertRecord, FamilyRecord, RotationSchedule, SecretMeta, UsageRow, UserRecord,
};
use maud::{DOCTYPE, Markup, html};

use super::Operator;
use crate::admin::api::AuditVerification;

/// A moment for people: UTC, to the second.
fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

const NAV: [(&str, &str); 8] = [
    ("/console/overview", "Overview"),
    ("/console/secrets", "Secrets"),
    ("/console/routes", "Routes"),
    ("/console/clients", "Clients"),
    ("/console/sessions", "Users and sessions"),
    ("/console/audit", "Audit"),
    ("/console/alerts", "Alerts"),
    ("/console/posture", "Posture"),
];

/// The inside of `<head>` (the doctype comes before `<html>`, in each page).
fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · keygate console" }
        link rel="stylesheet" href="/console/assets/console.css";
        script src="/console/assets/console.js" defer {}
    }
}

/// A signed-in page: the navigation, the operator, sign-out, and `body`.
fn layout(op: &Operator, current: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "keygate" }
                    nav aria-label="Console" {
                        ul {
                            @for (href, label) in NAV {
                                li {
                                    @if href == current {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.signout method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(op.csrf);
                        span.who { (op.admin.name) @if op.read_only() { " (read-only)" } }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page for someone not signed in (sealed vault, store down, throttled).
pub fn message_page(title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body.narrow {
                main id="main" {
                    h1 { (title) }
                    p role="alert" { (text) }
                    p { a href="/console/login" { "Sign in" } }
                }
            }
        }
    }
}

/// An action refused or failed, said plainly; nothing was changed.
pub fn refusal_page(op: &Operator, title: &str, text: &str) -> Markup {
    layout(
        op,
        "",
        title,
        html! { p.msg role="alert" { (text) } p { a href="/console/overview" { "Back to the overview" } } },
    )
}

pub fn login_page(csrf: &str, message: Option<&str>, name: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head("Sign in")) }
            body.narrow {
                main id="main" {
                    h1 { "keygate console" }
                    @if let Some(m) = message {
                        p.msg role="alert" { (m) }
                    }
                    form method="post" action="/console/login" {
                        input type="hidden" name="csrf" value=(csrf);
                        label { "Name" input name="name" autocomplete="username" autocapitalize="none" required value=(name); }
                        label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                        label { "Code from your authenticator app"
                            input name="code" inputmode="numeric" pattern="[0-9]*" autocomplete="one-time-code" required;
                        }
                        button type="submit" { "Sign in" }
                    }
                    p.small { "Console accounts are made with " code { "keygate admin add" } "." }
                }
            }
        }
    }
}

/// A user's name by id (the id itself when the user is gone).
fn user_name(users: &[UserRecord], id: &str) -> String {
    users
        .iter()
        .find(|u| u.id == id)
        .map_or_else(|| id.to_owned(), |u| u.name.clone())
}

/// What the overview shows, from the per-minute usage rows.
pub struct UsageStats {
    /// Calls per minute over the last hour, oldest first (60 entries).
    pub per_minute: Vec<i64>,
    pub hour: Totals,
    pub day: Totals,
    /// The five busiest users and routes over the day: (name, calls).
    pub top_users: Vec<(String, i64)>,
    pub top_routes: Vec<(String, i64)>,
}

#[derive(Default)]
pub struct Totals {
    pub calls: i64,
    pub client_errors: i64,
    pub rate_limited: i64,
    pub server_errors: i64,
}

impl Totals {
    fn add(&mut self, r: &UsageRow) {
        self.calls += r.calls;
        match r.status_class.as_str() {
            "4xx" => self.client_errors += r.calls,
            "429" => self.rate_limited += r.calls,
            "5xx" => self.server_errors += r.calls,
            _ => {}
        }
    }
}

fn top(map: HashMap<&str, i64>) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = map.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(5);
    v
}

impl UsageStats {
    pub fn from_rows(rows: &[UsageRow], minute_now: i64) -> Self {
        let mut per_minute = vec![0_i64; 60];
        let (mut hour, mut day) = (Totals::default(), Totals::default());
        let (mut users, mut routes) = (HashMap::new(), HashMap::new());
        for r in rows {
            let age = minute_now - r.minute;
            if !(0..24 * 60).contains(&age) {
                continue;
            }
            day.add(r);
            *users.entry(r.user_id.as_str()).or_insert(0) += r.calls;
            *routes.entry(r.route.as_str()).or_insert(0) += r.calls;
            if age < 60 {
                hour.add(r);
                if let Some(slot) = usize::try_from(59 - age)
                    .ok()
                    .and_then(|i| per_minute.get_mut(i))
                {
                    *slot += r.calls;
                }
            }
        }
        Self {
            per_minute,
            hour,
            day,
            top_users: top(users),
            top_routes: top(routes),
        }
    }
}

/// Calls per minute over the last hour, as bars: inline SVG with presentation attributes
/// only (the policy allows no inline style).
fn chart(per_minute: &[i64]) -> Markup {
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1);
    let (w, h) = (600_i64, 120_i64);
    let bar = w / i64::try_from(per_minute.len().max(1)).unwrap_or(60);
    let total: i64 = per_minute.iter().sum();
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {w} {h}")) role="img" aria-labelledby="chart-title" preserveAspectRatio="none" {
                title id="chart-title" { "Proxied calls per minute, last 60 minutes: " (total) " in all, at most " (max) " in a minute" }
                @for (i, n) in per_minute.iter().enumerate() {
                    @let height = n * (h - 4) / max;
                    rect x=(i64::try_from(i).unwrap_or(0) * bar) y=(h - height) width=((bar - 1).max(1)) height=(height) fill="#1a5fd0" {}
                }
                line x1="0" y1=(h - 1) x2=(w) y2=(h - 1) stroke="#888" stroke-width="1" {}
            }
            figcaption { "Proxied calls per minute, last 60 minutes (peak " (max) ")" }
        }
    }
}

fn totals_row(label: &str, t: &Totals) -> Markup {
    html! {
        tr { th scope="row" { (label) } td { (t.calls) } td { (t.rate_limited) } td { (t.client_errors) } td { (t.server_errors) } }
    }
}

pub fn overview_page(
    op: &Operator,
    stats: &UsageStats,
    open_alerts: &[AlertRecord],
    users: &[UserRecord],
) -> Markup {
    // Usage is recorded by user id; operators know names.
    let name_of = |id: &str| user_name(users, id);
    let body = html! {
        section aria-labelledby="traffic" {
            h2 id="traffic" { "Traffic" }
            (chart(&stats.per_minute))
            div.scroll {
                table {
                    thead { tr { th { "" } th scope="col" { "Calls" } th scope="col" { "Rate-limited (429)" } th scope="col" { "Other refusals (4xx)" } th scope="col" { "Errors (5xx)" } } }
                    tbody {
                        (totals_row("Last hour", &stats.hour))
                        (totals_row("Last 24 hours", &stats.day))
                    }
                }
            }
        }
        div.cols {
            section aria-labelledby="top-users" {
                h2 id="top-users" { "Busiest users (24 h)" }
                @if stats.top_users.is_empty() { p { "No calls yet." } }
                ol { @for (u, n) in &stats.top_users { li { (name_of(u)) " — " (n) } } }
            }
            section aria-labelledby="top-routes" {
                h2 id="top-routes" { "Busiest routes (24 h)" }
                @if stats.top_routes.is_empty() { p { "No calls yet." } }
                ol { @for (r, n) in &stats.top_routes { li { code { (r) } " — " (n) } } }
            }
        }
        section aria-labelledby="open-alerts" {
            h2 id="open-alerts" { "Open alerts" }
            @if open_alerts.is_empty() {
                p { "None." }
            } @else {
                ul { @for a in open_alerts {
                    li { (when(a.created_ms)) " — " strong { (a.rule) } " on " code { (a.subject) } " (" (a.action) ")" }
                } }
                p { a href="/console/alerts" { "All alerts" } }
            }
        }
    };
    layout(op, "/console/overview", "Overview", body)
}

/// The line a page shows after an action it redirected to (`?done=…`).
pub fn done_banner(done: Option<&str>) -> Markup {
    let text = match done {
        Some("revoked") => "Session revoked.",
        Some("disabled") => "User disabled; their sessions are revoked.",
        Some("rotated") => "Secret rotated.",
        Some("acked") => "Alert acknowledged.",
        _ => return html! {},
    };
    html! { p.ok role="status" { (text) } }
}

pub fn secrets_page(
    op: &Operator,
    secrets: &[SecretMeta],
    schedules: &[RotationSchedule],
    now: i64,
    done: Option<&str>,
) -> Markup {
    let schedule_of = |name: &str| schedules.iter().find(|s| s.secret == name);
    let body = html! {
        (done_banner(done))
        p { "Names, versions and rotation only: values are never shown on these pages." }
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Version" } th scope="col" { "Updated" }
                    th scope="col" { "State" } th scope="col" { "Rotation" } th scope="col" { span.sr { "Action" } }
                } }
                tbody {
                    @for s in secrets {
                        tr {
                            td { code { (s.name) } }
                            td { (s.current_version) }
                            td { (when(s.updated_ms)) }
                            td { @if s.deleted_ms.is_some() { "deleted" } @else { "live" } }
                            td {
                                @match schedule_of(&s.name) {
                                    Some(r) => {
                                        "every " (humantime::format_duration(std::time::Duration::from_millis(u64::try_from(r.every_ms).unwrap_or(0))))
                                        ", next " (when(r.next_due_ms))
                                        @if r.next_due_ms < now { strong.warn { " (overdue)" } }
                                        @if let Some(e) = &r.last_error { br; span.warn { "last attempt failed: " (e) } }
                                        form method="post" action=(format!("/console/secrets/{}/rotate", s.name)) data-confirm="Rotate this secret now, through its hook?" {
                                            input type="hidden" name="csrf" value=(op.csrf);
                                            button type="submit" disabled[op.read_only()] aria-label=(format!("Rotate {} now", s.name)) { "Rotate now" }
                                        }
                                    }
                                    None => { span.warn { "no schedule" } }
                                }
                            }
                            td {
                                @if s.deleted_ms.is_none() && s.current_version > 0 {
                                    form method="post" action=(format!("/console/secrets/{}/reveal", s.name)) {
                                        input type="hidden" name="csrf" value=(op.csrf);
                                        button type="submit" disabled[op.read_only()] aria-label=(format!("Reveal {}", s.name)) { "Reveal…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if secrets.is_empty() { p { "No secrets yet: " code { "keygate secret put NAME" } "." } }
    };
    layout(op, "/console/secrets", "Secrets", body)
}

pub fn sessions_page(
    op: &Operator,
    users: &[UserRecord],
    families: &[FamilyRecord],
    done: Option<&str>,
) -> Markup {
    let name_of = |id: &str| user_name(users, id);
    let body = html! {
        (done_banner(done))
        section aria-labelledby="live" {
            h2 id="live" { "Live sessions" }
            p { "Revoking a session stops its refresh token and its access tokens at the next call." }
            div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "User" } th scope="col" { "App" } th scope="col" { "Signed in" }
                        th scope="col" { "Last used" } th scope="col" { "Bound key" } th scope="col" { span.sr { "Action" } }
                    } }
                    tbody {
                        @for f in families {
                            tr {
                                td { (name_of(&f.user_id)) }
                                td { code { (f.client_id) } }
                                td { (when(f.created_ms)) }
                                td { (when(f.last_used_ms)) }
                                td { @if f.jkt.is_some() { "DPoP" } @else { "none (Bearer)" } }
                                td {
                                    form method="post" action=(format!("/console/sessions/{}/revoke", f.id)) data-confirm="Revoke this session? The app will have to sign in again." {
                                        input type="hidden" name="csrf" value=(op.csrf);
                                        button.danger type="submit" disabled[op.read_only()] aria-label=(format!("Revoke the session of {} in {}", name_of(&f.user_id), f.client_id)) { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if families.is_empty() { p { "No live sessions." } }
        }
        section aria-labelledby="users" {
            h2 id="users" { "Users" }
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "MFA" } th scope="col" { "State" } th scope="col" { span.sr { "Action" } } } }
                    tbody {
                        @for u in users {
                            tr {
                                td { (u.name) }
                                td { @if u.totp_sealed.is_some() { "TOTP" } @else { span.warn { "none" } } }
                                td { @if u.disabled_ms.is_some() { "disabled" } @else { "active" } }
                                td {
                                    @if u.disabled_ms.is_none() {
                                        form method="post" action=(format!("/console/users/{}/disable", u.name)) data-confirm="Disable this user? Every session of theirs is revoked at once." {
                                            input type="hidden" name="csrf" value=(op.csrf);
                                            button.danger type="submit" disabled[op.read_only()] aria-label=(format!("Disable {}", u.name)) { "Disable" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(op, "/console/sessions", "Users and sessions", body)
}

/// The audit page's search and results.
pub struct AuditView<'a> {
    pub search: &'a super::AuditSearch,
    pub problems: &'a [String],
    pub entries: &'a [AuditEntry],
    pub verification: Option<&'a AuditVerification>,
}

pub fn audit_page(op: &Operator, v: &AuditView<'_>) -> Markup {
    let body = html! {
        form.search method="get" action="/console/audit" role="search" {
            label { "Actor contains" input name="actor" value=(v.search.actor); }
            label { "Action starts with" input name="action" value=(v.search.action) placeholder="secret."; }
            label { "Outcome"
                select name="outcome" {
                    @for o in ["", "success", "failure", "denied"] {
                        option value=(o) selected[o == v.search.outcome] { @if o.is_empty() { "any" } @else { (o) } }
                    }
                }
            }
            label { "From (UTC)" input name="from" type="datetime-local" value=(v.search.from); }
            label { "To (UTC)" input name="to" type="datetime-local" value=(v.search.to); }
            button type="submit" { "Search" }
        }
        form method="get" action="/console/audit" {
            input type="hidden" name="verify" value="1";
            button type="submit" { "Verify the chain" }
        }
        @for p in v.problems { p.msg role="alert" { "Search not run: " (p) "." } }
        @if let Some(ver) = v.verification {
            @if ver.ok {
                p.ok role="status" { "The chain is intact: " (ver.entries.unwrap_or(0)) " entries, " (ver.checkpoints_checked.unwrap_or(0)) " signed checkpoints checked." }
            } @else {
                p.msg role="alert" { "The chain is broken" @if let Some(Some(seq)) = ver.first_bad_seq { " at entry " (seq) } ": " (ver.error.clone().unwrap_or_default()) }
            }
            @for w in &ver.warnings { p.warn { (w) } }
        }
        p.small { "Newest first; the last 5,000 entries are searched, at most 200 shown." }
        div.scroll {
            table.audit {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Actor" }
                    th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Outcome" } th scope="col" { "Details" }
                } }
                tbody {
                    @for e in v.entries {
                        tr {
                            td { (e.seq) }
                            td { (when(e.ts_ms)) }
                            td { code { (e.actor) } }
                            td { code { (e.action) } }
                            td { (e.target.clone().unwrap_or_default()) }
                            td { (e.outcome.as_str()) }
                            td { code.details { (e.details) } }
                        }
                    }
                }
            }
        }
        @if v.entries.is_empty() && v.problems.is_empty() { p { "No entries match." } }
    };
    layout(op, "/console/audit", "Audit", body)
}

pub fn alerts_page(op: &Operator, alerts: &[AlertRecord], done: Option<&str>) -> Markup {
    let body = html! {
        (done_banner(done))
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Rule" } th scope="col" { "Subject" }
                    th scope="col" { "Action taken" } th scope="col" { "State" }
                } }
                tbody {
                    @for a in alerts {
                        tr {
                            td { (when(a.created_ms)) }
                            td { (a.rule) " " span.small { "(" (a.kind) ")" } }
                            td { code { (a.subject) } }
                            td { (a.action) }
                            td {
                                @match (&a.acked_ms, &a.acked_by) {
                                    (Some(at), by) => { "acknowledged " (when(*at)) @if let Some(by) = by { " by " (by) } }
                                    (None, _) => {
                                        form method="post" action=(format!("/console/alerts/{}/ack", a.id)) {
                                            input type="hidden" name="csrf" value=(op.csrf);
                                            button type="submit" disabled[op.read_only()] aria-label=(format!("Acknowledge the {} alert on {}", a.rule, a.subject)) { "Acknowledge" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if alerts.is_empty() { p { "No alerts." } }
    };
    layout(op, "/console/alerts", "Alerts", body)
}

/// The posture report (`keygate check`'s items, graded on this server's own facts).
pub fn posture_page(op: &Operator, r: &crate::posture::Report) -> Markup {
    use crate::posture::Grade;
    let body = html! {
        p.summary role="status" {
            strong { (r.summary.pass) " pass, " (r.summary.warn) " warn, " (r.summary.fail) " fail" }
            " — the same items as " code { "keygate check" } ", from this server's own configuration and state. "
            "The pre-commit hook of a repository is checked only by " code { "keygate check --repo" } "."
        }
        div.scroll {
            table.posture {
                thead { tr { th scope="col" { "Grade" } th scope="col" { "Practice" } th scope="col" { "Evidence" } } }
                tbody {
                    @for i in &r.items {
                        tr {
                            td {
                                @match i.grade {
                                    Grade::Pass => span.grade.pass { "PASS" },
                                    Grade::Warn => span.grade.warn { "WARN" },
                                    Grade::Fail => span.grade.fail { "FAIL" },
                                }
                            }
                            td { (i.title) br; code.small { (i.id) } }
                            td { (i.evidence) }
                        }
                    }
                }
            }
        }
    };
    layout(op, "/console/posture", "Posture", body)
}

/// The step before a value is shown: what will happen, and a second button.
pub fn reveal_confirm_page(op: &Operator, name: &str) -> Markup {
    let body = html! {
        p { "Show the current value of " code { (name) } " on the next page?" }
        p { "The read is recorded in the audit log under your name. The value is shown once: it is not cached, and a reload or the back button does not show it again." }
        form method="post" action=(format!("/console/secrets/{name}/reveal")) {
            input type="hidden" name="csrf" value=(op.csrf);
            input type="hidden" name="confirm" value="yes";
            button.danger type="submit" { "Reveal the value" }
        }
        p { a href="/console/secrets" { "Cancel" } }
    };
    layout(op, "/console/secrets", "Reveal a secret", body)
}

/// The one page that holds a secret value.
pub fn revealed_page(
    op: &Operator,
    name: &str,
    version: i64,
    value: &secrecy::SecretString,
) -> Markup {
    use secrecy::ExposeSecret;
    let body = html! {
        p { code { (name) } ", version " (version) ":" }
        pre.revealed { code { (value.expose_secret()) } }
        p.small { "This read is in the audit log. Leave this page when you are done: " a href="/console/secrets" { "back to secrets" } "." }
    };
    layout(op, "/console/secrets", "Secret value", body)
}

/// A live route as the routes page shows it: the API's view, and its limits.
pub struct RouteRow {
    pub info: crate::admin::api::RouteInfo,
    pub limits: Option<keygate_proxy::route::RawLimits>,
}

pub fn routes_page(op: &Operator, routes: &[RouteRow]) -> Markup {
    let body = html! {
        p { "What the proxy forwards: each route's upstream, the calls it allows, the scopes a token needs, the key it injects (by name) and the limits per caller." }
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { "Route" } th scope="col" { "Upstream" } th scope="col" { "Allowed calls" }
                    th scope="col" { "Scopes" } th scope="col" { "Key" } th scope="col" { "Limits" } th scope="col" { "From" }
                } }
                tbody {
                    @for r in routes {
                        tr {
                            td { code { (r.info.name) } }
                            td { code { (r.info.upstream) } }
                            td { @for a in &r.info.allow { code { (a) } br; } }
                            td { @if r.info.scopes.is_empty() { span.warn { "any token" } } @else { (r.info.scopes.join(", ")) } }
                            td { code { (r.info.secret) } }
                            td {
                                @match &r.limits {
                                    Some(l) if l.rate.is_some() || l.quota.is_some() => {
                                        @if let Some(rate) = &l.rate { "rate " (rate) br; }
                                        @if let Some(quota) = &l.quota { "quota " (quota) br; }
                                        "per " (l.per.clone().unwrap_or_else(|| "user".into()))
                                    }
                                    _ => { span.warn { "none" } }
                                }
                            }
                            td { (r.info.source) }
                        }
                    }
                }
            }
        }
        @if routes.is_empty() { p { "No routes: the proxy forwards nothing." } }
    };
    layout(op, "/console/routes", "Routes", body)
}

pub fn clients_page(op: &Operator, clients: &[(keygate_store::ClientRecord, bool)]) -> Markup {
    let body = html! {
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { "Client" } th scope="col" { "Name" } th scope="col" { "Type" }
                    th scope="col" { "Redirect URIs" } th scope="col" { "Scopes" } th scope="col" { "DPoP" }
                } }
                tbody {
                    @for (c, dpop_required) in clients {
                        tr {
                            td { code { (c.id) } }
                            td { (c.display_name.clone().unwrap_or_else(|| c.name.clone())) }
                            td { (c.kind) @if let Some(m) = &c.auth_method { br; span.small { (m) } } }
                            td { @for u in &c.redirect_uris { code { (u) } br; } }
                            td { (c.scopes) }
                            td { @if *dpop_required { "required" } @else { span.warn { "optional (Bearer allowed)" } } }
                        }
                    }
                }
            }
        }
        @if clients.is_empty() { p { "No clients: " code { "keygate client add" } "." } }
    };
    layout(op, "/console/clients", "Clients", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(minute: i64, user: &str, route: &str, class: &str, calls: i64) -> UsageRow {
        UsageRow {
            minute,
            user_id: user.into(),
            route: route.into(),
            status_class: class.into(),
            calls,
            latency_ms_sum: 0,
            latency_ms_max: 0,
        }
    }

    #[test]
    fn usage_adds_up_per_hour_and_day_with_rate_limits_apart() {
        let now = 1_000_000;
        let rows = [
            row(now, "u1", "chat", "2xx", 10),
            row(now, "u1", "chat", "429", 3),
            row(now - 5, "u2", "maps", "4xx", 2),
            row(now - 59, "u2", "maps", "5xx", 1),
            row(now - 60, "u3", "chat", "2xx", 100), // out of the hour, in the day
            row(now - 24 * 60, "u4", "chat", "2xx", 1000), // out of the day
        ];
        let s = UsageStats::from_rows(&rows, now);
        assert_eq!(
            (
                s.hour.calls,
                s.hour.rate_limited,
                s.hour.client_errors,
                s.hour.server_errors
            ),
            (16, 3, 2, 1)
        );
        assert_eq!(s.day.calls, 116);
        assert_eq!(s.per_minute.len(), 60);
        assert_eq!(
            (s.per_minute[59], s.per_minute[54], s.per_minute[0]),
            (13, 2, 1)
        );
        assert_eq!(s.top_users[0], ("u3".to_owned(), 100));
        assert_eq!(s.top_routes[0], ("chat".to_owned(), 113));
    }
}
