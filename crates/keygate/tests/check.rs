//! `keygate check` against real deployments: a deliberately weak one fails with the
//! expected items, one set up as the README says passes everything a loopback deployment
//! can, and the JSON keeps its shape.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::{Setup, stderr, stdout};
use serde_json::Value;

/// Runs `keygate check` with the admin API of `setup` and `extra` arguments.
fn check(setup: &Setup, extra: &[&str]) -> (Output, Value) {
    let config = setup.config.display().to_string();
    let mut args = vec!["check", "--config", config.as_str(), "--format", "json"];
    args.extend_from_slice(extra);
    let out = setup.cli(&args, None);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    (out, v)
}

fn grade(report: &Value, id: &str) -> String {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no item {id} in {report}"))["grade"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(ok.success());
    dir
}

fn rotation_hook(setup: &Setup) -> String {
    let hook = setup.dir.path().join("next.sh");
    std::fs::write(&hook, "#!/bin/sh\nread v; echo \"${v}-next\"\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "\n[rotation.hooks.next]\ncommand = [\"{}\"]\n",
        hook.display()
    )
}

/// Applies one `openai` route through the CLI, with `extra` TOML lines (e.g. limits).
fn apply_openai_route(setup: &Setup, extra: &str) {
    let routes = setup.dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "[routes.openai]\nupstream = \"https://api.openai.com\"\nsecret = \"openai\"\n\
             inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
             allow = [\"POST /v1/chat/completions\"]\nscopes = [\"ai\"]\n{extra}"
        ),
    )
    .unwrap();
    let applied = setup.cli(&["route", "apply", routes.to_str().unwrap()], None);
    assert!(applied.status.success(), "{}", stderr(&applied));
}

fn edit_config(setup: &Setup, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, edit(text)).unwrap();
}

#[test]
fn a_weak_deployment_fails_with_the_expected_items() {
    let setup = Setup::new();
    edit_config(&setup, |t| {
        let t = t
            .replace("access_ttl  = \"5m\"", "access_ttl  = \"1h\"")
            .replace("dpop        = \"required\"", "dpop        = \"optional\"");
        assert!(t.contains("\"1h\"") && t.contains("\"optional\""), "{t}");
        format!("{t}\n[monitor]\nenabled = false\n")
    });
    let log = setup.dir.path().join("server.log");
    let server = setup.serve(&log, &[]);
    let put = setup.cli(&["secret", "put", "openai", "--stdin"], Some("sk-weak\n"));
    assert!(put.status.success(), "{}", stderr(&put));
    let legacy = setup.cli(
        &[
            "client",
            "add",
            "legacy",
            "--public",
            "--redirect-uri",
            "com.example.legacy:/cb",
            "--scopes",
            "ai",
            "--dpop",
            "optional",
        ],
        None,
    );
    assert!(legacy.status.success(), "{}", stderr(&legacy));
    apply_openai_route(&setup, "");
    // After start: `serve` refuses a world-readable key, a later chmod is what check sees.
    let key = setup.dir.path().join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let repo = git_repo();

    let (out, report) = check(&setup, &["--repo", repo.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for (id, want) in [
        ("tokens.access_ttl", "fail"),
        ("tokens.dpop", "fail"),
        ("monitor.rules", "fail"),
        ("master_key", "fail"),
        ("scan.hook", "fail"),
        ("clients.dpop", "warn"),
        ("secrets.rotation", "warn"),
        ("routes.limits", "warn"),
        ("audit.chain", "pass"),
        ("routes.token", "pass"),
    ] {
        assert_eq!(grade(&report, id), want, "{id}: {report}");
    }
    assert_eq!(report["summary"]["fail"], 5, "{report}");
    // The evidence names what is wrong, and never holds a secret.
    let text = report.to_string();
    assert!(
        text.contains("legacy-"),
        "the exempt client is named: {text}"
    );
    assert!(text.contains("mode 0644"), "{text}");
    assert!(!text.contains("sk-weak") && !text.contains(&setup.token));

    // The JSON's shape is stable: these keys, in this order.
    let keys: Vec<&String> = report.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["config", "items", "server", "summary", "version"]);
    assert_eq!(report["version"], 1);
    for item in report["items"].as_array().unwrap() {
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["evidence", "grade", "id", "title"], "{item}");
    }

    // Text and SARIF say the same (without --repo: no hook item, four failures).
    let config = setup.config.display().to_string();
    let text = setup.cli(&["check", "--config", &config], None);
    assert_eq!(text.status.code(), Some(1));
    let out = stdout(&text);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL  tokens.dpop") && l.contains("optional")),
        "{out}"
    );
    assert!(out.trim_end().ends_with("4 fail"), "{out}");
    let sarif = setup.cli(&["check", "--config", &config, "--format", "sarif"], None);
    let v: Value = serde_json::from_slice(&sarif.stdout).unwrap();
    let errors = v["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["level"] == "error")
        .count();
    assert_eq!(errors, 4, "{v}");
    server.stop();
}

#[test]
fn a_deployment_set_up_as_the_readme_says_passes_what_loopback_can() {
    let setup = Setup::new();
    let hook = rotation_hook(&setup);
    edit_config(&setup, |t| {
        format!(
            "{t}{hook}\n[[monitor.webhooks]]\nurl = \"http://127.0.0.1:9/keygate\"\nevents = [\"alert\"]\nsecret = \"webhook-key\"\n"
        )
    });
    let log = setup.dir.path().join("server.log");
    let server = setup.serve(&log, &[]);
    for (name, value) in [("openai", "sk-strong\n"), ("webhook-key", "whk-strong\n")] {
        let put = setup.cli(&["secret", "put", name, "--stdin"], Some(value));
        assert!(put.status.success(), "{}", stderr(&put));
        let sched = setup.cli(
            &[
                "secret", "schedule", name, "--every", "30d", "--hook", "next",
            ],
            None,
        );
        assert!(sched.status.success(), "{}", stderr(&sched));
    }
    apply_openai_route(
        &setup,
        "limits = { rate = \"20/min\", burst = 5, per = \"user\" }\n",
    );
    let repo = git_repo();
    let hooked = common::keygate()
        .args(["hook", "install", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert!(hooked.status.success(), "{}", stderr(&hooked));
    // The server writes a checkpoint every second here (the test harness's setting).
    std::thread::sleep(std::time::Duration::from_millis(1500));

    let (out, report) = check(&setup, &["--repo", repo.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{report}");
    // On loopback without [tls], HSTS and pins are for the TLS proxy in front to do.
    for item in report["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let want = if matches!(id, "tls.hsts" | "tls.pins") {
            "warn"
        } else {
            "pass"
        };
        assert_eq!(item["grade"], want, "{item}");
    }
    assert_eq!(report["summary"]["fail"], 0);
    assert_eq!(report["summary"]["warn"], 2);
    server.stop();
}

#[test]
fn without_a_server_the_live_items_warn_and_say_why() {
    let setup = Setup::new();
    let config = setup.config.display().to_string();
    // No KEYGATE_TOKEN: nothing is asked, nothing passes for lack of evidence.
    let out = common::keygate()
        .args(["check", "--config", &config, "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["server"], Value::Null);
    for id in ["clients.dpop", "secrets.rotation", "audit.chain"] {
        assert_eq!(grade(&report, id), "warn", "{id}");
    }
    // A configuration that does not load is a one-line error naming the field.
    edit_config(&setup, |t| {
        t.replace("access_ttl  = \"5m\"", "access_ttl  = \"5y\"")
    });
    let out = common::keygate()
        .args(["check", "--config", &config])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("tokens.access_ttl"),
        "{}",
        stderr(&out)
    );
}
