//! `keygate check`: grades a deployment against the practices keygate is built on, one
//! line per item with pass / warn / fail and the evidence (the grading is
//! [`keygate_server::posture`], which the console shows too).
//!
//! Facts come from three places: the configuration file (and the files it names: the
//! master key, the checkpoint file), the running server's admin API (routes, clients,
//! secrets and their rotation, the audit chain; `KEYGATE_ADDR`, else the config's
//! `public_url`, with `KEYGATE_TOKEN`), and, with `--repo`, a git repository's hooks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use keygate_server::admin::api::{
    AuditVerification, ClientList, RotationList, RouteList, RouteShown, SecretList,
};
use keygate_server::config::Config;
use keygate_server::oauth::DPOP_OPTIONAL;
use keygate_server::posture::{Facts, Grade, LiveFacts, Report, RouteFacts, ScheduleFacts};
use secrecy::SecretString;

use crate::client::AdminClient;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  keygate check --config /etc/keygate/keygate.toml\n  keygate check --config keygate.toml --repo ~/src/app --format sarif > keygate-check.sarif\n\nThe running server is asked through its admin API: KEYGATE_ADDR (default: the config's\npublic_url) and KEYGATE_TOKEN. Without them the items that need the server are warnings.\nExit status: 0 when nothing fails (warnings allowed), 1 when an item fails, 2 on usage\nerrors."
)]
pub struct CheckArgs {
    /// The server's configuration file
    #[arg(long, default_value = "keygate.toml")]
    config: PathBuf,
    /// Also check that this git repository has keygate's pre-commit hook
    #[arg(long)]
    repo: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    format: CheckFormat,
}

/// `--format` of `keygate check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
    Sarif,
}

pub async fn run(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let config =
        Config::load(&a.config).with_context(|| format!("reading {}", a.config.display()))?;
    let (server, live) = ask_server(&config).await;
    let repo = a.repo.map(|dir| {
        let hook = keygate_scan::hook::installed(&dir).map_err(|e| e.to_string());
        (dir, hook)
    });
    let facts = Facts::gather(&config, live, repo);
    let report = Report::new(
        a.config.display().to_string(),
        server,
        keygate_server::posture::grade(&facts),
    );
    match a.format {
        CheckFormat::Text => print_text(&report),
        CheckFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        CheckFormat::Sarif => println!("{}", serde_json::to_string_pretty(&sarif(&report))?),
    }
    Ok(if report.summary.fail > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The admin API's address and what it said (or why it was not asked).
async fn ask_server(config: &Config) -> (Option<String>, Result<LiveFacts, String>) {
    let base = std::env::var("KEYGATE_ADDR")
        .unwrap_or_else(|_| config.public_url.as_str().trim_end_matches('/').to_owned());
    let Ok(token) = std::env::var("KEYGATE_TOKEN") else {
        return (
            None,
            Err("not checked: KEYGATE_TOKEN is not set, so the server was not asked".into()),
        );
    };
    let api = match AdminClient::new(&base, SecretString::from(token)) {
        Ok(api) => api,
        Err(e) => return (None, Err(format!("not checked: {e}"))),
    };
    let live = ask_live(&api)
        .await
        .map_err(|e| format!("not checked: the admin API at {base} did not answer: {e:#}"));
    (Some(base), live)
}

/// The facts only the running server knows, through its admin API.
async fn ask_live(api: &AdminClient) -> anyhow::Result<LiveFacts> {
    {
        // The list names the routes; each one's limits are only in the route as written.
        let routes: RouteList = api.get("/admin/v1/routes").await?;
        let mut route_facts = Vec::new();
        for r in &routes.routes {
            let shown: RouteShown = api.get(&format!("/admin/v1/routes/{}", r.name)).await?;
            route_facts.push(RouteFacts::of(&r.name, &shown.route));
        }
        let clients: ClientList = api.get("/admin/v1/clients").await?;
        let secrets: SecretList = api.get("/admin/v1/secrets").await?;
        let rotation: RotationList = api.get("/admin/v1/rotation").await?;
        let audit: AuditVerification = api.get("/admin/v1/audit/verify").await?;
        Ok(LiveFacts {
            routes: route_facts,
            bearer_clients: clients
                .clients
                .into_iter()
                .filter(|c| c.dpop.as_deref() == Some(DPOP_OPTIONAL))
                .map(|c| c.client_id)
                .collect(),
            secrets: secrets
                .secrets
                .into_iter()
                .filter(|s| !s.deleted)
                .map(|s| s.name)
                .collect(),
            schedules: rotation
                .schedules
                .into_iter()
                .map(|s| ScheduleFacts {
                    secret: s.secret,
                    rotate_every: s.rotate_every,
                    overdue: s.overdue,
                    last_error: s.last_error,
                })
                .collect(),
            audit,
        })
    }
}

fn print_text(r: &Report) {
    match &r.server {
        Some(s) => println!("keygate check: {} and the server at {s}", r.config),
        None => println!("keygate check: {} (server not asked)", r.config),
    }
    let width = r.items.iter().map(|i| i.id.len()).max().unwrap_or(0);
    for i in &r.items {
        println!(
            "{}  {:<width$}  {}: {}",
            i.grade.label(),
            i.id,
            i.title,
            i.evidence
        );
    }
    println!(
        "{} pass, {} warn, {} fail",
        r.summary.pass, r.summary.warn, r.summary.fail
    );
}

/// SARIF 2.1.0: one rule per item, one result per item (`kind: pass` for passes), all
/// located at the configuration file.
fn sarif(r: &Report) -> serde_json::Value {
    use serde_json::json;
    let rules: Vec<_> = r
        .items
        .iter()
        .map(|i| json!({"id": i.id, "shortDescription": {"text": i.title}}))
        .collect();
    let results: Vec<_> = r
        .items
        .iter()
        .map(|i| {
            let (kind, level) = match i.grade {
                Grade::Pass => ("pass", "none"),
                Grade::Warn => ("fail", "warning"),
                Grade::Fail => ("fail", "error"),
            };
            json!({
                "ruleId": i.id,
                "kind": kind,
                "level": level,
                "message": {"text": format!("{}: {}", i.title, i.evidence)},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": r.config}}}],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "keygate check", "version": env!("CARGO_PKG_VERSION"), "rules": rules}},
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_server::posture::Item;

    #[test]
    fn sarif_has_a_rule_and_a_result_per_item() {
        let item = |id: &'static str, grade: Grade| Item {
            id,
            title: "a practice",
            grade,
            evidence: "seen".into(),
        };
        let report = Report::new(
            "keygate.toml".into(),
            None,
            vec![
                item("routes.token", Grade::Pass),
                item("tokens.dpop", Grade::Fail),
            ],
        );
        assert_eq!(report.summary.fail, 1);
        let s = sarif(&report);
        assert_eq!(s["version"], "2.1.0");
        let results = s["runs"][0]["results"].as_array().unwrap();
        assert_eq!(results.len(), report.items.len());
        let dpop = results
            .iter()
            .find(|r| r["ruleId"] == "tokens.dpop")
            .unwrap();
        assert_eq!(dpop["level"], "error");
        assert_eq!(dpop["kind"], "fail");
        assert_eq!(
            s["runs"][0]["tool"]["driver"]["rules"]
                .as_array()
                .unwrap()
                .len(),
            report.items.len()
        );
    }
}
