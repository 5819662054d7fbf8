//! A small local HTTP server for the client's tests: it checks proofs with
//! keygate-auth's own verifier and asks for nonces. Not a stand-in for keygate in
//! end-to-end tests; the lead's server tests cover that.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use keygate_auth::dpop::{
    self, DpopConfig, InMemoryReplayCache, NonceIssuer, ProofRequest, PublicBaseUrl,
};
use keygate_auth::pkce::CodeChallenge;
use keygate_auth::{AuthError, Clock};
use keygate_client::{
    Client, ClientConfig, FixedClock, Jkt, MemoryKeyStore, MemoryTokenCache, UnixTime,
};
use secrecy::SecretBox;

pub const T0: UnixTime = UnixTime(1_800_000_000);
pub const REDIRECT: &str = "com.example.app:/oauth/callback";

#[derive(Default)]
pub struct Recorded {
    pub challenge: Option<String>,
    pub dpop_jkt: Option<String>,
    pub bound_jkt: Option<Jkt>,
    pub access: String,
    pub refresh: String,
    pub generation: u32,
    pub token_calls: u32,
    pub refresh_calls: u32,
    pub resource_calls: u32,
    pub revoked: Vec<(String, String)>,
    pub resource_nonces: Vec<Option<String>>,
    pub always_nonce: bool,
    pub refuse_refresh: bool,
    pub expires_in: i64,
}

pub struct Server {
    pub base: String,
    pub clock: Arc<FixedClock>,
    pub token_dpop: DpopConfig,
    pub resource_dpop: DpopConfig,
    pub replay: InMemoryReplayCache,
    pub state: Mutex<Recorded>,
}

fn nonce_config(base: &str, key: u8) -> DpopConfig {
    let mut config = DpopConfig::new(PublicBaseUrl::parse(base).unwrap());
    config.nonces = Some(NonceIssuer::new(SecretBox::new(Box::new([key; 32])), 300));
    config
}

fn json_error(status: StatusCode, e: Option<&AuthError>, code: &str) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(nonce) = e.and_then(|e| e.dpop_nonce()) {
        headers.insert("DPoP-Nonce", HeaderValue::from_str(nonce).unwrap());
    }
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let body = format!(r#"{{"error":"{code}","error_description":"generic"}}"#);
    (status, headers, body).into_response()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn metadata(State(s): State<Arc<Server>>) -> Response {
    let b = &s.base;
    let body = format!(
        r#"{{"issuer":"{b}","authorization_endpoint":"{b}/oauth2/authorize","token_endpoint":"{b}/oauth2/token",
        "revocation_endpoint":"{b}/oauth2/revoke","introspection_endpoint":"{b}/oauth2/introspect",
        "jwks_uri":"{b}/oauth2/jwks","dpop_signing_alg_values_supported":["EdDSA","ES256"]}}"#
    );
    ([("content-type", "application/json")], body).into_response()
}

async fn token(State(s): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = s.clock.now();
    let form = form(&body);
    let (expected_jkt, always_nonce) = {
        let mut st = s.state.lock().unwrap();
        st.token_calls += 1;
        let jkt = if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
            st.bound_jkt.clone()
        } else {
            None
        };
        (jkt, st.always_nonce)
    };
    if always_nonce {
        let fresh = format!("n{}", keygate_client::proof::new_jti());
        let mut resp = json_error(StatusCode::BAD_REQUEST, None, "use_dpop_nonce");
        resp.headers_mut()
            .insert("DPoP-Nonce", HeaderValue::from_str(&fresh).unwrap());
        return resp;
    }
    let proofs: Vec<&[u8]> = headers
        .get_all("dpop")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let request = ProofRequest {
        method: "POST",
        target: "/oauth2/token",
        dpop_headers: &proofs,
        access_token: None,
        expected_jkt: expected_jkt.as_ref(),
    };
    let verified = match dpop::verify_proof(&s.token_dpop, &request, &s.replay, now).await {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, Some(&e), e.code().as_str()),
    };
    let mut st = s.state.lock().unwrap();
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let challenge = CodeChallenge::parse(st.challenge.as_deref(), Some("S256")).unwrap();
            let ok = form.get("code").map(String::as_str) == Some("kgc_test")
                && form.get("client_id").map(String::as_str) == Some("ios-app")
                && form.get("redirect_uri").map(String::as_str) == Some(REDIRECT)
                && form
                    .get("code_verifier")
                    .is_some_and(|v| challenge.verify(v))
                && st.dpop_jkt.as_deref() == Some(verified.jkt().as_str());
            if !ok {
                return json_error(StatusCode::BAD_REQUEST, None, "invalid_grant");
            }
            st.bound_jkt = Some(verified.jkt().clone());
        }
        Some("refresh_token") => {
            st.refresh_calls += 1;
            let ok = !st.refuse_refresh
                && form.get("refresh_token") == Some(&st.refresh)
                && form.get("client_id").map(String::as_str) == Some("ios-app");
            if !ok {
                return json_error(StatusCode::BAD_REQUEST, None, "invalid_grant");
            }
        }
        _ => return json_error(StatusCode::BAD_REQUEST, None, "unsupported_grant_type"),
    }
    st.generation += 1;
    st.access = format!(
        "at-secret-{}-{}",
        st.generation,
        keygate_client::proof::new_jti()
    );
    st.refresh = format!(
        "kgr_secret-{}-{}",
        st.generation,
        keygate_client::proof::new_jti()
    );
    let body = serde_json::json!({
        "access_token": st.access,
        "token_type": "DPoP",
        "expires_in": st.expires_in,
        "refresh_token": st.refresh,
        "scope": "ai",
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}

/// Every answer carries the server clock's time in `Date`, as a real server's does.
async fn server_date(State(s): State<Arc<Server>>, mut response: Response) -> Response {
    let secs = u64::try_from(s.clock.now().0).unwrap();
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    response.headers_mut().insert(
        "date",
        HeaderValue::from_str(&httpdate::fmt_http_date(at)).unwrap(),
    );
    response
}

async fn revoke(State(s): State<Arc<Server>>, body: Bytes) -> Response {
    let form = form(&body);
    s.state.lock().unwrap().revoked.push((
        form.get("token").cloned().unwrap_or_default(),
        form.get("client_id").cloned().unwrap_or_default(),
    ));
    StatusCode::OK.into_response()
}

async fn resource(
    State(s): State<Arc<Server>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = s.clock.now();
    let (access, jkt, always_nonce) = {
        let mut st = s.state.lock().unwrap();
        st.resource_calls += 1;
        (st.access.clone(), st.bound_jkt.clone(), st.always_nonce)
    };
    if always_nonce {
        let fresh = format!("n{}", keygate_client::proof::new_jti());
        let headers = [
            (
                "WWW-Authenticate",
                "DPoP error=\"use_dpop_nonce\", algs=\"ES256\"".to_owned(),
            ),
            ("DPoP-Nonce", fresh),
        ];
        return (StatusCode::UNAUTHORIZED, headers).into_response();
    }
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DPoP "))
        .map(str::to_owned)
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if token != access {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let proofs: Vec<&[u8]> = headers
        .get_all("dpop")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let proof_nonce = proofs.first().and_then(|p| {
        let text = std::str::from_utf8(p).ok()?;
        let claims = keygate_auth::jws::parse_compact(text).ok()?.claims().ok()?;
        claims.get("nonce")?.as_str().map(str::to_owned)
    });
    s.state.lock().unwrap().resource_nonces.push(proof_nonce);
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = ProofRequest {
        method: method.as_str(),
        target,
        dpop_headers: &proofs,
        access_token: Some(&token),
        expected_jkt: jkt.as_ref(),
    };
    match dpop::verify_proof(&s.resource_dpop, &request, &s.replay, now).await {
        Ok(_) => (StatusCode::OK, body).into_response(),
        Err(e) => {
            let mut headers = HeaderMap::new();
            if let Some(challenge) = e.www_authenticate() {
                headers.insert(
                    "WWW-Authenticate",
                    HeaderValue::from_str(&challenge).unwrap(),
                );
            }
            if let Some(nonce) = e.dpop_nonce() {
                headers.insert("DPoP-Nonce", HeaderValue::from_str(nonce).unwrap());
            }
            (StatusCode::UNAUTHORIZED, headers).into_response()
        }
    }
}

pub async fn start() -> Arc<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = Arc::new(Server {
        clock: Arc::new(FixedClock::new(T0)),
        token_dpop: nonce_config(&base, 1),
        resource_dpop: nonce_config(&base, 2),
        replay: InMemoryReplayCache::new(10_000),
        state: Mutex::new(Recorded {
            expires_in: 300,
            ..Recorded::default()
        }),
        base,
    });
    let app = Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth2/token", post(token))
        .route("/oauth2/revoke", post(revoke))
        .route("/proxy/{*rest}", any(resource))
        .layer(axum::middleware::map_response_with_state(
            server.clone(),
            server_date,
        ))
        .with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    server
}

pub struct Setup {
    pub server: Arc<Server>,
    pub client: Client,
    pub cache: Arc<MemoryTokenCache>,
}

pub async fn client_for(server: &Arc<Server>) -> (Client, Arc<MemoryTokenCache>) {
    let config = ClientConfig::new(&server.base, "ios-app", REDIRECT).unwrap();
    let cache = Arc::new(MemoryTokenCache::new());
    let client = Client::builder(config, Arc::new(MemoryKeyStore::generate()), cache.clone())
        .clock(server.clock.clone())
        .discover()
        .await
        .unwrap();
    (client, cache)
}

/// Runs the front channel the way a browser and keygate's login page would.
pub async fn sign_in(server: &Arc<Server>, client: &Client) {
    let (url, pending) = client.authorization_url(&["ai"]).unwrap();
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    {
        let mut st = server.state.lock().unwrap();
        st.challenge = Some(q["code_challenge"].clone());
        st.dpop_jkt = Some(q["dpop_jkt"].clone());
    }
    let callback = format!("{REDIRECT}?code=kgc_test&state={}", q["state"]);
    let signed_in = client
        .exchange_code(pending, &callback, None)
        .await
        .unwrap();
    assert_eq!(signed_in.scope.as_deref(), Some("ai"));
    assert_eq!(signed_in.expires_at, server.clock.now().plus(300));
}

pub async fn signed_in() -> Setup {
    let server = start().await;
    let (client, cache) = client_for(&server).await;
    sign_in(&server, &client).await;
    Setup {
        server,
        client,
        cache,
    }
}

pub fn calls(s: &Server) -> (u32, u32, u32) {
    let st = s.state.lock().unwrap();
    (st.token_calls, st.refresh_calls, st.resource_calls)
}
