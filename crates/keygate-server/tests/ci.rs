//! Machine identities over real HTTP: a CI job's OIDC ID token (signed here by
//! `jsonwebtoken` with a key whose JWKS the test publishes as the CI issuer's) logs in at
//! `/ci/v1/login` and its machine token reads exactly what its policy grants; every
//! refusal with its status and code; static machine credentials with client_credentials
//! and rotation with an overlap; the audit names repository and ref, never a token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::TestApp;
use common::idp::idp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const GH_ISS: &str = "https://token.actions.githubusercontent.com";
const AUD: &str = "https://keygate.test";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A GitHub Actions-shaped job token's claims.
fn job(jti: &str, repository: &str, git_ref: &str) -> Value {
    let t = now();
    json!({
        "iss": GH_ISS, "aud": AUD, "iat": t - 5, "nbf": t - 5, "exp": t + 300,
        "jti": jti,
        "sub": format!("repo:{repository}:ref:{git_ref}"),
        "repository": repository, "repository_owner": "acme", "ref": git_ref,
        "ref_type": "branch", "run_id": "4242", "run_attempt": "1", "workflow": "deploy",
        "actor": "octocat", "event_name": "push",
    })
}

fn ci_config(dir: &Path) {
    std::fs::write(dir.join("gh-jwks.json"), idp().jwks(&["gh1"])).unwrap();
    let path = dir.join("keygate.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(&format!(
        r#"
[[ci.issuers]]
name       = "github"
issuer     = "{GH_ISS}"
audience   = "{AUD}"
jwks_file  = "gh-jwks.json"
algorithms = ["RS256"]

[[ci.issuers.bindings]]
policy = "deploy"
claims = {{ repository = "acme/app", ref = "refs/heads/main" }}

[[ci.issuers.bindings]]
policy = "release"
claims = {{ repository = "acme/app", ref = "refs/tags/v*" }}

[[ci.issuers.bindings]]
policy = "missing-policy"
claims = {{ repository = "acme/other" }}
"#
    ));
    std::fs::write(path, config).unwrap();
}

async fn ci_app(postgres: Option<&str>) -> Option<TestApp> {
    TestApp::spawn_prepared(postgres, ci_config, &[]).await
}

async fn login(app: &TestApp, token: &str) -> (StatusCode, Value) {
    let resp = app
        .http
        .post(format!("{}/ci/v1/login", app.base))
        .json(&json!({ "id_token": token }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    if status == StatusCode::OK {
        assert_eq!(
            resp.headers()["cache-control"],
            "no-store",
            "a token response is never cached"
        );
    }
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn as_machine(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let resp = app
        .http
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn audit_text(app: &TestApp) -> String {
    let (s, audit) = app.get("/admin/v1/audit?tail=500").await;
    assert_eq!(s, StatusCode::OK);
    audit.to_string()
}

/// Secrets and policies the tests read.
async fn seed(app: &TestApp) {
    for (name, value) in [
        ("deploy.stripe", "sk_live_stripe_value_1"),
        ("deploy.maps", "maps-key-value-2"),
        ("prod.db", "db-password-value-3"),
    ] {
        let (s, _) = app.put(name, json!({ "value": value })).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _) = app
        .put(
            "deploy.stripe",
            json!({ "value": "sk_live_stripe_value_1b" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "deploy.stripe now has two versions");
    let (s, body) = app
        .call(
            Method::PUT,
            "/admin/v1/policies/deploy",
            Some(json!({ "secrets": ["deploy.*"], "token_ttl_secs": 600 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["created"], true);
    assert_eq!(body["warnings"], json!([]));
}

async fn a_ci_job_reads_exactly_its_policy(app: &TestApp) {
    seed(app).await;
    let id_token = idp().token("gh1", &job("run-4242-1", "acme/app", "refs/heads/main"));
    let (s, body) = login(app, &id_token).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kgm_"), "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600, "the policy's lifetime");
    assert_eq!(body["policy"], "deploy");
    assert_eq!(
        body["identity"],
        "ci:github:repo:acme/app:ref:refs/heads/main"
    );

    // What it may read: the policy's secrets and nothing else.
    let (s, list) = as_machine(app, &token, "/ci/v1/secrets").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let names: Vec<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deploy.maps", "deploy.stripe"]);
    let (s, v) = as_machine(app, &token, "/ci/v1/secrets/deploy.stripe").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["value"], "sk_live_stripe_value_1b");
    assert_eq!(v["version"], 2);
    let (s, v) = as_machine(app, &token, "/ci/v1/secrets/deploy.maps").await;
    assert_eq!(
        (s, v["value"].as_str()),
        (StatusCode::OK, Some("maps-key-value-2"))
    );

    // Outside the policy: 403, audited.
    let (s, v) = as_machine(app, &token, "/ci/v1/secrets/prod.db").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"], "forbidden");
    assert!(!v.to_string().contains("db-password"), "{v}");
    // An older version needs `any_version`.
    let (s, v) = as_machine(app, &token, "/ci/v1/secrets/deploy.stripe?version=1").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = as_machine(app, &token, "/ci/v1/secrets/deploy.stripe?version=2").await;
    assert_eq!(s, StatusCode::OK, "naming the current version is fine");

    // The admin API and the proxy are not for machine tokens.
    for path in [
        "/admin/v1/secrets",
        "/admin/v1/secrets/deploy.stripe",
        "/admin/v1/policies",
    ] {
        let (s, v) = as_machine(app, &token, path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("machine token"),
            "{v}"
        );
    }

    // Audit: the login and reads name the job (repository, ref, run) and never a token.
    let audit = audit_text(app).await;
    for expected in [
        "ci.login",
        "\"repository\":\"acme/app\"",
        "\"ref\":\"refs/heads/main\"",
        "\"run_id\":\"4242\"",
        "ci:github:repo:acme/app:ref:refs/heads/main",
    ] {
        assert!(audit.contains(expected), "audit lacks {expected}");
    }
    let reads: Vec<&str> = audit.matches("\"action\":\"secret.read\"").collect();
    assert!(reads.len() >= 5, "allowed and refused reads are audited");
    assert!(audit.contains("does not grant secret `prod.db`"));
    assert!(
        audit.contains("admin.auth"),
        "the 403 on the admin API is audited"
    );
    assert!(
        !audit.contains(&token),
        "the machine token is not in the audit"
    );
    assert!(
        !audit.contains(&id_token),
        "the ID token is not in the audit"
    );
    assert!(!audit.contains(&token["kgm_".len()..]));

    // A narrower policy takes effect for a token already issued.
    let (s, _) = app
        .call(
            Method::PUT,
            "/admin/v1/policies/deploy",
            Some(json!({ "secrets": ["deploy.maps"] })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = as_machine(app, &token, "/ci/v1/secrets/deploy.stripe").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Deleting the policy ends its tokens.
    let (s, _) = app
        .call(Method::DELETE, "/admin/v1/policies/deploy", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = as_machine(app, &token, "/ci/v1/secrets/deploy.maps").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"], "invalid_token");
}

#[tokio::test]
async fn a_ci_job_reads_exactly_its_policy_sqlite() {
    let mut app = ci_app(None).await.unwrap();
    a_ci_job_reads_exactly_its_policy(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_ci_job_reads_exactly_its_policy_postgres() {
    let Some(mut app) = ci_app(Some("ci_reads")).await else {
        eprintln!("skipped: KEYGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    a_ci_job_reads_exactly_its_policy(&app).await;
    app.stop().await;
}

/// Signs `claims` with a header of the test's choosing (for `none` and HS256).
fn forged(alg: &str, claims: &Value, signature: &[u8]) -> String {
    use common::idp::b64;
    let header = json!({ "alg": alg, "typ": "JWT", "kid": "gh1" });
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

#[tokio::test]
async fn every_bad_id_token_is_refused_with_its_reason_and_audited() {
    let mut app = ci_app(None).await.unwrap();
    seed(&app).await;
    let ok = job("j-ok", "acme/app", "refs/heads/main");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = ok.clone();
        f(&mut c);
        c
    };
    let hs = {
        use hmac::{Hmac, Mac};
        let claims = with(&|c| c["jti"] = "j-hs".into());
        let unsigned = forged("HS256", &claims, b"");
        let input = unsigned.rsplit_once('.').unwrap().0.to_owned();
        // The HMAC key an attacker would try: the issuer's public key text.
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(idp().public_pem.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", common::idp::b64(&mac.finalize().into_bytes()))
    };
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "untrusted issuer",
            idp().token("gh1", &with(&|c| c["iss"] = "https://evil.example".into())),
            StatusCode::UNAUTHORIZED,
            "untrusted_issuer",
        ),
        (
            "wrong audience",
            idp().token("gh1", &with(&|c| c["aud"] = "https://other.test".into())),
            StatusCode::UNAUTHORIZED,
            "invalid_id_token",
        ),
        (
            "expired",
            idp().token(
                "gh1",
                &with(&|c| {
                    c["iat"] = (now() - 900).into();
                    c["nbf"] = (now() - 900).into();
                    c["exp"] = (now() - 600).into();
                }),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_id_token",
        ),
        (
            "alg none",
            forged("none", &with(&|c| c["jti"] = "j-none".into()), b""),
            StatusCode::UNAUTHORIZED,
            "invalid_id_token",
        ),
        (
            "HS256 with the public key",
            hs,
            StatusCode::UNAUTHORIZED,
            "invalid_id_token",
        ),
        (
            "unknown key",
            idp().token("other-kid", &with(&|c| c["jti"] = "j-kid".into())),
            StatusCode::UNAUTHORIZED,
            "invalid_id_token",
        ),
        (
            "no jti",
            idp().token(
                "gh1",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("jti");
                }),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_id_token",
        ),
        (
            "claims match no binding (another repository)",
            idp().token("gh1", &job("j-b1", "mallory/app", "refs/heads/main")),
            StatusCode::FORBIDDEN,
            "no_binding",
        ),
        (
            "claims match no binding (a feature branch)",
            idp().token("gh1", &job("j-b2", "acme/app", "refs/heads/feature")),
            StatusCode::FORBIDDEN,
            "no_binding",
        ),
        (
            "binding names a missing policy",
            idp().token("gh1", &job("j-b3", "acme/other", "refs/heads/main")),
            StatusCode::FORBIDDEN,
            "no_policy",
        ),
        (
            "not a JWT",
            "not-a-jwt".to_owned(),
            StatusCode::UNAUTHORIZED,
            "invalid_id_token",
        ),
    ];
    for (what, token, status, code) in &cases {
        let (s, body) = login(&app, token).await;
        assert_eq!(s, *status, "{what}: {body}");
        assert_eq!(body["error"], *code, "{what}: {body}");
        assert!(
            !body.to_string().contains(token.as_str()),
            "{what}: the answer repeats the token"
        );
    }
    // Replay: the same job token logs in once.
    let once = idp().token("gh1", &job("j-replay", "acme/app", "refs/heads/main"));
    assert_eq!(login(&app, &once).await.0, StatusCode::OK);
    let (s, body) = login(&app, &once).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("replayed"))
    );
    // Glob binding: a tag build gets the release policy, which does not exist yet.
    let tag = idp().token("gh1", &job("j-tag", "acme/app", "refs/tags/v1.2.0"));
    let (s, body) = login(&app, &tag).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("no_policy")),
        "{body}"
    );

    // Malformed bodies: a clear 400 or 415, and nothing of the input echoed.
    let resp = app
        .http
        .post(format!("{}/ci/v1/login", app.base))
        .json(&json!({ "token": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = app
        .http
        .post(format!("{}/ci/v1/login", app.base))
        .body("id_token=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Refusals of genuine job tokens are each audited with the job's claims; made-up
    // tokens once per source and window, the rest of the burst counted (see the 429 test).
    let audit = audit_text(&app).await;
    let denied = audit.matches("\"action\":\"ci.login\"").count();
    assert!(denied >= 7, "{denied} ci.login entries");
    for reason in [
        "replay",
        "no binding",
        "does not exist",
        "issuer is not trusted",
        "mallory/app",
        "refs/tags/v1.2.0",
    ] {
        assert!(audit.contains(reason), "audit lacks `{reason}`");
    }
    for (_, token, _, _) in &cases {
        if token.len() > 20 {
            assert!(
                !audit.contains(token.as_str()),
                "a refused ID token is in the audit"
            );
        }
    }
    app.stop().await;
}

async fn client_credentials(app: &TestApp, id: &str, secret: &str) -> (StatusCode, Value) {
    let resp = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_machine_credential_logs_in_and_rotates_with_an_overlap_sqlite() {
    let mut app = ci_app(None).await.unwrap();
    machine_credentials(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_machine_credential_logs_in_and_rotates_with_an_overlap_postgres() {
    let Some(mut app) = ci_app(Some("ci_machines")).await else {
        eprintln!("skipped: KEYGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    machine_credentials(&app).await;
    app.stop().await;
}

async fn machine_credentials(app: &TestApp) {
    seed(app).await;
    // A machine needs an existing policy.
    let (s, v) = app
        .call(
            Method::POST,
            "/admin/v1/machines",
            Some(json!({ "name": "billing-worker", "policy": "nope" })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("no policy named `nope`")
    );

    let (s, m) = app
        .call(
            Method::POST,
            "/admin/v1/machines",
            Some(json!({ "name": "billing-worker", "policy": "deploy" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    let id = m["client_id"].as_str().unwrap().to_owned();
    let secret = m["client_secret"].as_str().unwrap().to_owned();
    assert!(id.starts_with("m_") && secret.starts_with("kgs_"), "{m}");
    let (s, again) = app
        .call(
            Method::POST,
            "/admin/v1/machines",
            Some(json!({ "name": "billing-worker", "policy": "deploy" })),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");
    // Listed and shown without the secret.
    let (_, list) = app.get("/admin/v1/machines").await;
    assert_eq!(list["machines"][0]["name"], "billing-worker");
    assert!(list["machines"][0].get("client_secret").is_none());

    let (s, t) = client_credentials(app, &id, &secret).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let token = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(t["identity"], "machine:billing-worker");
    let (s, v) = as_machine(app, &token, "/ci/v1/secrets/deploy.maps").await;
    assert_eq!(
        (s, v["value"].as_str()),
        (StatusCode::OK, Some("maps-key-value-2"))
    );
    let (s, _) = as_machine(app, &token, "/ci/v1/secrets/prod.db").await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Wrong secret, unknown id: invalid_client, audited for a known machine.
    let (s, v) = client_credentials(app, &id, "kgs_wrong").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (s, _) = client_credentials(app, "m_000000000000000000000000", &secret).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Rotation with an overlap: both secrets work; then rotation without one: only new.
    let (s, r) = app
        .call(
            Method::POST,
            "/admin/v1/machines/billing-worker/rotate",
            Some(json!({ "overlap_secs": 600 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let second = r["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(second, secret);
    assert_eq!(
        client_credentials(app, &id, &secret).await.0,
        StatusCode::OK
    );
    assert_eq!(
        client_credentials(app, &id, &second).await.0,
        StatusCode::OK
    );
    let (s, r) = app
        .call(
            Method::POST,
            "/admin/v1/machines/billing-worker/rotate",
            Some(json!({ "overlap_secs": 0 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let third = r["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(
        client_credentials(app, &id, &second).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client_credentials(app, &id, &secret).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(client_credentials(app, &id, &third).await.0, StatusCode::OK);

    // Deleting the machine ends its tokens at once.
    let (s, _) = app
        .call(Method::DELETE, "/admin/v1/machines/billing-worker", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        as_machine(app, &token, "/ci/v1/secrets").await.0,
        StatusCode::UNAUTHORIZED
    );

    let audit = audit_text(app).await;
    for action in [
        "machine.add",
        "machine.login",
        "machine.rotate",
        "machine.delete",
    ] {
        assert!(audit.contains(action), "audit lacks {action}");
    }
    for s in [&secret, &second, &third, &token] {
        assert!(!audit.contains(s.as_str()), "a credential is in the audit");
    }
}

#[tokio::test]
async fn policies_validate_their_input_and_warn_about_what_they_cannot_see() {
    let mut app = ci_app(None).await.unwrap();
    seed(&app).await;
    let put = |name: &'static str, body: Value| {
        let app = &app;
        async move {
            app.call(
                Method::PUT,
                &format!("/admin/v1/policies/{name}"),
                Some(body),
            )
            .await
        }
    };
    let (s, v) = put("empty", json!({ "secrets": [] })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("grants no secret")
    );
    let (s, v) = put("future", json!({ "secrets": ["later.*", "deploy.maps"] })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["warnings"], json!(["`later.*` matches no secret (yet)"]));
    let (s, v) = put("bad", json!({ "secrets": ["pay*ments"] })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("may only end a pattern")
    );
    let (s, v) = put("bad", json!({ "secrets": ["x"], "token_ttl_secs": 86400 })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = put("bad", json!({ "secrets": ["x"], "extra": 1 })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app
        .call(
            Method::PUT,
            "/admin/v1/policies/bad%20name",
            Some(json!({ "secrets": [] })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, list) = app.get("/admin/v1/policies").await;
    let names: Vec<&str> = list["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deploy", "empty", "future"]);
    let (s, _) = app
        .call(Method::DELETE, "/admin/v1/policies/nope", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn made_up_tokens_are_aggregated_per_source_and_then_refused_with_429() {
    // The CI login's limit is ten times the admin API's: 10 here.
    let mut app = TestApp::spawn_prepared(
        None,
        ci_config,
        &[("KEYGATE_ADMIN__AUTH_FAILURE_LIMIT", "1")],
    )
    .await
    .unwrap();
    let count = |audit: String| audit.matches("\"action\":\"ci.login\"").count();
    let before = count(audit_text(&app).await);
    for i in 0..10 {
        let (s, body) = login(&app, &format!("garbage-{i}")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{i}: {body}");
    }
    let genuine = idp().token("gh1", &job("j-late", "acme/app", "refs/heads/main"));
    let (s, body) = login(&app, &genuine).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let resp = app
        .http
        .post(format!("{}/ci/v1/login", app.base))
        .json(&json!({ "id_token": "garbage" }))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    let after = count(audit_text(&app).await);
    assert_eq!(after - before, 1, "eleven refusals, one entry so far");
    app.stop().await;
    // At shutdown the rest of the burst is written as one entry with its count.
    let store = keygate_store::SqlStore::connect(&app.store_url())
        .await
        .unwrap();
    let entries = keygate_store::Store::audit_entries(&store, 0, 10_000)
        .await
        .unwrap();
    let burst = entries
        .iter()
        .rev()
        .find(|e| e.action == "ci.login")
        .unwrap();
    assert!(burst.details.contains("\"count\":11"), "{}", burst.details);
}
