//! The `keygate scan` command end to end (in-process): exit codes, formats, masking,
//! baselines, inline allows, user rules, fingerprints, .gitignore, binary skipping.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs;

use common::{Gen, scan};
use serde_json::Value;

fn tree() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_str().unwrap().to_string();
    (dir, p)
}

#[test]
fn clean_tree_exits_0_and_prints_a_summary() {
    let (dir, p) = tree();
    fs::write(
        dir.path().join("main.rs"),
        "fn main() { println!(\"hi\"); }\n",
    )
    .unwrap();
    let r = scan(&[&p]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.is_empty());
    assert!(r.err.contains("scanned 1 files"), "{}", r.err);
    assert!(r.err.contains("MB/s"), "{}", r.err);
}

#[test]
fn findings_exit_1_with_masked_secret_location_and_rule() {
    let (dir, p) = tree();
    let mut g = Gen::new(1);
    let key = g.github();
    fs::create_dir(dir.path().join("src")).unwrap();
    fs::write(
        dir.path().join("src/ci.sh"),
        format!("#!/bin/sh\n\nexport GITHUB_TOKEN={key}\n"),
    )
    .unwrap();
    let r = scan(&[&p]);
    assert_eq!(r.code, 1);
    assert!(!r.out.contains(&key), "secret printed: {}", r.out);
    assert!(!r.err.contains(&key));
    assert!(
        r.out
            .contains("src/ci.sh:3:21: github-pat-token [high] ghp_…"),
        "{}",
        r.out
    );
    let masked = format!("{}…{}", &key[..4], &key[key.len() - 3..]);
    assert!(r.out.contains(&masked), "{}", r.out);
}

#[test]
fn json_output_holds_findings_and_never_the_secret() {
    let (dir, p) = tree();
    let mut g = Gen::new(2);
    let key = g.stripe();
    fs::write(
        dir.path().join("pay.py"),
        format!("stripe.api_key = '{key}'\n"),
    )
    .unwrap();
    let r = scan(&[&p, "--format", "json"]);
    assert_eq!(r.code, 1);
    assert!(!r.out.contains(&key));
    let v: Value = serde_json::from_str(&r.out).unwrap();
    let f = &v["findings"][0];
    assert_eq!(f["rule_id"], "stripe-secret-key");
    assert_eq!(f["line"], 1);
    assert!(f["path"].as_str().unwrap().ends_with("pay.py"));
    assert_eq!(v["summary"]["findings"], 1);
}

/// SARIF 2.1.0 structure, checked against the requirements of the OASIS standard
/// (sections 3.13 sarifLog, 3.14 run, 3.18 toolComponent, 3.27 result, 3.28 location,
/// 3.30 region, 3.49 reportingDescriptor, 3.58 notification). The official JSON schema
/// cannot be fetched in this environment, so these are hand-written checks of the
/// properties it requires and the value constraints it states.
fn assert_valid_sarif(v: &Value) {
    let levels = ["none", "note", "warning", "error"];
    assert_eq!(v["version"], "2.1.0");
    assert!(
        v["$schema"]
            .as_str()
            .unwrap()
            .ends_with("sarif-schema-2.1.0.json")
    );
    let obj = v.as_object().unwrap();
    for k in obj.keys() {
        assert!(
            [
                "version",
                "$schema",
                "runs",
                "inlineExternalProperties",
                "properties"
            ]
            .contains(&k.as_str()),
            "unknown sarifLog property {k}"
        );
    }
    let runs = v["runs"].as_array().unwrap();
    assert!(!runs.is_empty());
    for run in runs {
        let driver = &run["tool"]["driver"];
        assert!(!driver["name"].as_str().unwrap().is_empty());
        let rules = driver["rules"].as_array().unwrap();
        let mut ids = std::collections::HashSet::new();
        for r in rules {
            let id = r["id"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "duplicate rule id {id}");
            assert!(r["shortDescription"]["text"].is_string());
            assert!(levels.contains(&r["defaultConfiguration"]["level"].as_str().unwrap()));
        }
        for res in run["results"].as_array().unwrap() {
            assert!(
                res["message"]["text"].is_string(),
                "result.message.text is required"
            );
            let rid = res["ruleId"].as_str().unwrap();
            let idx = res["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(rules[idx]["id"], rid, "ruleIndex must point at ruleId");
            assert!(levels.contains(&res["level"].as_str().unwrap()));
            for loc in res["locations"].as_array().unwrap() {
                let uri = loc["physicalLocation"]["artifactLocation"]["uri"]
                    .as_str()
                    .unwrap();
                assert!(
                    !uri.contains(' ') && !uri.contains('\\'),
                    "uri must be a URI reference: {uri}"
                );
                if let Some(region) = loc["physicalLocation"].get("region") {
                    assert!(region["startLine"].as_u64().unwrap() >= 1);
                    if let Some(c) = region.get("startColumn") {
                        assert!(c.as_u64().unwrap() >= 1);
                    }
                }
            }
            for (_, fp) in res["partialFingerprints"].as_object().unwrap() {
                assert!(fp.is_string());
            }
        }
        for inv in run["invocations"].as_array().unwrap() {
            assert!(
                inv["executionSuccessful"].is_boolean(),
                "invocation.executionSuccessful is required"
            );
            for n in inv["toolExecutionNotifications"].as_array().unwrap() {
                assert!(n["message"]["text"].is_string());
                assert!(levels.contains(&n["level"].as_str().unwrap()));
            }
        }
    }
}

#[test]
fn sarif_output_is_valid_2_1_0() {
    let (dir, p) = tree();
    let mut g = Gen::new(3);
    fs::write(
        dir.path().join("a b.env"),
        format!(
            "AWS_ACCESS_KEY_ID={}\nOPENAI_API_KEY={}\n",
            g.aws(),
            g.openai()
        ),
    )
    .unwrap();
    fs::write(dir.path().join("broken.zip"), b"PK\x03\x04garbage").unwrap();
    let r = scan(&[&p, "--format", "sarif"]);
    assert_eq!(r.code, 1);
    let v: Value = serde_json::from_str(&r.out).unwrap();
    assert_valid_sarif(&v);
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .contains("a%20b.env")
    );
    let notes = v["runs"][0]["invocations"][0]["toolExecutionNotifications"]
        .as_array()
        .unwrap();
    assert_eq!(notes.len(), 1, "the corrupt zip is reported: {notes:?}");
}

#[test]
fn sarif_checker_rejects_broken_documents() {
    // The checker itself must be able to fail.
    let bad = serde_json::json!({"version": "2.1.0", "$schema": "x/sarif-schema-2.1.0.json", "runs": [{"tool": {"driver": {"name": "x", "rules": []}}, "results": [{"ruleId": "a", "ruleIndex": 0, "level": "error"}], "invocations": []}]});
    assert!(std::panic::catch_unwind(|| assert_valid_sarif(&bad)).is_err());
}

#[test]
fn baseline_round_trip_survives_line_moves_and_catches_new_keys() {
    let (dir, p) = tree();
    let mut g = Gen::new(4);
    let old = g.github();
    let file = dir.path().join("config.yml");
    fs::write(&file, format!("token: {old}\n")).unwrap();
    let base = dir.path().join("baseline.json");
    let base_s = base.to_str().unwrap();
    let r = scan(&[&p, "--write-baseline", base_s]);
    assert_eq!(
        r.code, 0,
        "writing a baseline accepts the findings: {}",
        r.err
    );
    let text = fs::read_to_string(&base).unwrap();
    assert!(!text.contains(&old), "baseline holds the secret");
    assert!(text.contains("keygate-baseline/v1"));

    // The known key moves down three lines: still known.
    fs::write(&file, format!("# a\n# b\n# c\ntoken: {old}\n")).unwrap();
    let r = scan(&[&p, "--baseline", base_s]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.err.contains("1 known from the baseline"), "{}", r.err);

    // A new key is not.
    let new = g.github();
    fs::write(&file, format!("# a\ntoken: {old}\nother: {new}\n")).unwrap();
    let r = scan(&[&p, "--baseline", base_s]);
    assert_eq!(r.code, 1);
    assert_eq!(r.out.lines().count(), 1, "{}", r.out);
    assert!(r.out.contains("config.yml:3:"), "{}", r.out);
}

#[test]
fn inline_allow_suppresses_only_its_line() {
    let (dir, p) = tree();
    let mut g = Gen::new(5);
    fs::write(
        dir.path().join("keys.js"),
        format!(
            "const a = '{}'; // keygate:allow test fixture\nconst b = '{}';\n",
            g.google(),
            g.google()
        ),
    )
    .unwrap();
    let r = scan(&[&p]);
    assert_eq!(r.code, 1);
    assert_eq!(r.out.lines().count(), 1);
    assert!(r.out.contains("keys.js:2:"), "{}", r.out);
}

#[test]
fn gitignored_and_binary_files_are_skipped() {
    let (dir, p) = tree();
    let mut g = Gen::new(6);
    fs::write(dir.path().join(".gitignore"), "build/\n*.log\n").unwrap();
    fs::create_dir(dir.path().join("build")).unwrap();
    fs::write(dir.path().join("build/out.txt"), g.github()).unwrap();
    fs::write(dir.path().join("debug.log"), g.github()).unwrap();
    let mut bin = b"\x89PNG\r\n\x1a\n\0\0\0".to_vec();
    bin.extend_from_slice(g.github().as_bytes());
    fs::write(dir.path().join("logo.png"), bin).unwrap();
    fs::write(dir.path().join(".env"), format!("TOKEN={}\n", g.github())).unwrap();
    let r = scan(&[&p]);
    assert_eq!(r.code, 1);
    assert_eq!(r.out.lines().count(), 1, "only .env: {}", r.out);
    assert!(r.out.contains(".env:1:"), "{}", r.out);
    assert!(r.err.contains("1 binary files skipped"), "{}", r.err);
}

#[test]
fn user_rule_files_add_rules_and_bad_ones_exit_2() {
    let (dir, p) = tree();
    let rules = dir.path().join("acme.toml");
    fs::write(
        &rules,
        "[[rules]]\nid = \"acme-internal-token\"\nname = \"Acme token\"\nkeywords = [\"acme_tok_\"]\npattern = '\\b(acme_tok_[a-z0-9]{24})\\b'\nexamples = [\"acme_tok_abcdefghij0123456789klmn\"]\nnegatives = [\"acme_tok_short\"]\n",
    )
    .unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("x.txt"), "t = acme_tok_q8w7e6r5t4y3u2i1o9p8a7s6\n").unwrap();
    let r = scan(&[src.to_str().unwrap(), "--rules", rules.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.err);
    assert!(r.out.contains("acme-internal-token"));

    let r = scan(&["rules", "check", "--rules", rules.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(r.out.contains("0 failed"), "{}", r.out);

    fs::write(&rules, "[[rules]]\nid = \"x\"\n").unwrap();
    let r = scan(&[&p, "--rules", rules.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert_eq!(r.err.lines().count(), 1, "one-line error: {}", r.err);
    assert!(r.err.starts_with("keygate scan: error: "), "{}", r.err);
}

#[test]
fn builtin_rules_check_passes_and_lists_over_100_rules() {
    let r = scan(&["rules", "check"]);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(r.out.trim_end().ends_with("0 failed"), "{}", r.out);
    let r = scan(&["rules", "list"]);
    assert_eq!(r.code, 0);
    assert!(r.out.lines().count() >= 100);
}

#[test]
fn missing_path_is_a_warning_and_bad_fingerprints_file_is_an_error() {
    let (dir, p) = tree();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let r = scan(&[&format!("{p}/nope")]);
    assert_eq!(r.code, 0);
    assert!(
        r.err.contains("warning:") && r.err.contains("nope"),
        "{}",
        r.err
    );
    let fp = dir.path().join("fp.json");
    fs::write(&fp, "{\"format\":\"wrong\"}").unwrap();
    let r = scan(&[
        src.to_str().unwrap(),
        "--fingerprints",
        fp.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
}

#[test]
fn managed_secret_is_reported_with_rotation_hint_and_never_shown() {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let (dir, _) = tree();
    // A managed value that a provider rule also matches: reported once, as managed.
    let value = Gen::new(13).github();
    let value = value.as_str();
    let key = [42u8; 32];
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(value.as_bytes());
    let doc = serde_json::json!({
        "format": "keygate-fingerprints/v1",
        "key": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        "secrets": [{"name": "maps", "version": 7, "length": value.len(),
                     "fingerprint": hex::encode(mac.finalize().into_bytes())}],
    });
    let fp = dir.path().join("fp.json");
    fs::write(&fp, doc.to_string()).unwrap();
    let src = dir.path().join("app");
    fs::create_dir(&src).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    fs::write(
        src.join("a.kt"),
        format!(
            "val k = \"{value}\"\nval e = \"{b64}\"\nval h = \"{}\"\n",
            hex::encode(value)
        ),
    )
    .unwrap();
    let r = scan(&[
        src.to_str().unwrap(),
        "--fingerprints",
        fp.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1);
    assert_eq!(r.out.lines().count(), 3, "{}", r.out);
    for line in r.out.lines() {
        assert!(
            line.contains("managed secret maps (version 7) leaked"),
            "{line}"
        );
        assert!(line.contains("keygate secret put maps --stdin"), "{line}");
        assert!(!line.contains(&value[..8]), "value shown: {line}");
    }
}
