//! Test harness: recording fake upstreams, a minimal proxy server wired exactly as the
//! keygate server will wire the engine, a real DPoP-verified `VerifiedAccess`, and a raw
//! TCP client for requests that well-behaved clients refuse to send.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate_auth::UnixTime;
use keygate_auth::access::{self, AccessGrant, AccessTokenConfig, VerifiedAccessToken};
use keygate_auth::dpop::{self, DpopConfig, InMemoryReplayCache, ProofClaims, PublicBaseUrl};
use keygate_auth::ids::{ClientId, ScopeSet, SessionId, UserId};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::{RotationPolicy, SigningKey, SigningKeySet};
use keygate_auth::resource::{
    self, ResourceRequest, ResourceVerifier, RevocationCheck, RevocationUnavailable, VerifiedAccess,
};
use keygate_proxy::forward::BoxError;
use keygate_proxy::h1guard::StrictHttp1;
use keygate_proxy::{
    AccessRequest, AccessVerifier, ForwarderConfig, Gatekeeper, GatekeeperConfig, KeySource,
    KeyUnavailable, LimitGate, RouteTable,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------
// A real VerifiedAccess (the proxy cannot be handed a forged one)
// ---------------------------------------------------------------------------------------

struct NothingRevoked;
impl RevocationCheck for NothingRevoked {
    fn is_revoked(
        &self,
        _: &VerifiedAccessToken,
    ) -> impl std::future::Future<Output = Result<bool, RevocationUnavailable>> + Send {
        std::future::ready(Ok(false))
    }
}

/// Runs the token service's resource check for `user` with `scopes`.
pub async fn verified_access(user: &str, scopes: &str) -> VerifiedAccess {
    verified_access_with_tier(user, scopes, None).await
}

/// [`verified_access`] for a token carrying the attestation tier `tier`.
pub async fn verified_access_with_tier(
    user: &str,
    scopes: &str,
    tier: Option<keygate_auth::access::TrustTier>,
) -> VerifiedAccess {
    let now = UnixTime(1_800_000_000);
    let keys = SigningKeySet::bootstrap(
        RotationPolicy::default(),
        SigningKey::generate(Algorithm::EdDsa),
        now,
    );
    let device = SigningKey::generate(Algorithm::Es256);
    let config =
        AccessTokenConfig::new("https://gate.example.com", "https://gate.example.com/proxy");
    let grant = AccessGrant {
        user: UserId::parse(user).unwrap(),
        client: ClientId::parse("ios-app").unwrap(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        session: SessionId::generate(),
        jkt: Some(device.verification_key().thumbprint()),
        x5t: None,
        tier,
    };
    let issued = access::issue(&config, &keys, &grant, now).unwrap();
    let token = issued.token.expose_secret();
    let proof = dpop::create_proof(
        &device,
        &ProofClaims {
            htm: "POST",
            htu: "https://gate.example.com/proxy/x",
            iat: now,
            jti: "test-jti",
            nonce: None,
            access_token: Some(token),
        },
    );
    let authorization = format!("DPoP {token}");
    let auth_headers: [&[u8]; 1] = [authorization.as_bytes()];
    let dpop_headers: [&[u8]; 1] = [proof.as_bytes()];
    let request = ResourceRequest {
        method: "POST",
        target: "/proxy/x",
        authorization: &auth_headers,
        dpop: &dpop_headers,
        client_cert: None,
    };
    let verifier = ResourceVerifier {
        access: config,
        dpop: DpopConfig::new(PublicBaseUrl::parse("https://gate.example.com").unwrap()),
        allow_unbound_bearer: false,
        token_cache: None,
    };
    let replay = InMemoryReplayCache::new(16);
    resource::verify_request(&verifier, &keys, &request, &replay, &NothingRevoked, now)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Recording fake upstream
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

type UpBody = UnsyncBoxBody<Bytes, BoxError>;

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// Behaviour by path (after any base path):
/// - `/sse`: one event, a 700 ms pause, then two more events.
/// - `/echo-error`: 401 whose body echoes the received `x-api-key`, query and
///   `authorization` in clear, base64 and URL-encoded form.
/// - `/big-error`: 500 with a 200 KiB body.
/// - `/slow`: answers after 3 s.
/// - `/redirect`: 302 to another host.
/// - anything else: 200 `ok` with `x-upstream-secret-echo` absent.
async fn upstream_service(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<UpBody>, Infallible> {
    let (parts, body) = req.into_parts();
    if parts.uri.path().ends_with("/duplex") {
        // Echo the request body frame by frame while it is still arriving.
        seen.lock().unwrap().push(Recorded {
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body: Bytes::new(),
        });
        return Ok(Response::new(
            body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync(),
        ));
    }
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    seen.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body,
    });
    let path = parts.uri.path().to_owned();
    let response = if path.ends_with("/sse") {
        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from_static(b"data: first\n\n")).await;
            tokio::time::sleep(Duration::from_millis(700)).await;
            let _ = tx.send_data(Bytes::from_static(b"data: second\n\n")).await;
            let _ = tx.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(rx.boxed_unsync())
            .unwrap()
    } else if path.ends_with("/echo-error") {
        use base64::Engine as _;
        let key = parts
            .headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let auth = parts
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
        let text = format!(
            "{{\"error\":\"invalid api key {key}\",\"b64\":\"{b64}\",\"auth\":\"{auth}\",\"query\":\"{target}\"}}"
        );
        Response::builder()
            .status(401)
            .header("x-debug-key", key.clone())
            .body(full(text))
            .unwrap()
    } else if path.ends_with("/gzip-error") {
        use std::io::Write as _;
        let key = parts
            .headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(format!("{{\"error\":\"key {key} revoked\"}}").as_bytes())
            .unwrap();
        Response::builder()
            .status(403)
            .header("content-encoding", "gzip")
            .body(full(gz.finish().unwrap()))
            .unwrap()
    } else if path.ends_with("/big-error") {
        Response::builder()
            .status(500)
            .body(full(vec![b'x'; 200 * 1024]))
            .unwrap()
    } else if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("late"))
    } else if path.ends_with("/redirect") {
        Response::builder()
            .status(302)
            .header("location", "http://127.0.0.1:9/elsewhere")
            .body(full(""))
            .unwrap()
    } else {
        Response::builder()
            .header("connection", "x-hop")
            .header("x-hop", "must-not-reach-app")
            .header("keep-alive", "timeout=5")
            .body(full("ok"))
            .unwrap()
    };
    Ok(response)
}

pub async fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen2);
            tokio::spawn(async move {
                let service = service_fn(move |req| upstream_service(req, Arc::clone(&seen)));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { addr, seen }
}

// ---------------------------------------------------------------------------------------
// The proxy, wired as the server will wire it
// ---------------------------------------------------------------------------------------

pub struct Proxy {
    pub addr: SocketAddr,
    pub gatekeeper: Arc<Gatekeeper>,
    pub metrics: Arc<keygate_proxy::usage::ProxyMetrics>,
    pub usage: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<keygate_proxy::usage::UsageEvent>>,
}

/// The token check stands in for `verify_request` on the real headers: a test header
/// picks which verified user the call belongs to (`x-test-other-user`), or how the token
/// is refused (`x-test-refuse: expired | missing | revocation-down`).
struct TestVerifier {
    access: VerifiedAccess,
    other_access: VerifiedAccess,
}

#[async_trait::async_trait]
impl AccessVerifier for TestVerifier {
    async fn verify(
        &self,
        request: AccessRequest<'_>,
    ) -> Result<VerifiedAccess, keygate_auth::error::AuthError> {
        use keygate_auth::error::{AuthError, ErrorCode, Reason};
        let refused = match request.headers.get("x-test-refuse").map(|v| v.as_bytes()) {
            Some(b"expired") => Some(AuthError::new(ErrorCode::InvalidToken, Reason::Expired)),
            Some(b"missing") => Some(AuthError::new(
                ErrorCode::InvalidToken,
                Reason::MissingAuthorization,
            )),
            Some(b"revocation-down") => Some(AuthError::new(
                ErrorCode::TemporarilyUnavailable,
                Reason::RevocationUnavailable,
            )),
            _ => None,
        };
        if let Some(e) = refused {
            return Err(e);
        }
        let access = if request.headers.contains_key("x-test-other-user") {
            &self.other_access
        } else {
            &self.access
        };
        Ok(access.clone())
    }
}

/// Route keys from a fixed list.
pub struct TestKeys(pub Vec<(String, String)>);

#[async_trait::async_trait]
impl KeySource for TestKeys {
    fn epoch(&self) -> u64 {
        0
    }

    async fn key(&self, secret: &str) -> Result<SecretString, KeyUnavailable> {
        self.0
            .iter()
            .find(|(n, _)| n == secret)
            .map(|(_, v)| SecretString::from(v.clone()))
            .ok_or_else(|| KeyUnavailable(format!("no secret {secret}")))
    }
}

type AppBody = UnsyncBoxBody<Bytes, BoxError>;

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    gatekeeper: Arc<Gatekeeper>,
) -> Result<Response<AppBody>, Infallible> {
    let response = gatekeeper.handle(req, peer.ip()).await;
    Ok(response.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
}

/// The gatekeeper over `routes` and `secrets`, with the test verifier, in-memory limits,
/// and usage events on a channel.
pub async fn gatekeeper(
    routes: RouteTable,
    secrets: &[(&str, &str)],
) -> (
    Gatekeeper,
    Arc<keygate_proxy::usage::ProxyMetrics>,
    tokio::sync::mpsc::Receiver<keygate_proxy::usage::UsageEvent>,
) {
    gatekeeper_with(routes, secrets, LimitGate::in_memory(10_000)).await
}

/// [`gatekeeper`] with the given limit gate.
pub async fn gatekeeper_with(
    routes: RouteTable,
    secrets: &[(&str, &str)],
    gate: LimitGate,
) -> (
    Gatekeeper,
    Arc<keygate_proxy::usage::ProxyMetrics>,
    tokio::sync::mpsc::Receiver<keygate_proxy::usage::UsageEvent>,
) {
    gatekeeper_configured(routes, secrets, gate, ForwarderConfig::default()).await
}

/// [`gatekeeper`] with the given limit gate and forwarder settings.
pub async fn gatekeeper_configured(
    routes: RouteTable,
    secrets: &[(&str, &str)],
    gate: LimitGate,
    forwarder: ForwarderConfig,
) -> (
    Gatekeeper,
    Arc<keygate_proxy::usage::ProxyMetrics>,
    tokio::sync::mpsc::Receiver<keygate_proxy::usage::UsageEvent>,
) {
    let metrics = Arc::new(keygate_proxy::usage::ProxyMetrics::new());
    let (sink, rx) = keygate_proxy::usage::ChannelUsageSink::new(1024);
    let gatekeeper = Gatekeeper::new(
        GatekeeperConfig {
            prefix: "/proxy/",
            proto: "https",
            host: HeaderValue::from_static("gate.example.com"),
            key_staleness: Duration::from_secs(1),
            forwarder,
        },
        Arc::new(TestVerifier {
            access: verified_access("alice", "ai maps").await,
            other_access: verified_access("bob", "ai maps").await,
        }),
        Arc::new(TestKeys(
            secrets
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        )),
        gate,
        Arc::new(sink),
        Arc::clone(&metrics),
    );
    gatekeeper.set_routes(routes).unwrap();
    (gatekeeper, metrics, rx)
}

/// Starts the proxy with `routes_toml` and `secrets` (name, value).
pub async fn start_proxy(routes_toml: &str, secrets: &[(&str, &str)]) -> Proxy {
    start_proxy_with(routes_toml, secrets, ForwarderConfig::default()).await
}

/// [`start_proxy`] with the given forwarder settings.
pub async fn start_proxy_with(
    routes_toml: &str,
    secrets: &[(&str, &str)],
    forwarder: ForwarderConfig,
) -> Proxy {
    let routes = RouteTable::from_toml(routes_toml).unwrap();
    let (gatekeeper, metrics, rx) =
        gatekeeper_configured(routes, secrets, LimitGate::in_memory(10_000), forwarder).await;
    let gatekeeper = Arc::new(gatekeeper);
    let state = Arc::clone(&gatekeeper);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, peer, Arc::clone(&state)));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(StrictHttp1::new(stream)), service)
                    .await;
            });
        }
    });
    Proxy {
        addr,
        gatekeeper,
        metrics,
        usage: tokio::sync::Mutex::new(rx),
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// Sends raw bytes and reads until the server closes or 3 s pass. Returns the text and
/// whether the server closed the connection.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut chunk)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

pub fn status_of(raw_response: &str) -> u16 {
    raw_response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A well-formed request through hyper's client.
pub async fn send(
    proxy: &Proxy,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "gate.example.com");
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let req = builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}
