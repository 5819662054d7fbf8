//! The admin API's OpenAPI description against the server that serves it: every
//! operation it names is served and refuses a caller without an admin token, and the
//! document says what the handlers check. (`schemathesis` fuzzes the same document in
//! `.ci/run`; these tests hold the properties it cannot see.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

async fn document(app: &TestApp) -> Value {
    let r = app
        .http
        .get(format!("{}/admin/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// Each documented (method, path), with `{param}` filled with a harmless value.
fn operations(doc: &Value) -> Vec<(Method, String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let filled = path
                .replace("{name}", "probe")
                .replace("{id}", "probe")
                .replace("{subject}", "user:probe");
            out.push((m, filled, op["operationId"].as_str().unwrap().to_owned()));
        }
    }
    out
}

#[tokio::test]
async fn the_served_document_describes_every_admin_operation_with_its_auth_and_errors() {
    let mut app = TestApp::spawn().await;
    let doc = document(&app).await;
    // The same document the CLI prints (`keygate openapi`).
    assert_eq!(
        doc,
        serde_json::to_value(keygate_server::admin::openapi()).unwrap()
    );
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["security"], json!([{"admin_token": []}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );

    let ops = operations(&doc);
    // The CLI's whole surface: 48 operations on 37 paths when this was written. A route
    // added without a description cannot exist (the routers are built from the
    // descriptions); this guards against a module's router dropping out of the merge.
    assert!(ops.len() >= 48, "only {} operations described", ops.len());
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with("/admin/v1/"), "{path}");
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{what}"
            );
            assert_eq!(op["tags"].as_array().map(Vec::len), Some(1), "{what}");
            let responses = op["responses"].as_object().unwrap();
            for code in ["200", "401", "403", "429", "503"] {
                assert!(
                    responses.contains_key(code),
                    "{what} does not document {code}"
                );
            }
            for (code, r) in responses {
                if code != "200" {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{what} {code}"
                    );
                }
            }
            if op.get("requestBody").is_some() {
                for code in ["400", "413", "415"] {
                    assert!(
                        responses.contains_key(code),
                        "{what} takes a body but does not document {code}"
                    );
                }
            }
            // Every `{param}` of the path is a described, required path parameter.
            for param in path
                .split('{')
                .skip(1)
                .map(|p| p.split('}').next().unwrap())
            {
                let described = op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == param && p["in"] == "path" && p["required"] == true);
                assert!(described, "{what}: `{param}` is not described");
            }
        }
    }

    // Every described operation is served, and refuses a caller without a token.
    for (method, path, id) in &ops {
        let r = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        // 429 once the failures from this address pass the limit: the same guard.
        assert!(
            matches!(
                r.status(),
                StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
            ),
            "{id} ({method} {path}) answered {} without a token",
            r.status()
        );
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{id}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_schema_carries_the_rules_the_handlers_enforce() {
    let mut app = TestApp::spawn().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    let param = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
            .clone()
    };

    // A secret's name: the pattern says what the vault's parser says.
    let pattern = param("/admin/v1/secrets/{name}", "get", "name")["pattern"]
        .as_str()
        .unwrap()
        .to_owned();
    let re = regex::Regex::new(&pattern).unwrap();
    for name in ["openai", "a", "prod.openai-key_2", &"x".repeat(128)] {
        assert!(re.is_match(name), "{name}");
        assert!(keygate_vault::SecretName::parse(name).is_ok(), "{name}");
    }
    for name in ["", "-lead", ".x", "has space", "ü", &"x".repeat(129)] {
        assert!(!re.is_match(name), "{name:?}");
        assert!(keygate_vault::SecretName::parse(name).is_err(), "{name:?}");
    }

    // Bounds: the schema's and the handler's agree at the edges.
    let limit = param("/admin/v1/audit", "get", "limit");
    assert_eq!(
        (limit["minimum"].clone(), limit["maximum"].clone()),
        (json!(1), json!(1000))
    );
    let audit = |q: &str| {
        let url = format!("{}/admin/v1/audit?{q}", app.base);
        let req = app.http.get(url).bearer_auth(app.token.expose_secret());
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(audit("limit=1000").await, StatusCode::OK);
    assert_eq!(audit("limit=1001").await, StatusCode::BAD_REQUEST);
    assert_eq!(audit("after=0").await, StatusCode::OK);
    assert_eq!(audit("after=-1").await, StatusCode::BAD_REQUEST);

    // A segment that is not UTF-8 once decoded: the API's error body, naming nothing.
    let r = app
        .http
        .get(format!("{}/admin/v1/secrets/%FF", app.base))
        .bearer_auth(app.token.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_request", "{body}");

    // Secret-bearing fields are plain strings in the schema, never an object.
    assert_eq!(
        schemas["PutSecret"]["properties"]["value"]["type"],
        "string"
    );
    assert_eq!(schemas["PutSecret"]["additionalProperties"], false);
    assert_eq!(schemas["AddUser"]["properties"]["password"]["minLength"], 8);
    app.stop().await;
}

#[tokio::test]
async fn a_check_and_set_that_no_version_can_match_is_refused_not_a_dropped_connection() {
    // Found by schemathesis: `cas` = i64::MAX made the version counter overflow, which
    // panicked the handler and closed the connection without an answer.
    let mut app = TestApp::spawn().await;
    for cas in [i64::MAX, -1] {
        let (status, body) = app.put("fuzzed", json!({"value": "v", "cas": cas})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "cas {cas}: {body}");
        assert!(body["message"].as_str().unwrap().contains("cas"), "{body}");
    }
    let (status, _) = app.put("fuzzed", json!({"value": "v", "cas": 0})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get("/admin/v1/secrets/fuzzed").await;
    assert_eq!(
        (status, body["version"].clone()),
        (StatusCode::OK, json!(1))
    );
    app.stop().await;
}
