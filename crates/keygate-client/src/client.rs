//! The client: discovery, the code flow, refresh, resource requests with DPoP.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keygate_auth::jwk::Jkt;
use keygate_auth::{Clock, SystemClock, UnixTime};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::authorize::{self, PendingAuthorization};
use crate::error::ClientError;
use crate::keystore::KeyStore;
use crate::nonce::{NonceStore, has_dpop_challenge_error, is_resource_nonce_challenge};
use crate::proof::{ProofInput, create_proof};
use crate::tokens::{TokenCache, TokenSet};

/// The path of the RFC 8414 metadata document under the base URL.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// The largest response body the client reads from the token, metadata and revocation
/// endpoints.
const MAX_OAUTH_BODY: usize = 64 * 1024;

/// Assumed lifetime of an access token whose response has no `expires_in`.
const DEFAULT_EXPIRES_IN: i64 = 60;

/// How far the device clock may be off the server's before proofs' `iat` is corrected
/// (keygate accepts proofs up to 60 s old and 5 s ahead).
const MAX_CLOCK_SKEW_SECS: i64 = 5;

/// The server's clock minus ours, from a response's `Date` header.
fn server_offset(headers: &HeaderMap, local: UnixTime) -> Option<i64> {
    let text = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    let at = httpdate::parse_http_date(text).ok()?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(i64::try_from(secs).ok()?.saturating_sub(local.0))
}

/// How the client reaches keygate and who it is.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// keygate's public base URL (its issuer), e.g. `https://gate.example.com`.
    pub base_url: Url,
    /// The client id registered with `keygate client add --public`.
    pub client_id: String,
    /// The registered redirect URI (custom scheme or loopback, RFC 8252).
    pub redirect_uri: String,
    /// Refresh the access token when it expires within this margin (default 30 s).
    pub refresh_margin: Duration,
}

impl ClientConfig {
    /// A configuration with the default refresh margin. The base URL must be `https`, or
    /// `http` on a loopback address.
    pub fn new(base_url: &str, client_id: &str, redirect_uri: &str) -> Result<Self, ClientError> {
        let base_url = Url::parse(base_url).map_err(|_| ClientError::InvalidUrl("base URL"))?;
        check_transport(&base_url, "base URL")?;
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(ClientError::InvalidUrl("base URL has a query or fragment"));
        }
        if client_id.is_empty() {
            return Err(ClientError::InvalidUrl("empty client id"));
        }
        Url::parse(redirect_uri).map_err(|_| ClientError::InvalidUrl("redirect URI"))?;
        Ok(Self {
            base_url,
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            refresh_margin: Duration::from_secs(30),
        })
    }

    /// The base URL as text without a trailing slash.
    fn base(&self) -> &str {
        self.base_url.as_str().trim_end_matches('/')
    }
}

/// `https`, or `http` to a loopback host (development and tests); never credentials.
fn check_transport(url: &Url, what: &'static str) -> Result<(), ClientError> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::InvalidUrl(what));
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => Ok(()),
        ("http", Some(url::Host::Domain(d))) if d.eq_ignore_ascii_case("localhost") => Ok(()),
        ("http", Some(url::Host::Ipv4(ip))) if ip.is_loopback() => Ok(()),
        ("http", Some(url::Host::Ipv6(ip))) if ip.is_loopback() => Ok(()),
        _ => Err(ClientError::InvalidUrl(what)),
    }
}

/// The parts of the RFC 8414 metadata document the client uses.
#[derive(Clone, Debug)]
pub struct ServerMetadata {
    /// `issuer`.
    pub issuer: String,
    /// `authorization_endpoint`.
    pub authorization_endpoint: Url,
    /// `token_endpoint`.
    pub token_endpoint: Url,
    /// `revocation_endpoint`.
    pub revocation_endpoint: Option<Url>,
    /// `introspection_endpoint`.
    pub introspection_endpoint: Option<Url>,
    /// `jwks_uri`.
    pub jwks_uri: Option<Url>,
    /// `dpop_signing_alg_values_supported`.
    pub dpop_signing_alg_values_supported: Vec<String>,
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: Option<String>,
    introspection_endpoint: Option<String>,
    jwks_uri: Option<String>,
    #[serde(default)]
    dpop_signing_alg_values_supported: Vec<String>,
}

impl ServerMetadata {
    /// Parses and checks a metadata document fetched for `config`: `issuer` must be the
    /// base URL (RFC 8414 §3.3), endpoints must be `https` (or loopback `http`), and
    /// ES256 must be among the DPoP algorithms.
    pub fn from_json(config: &ClientConfig, json: &[u8]) -> Result<Self, ClientError> {
        let raw: RawMetadata = serde_json::from_slice(json)
            .map_err(|_| ClientError::InvalidResponse("metadata document"))?;
        if raw.issuer.trim_end_matches('/') != config.base() {
            return Err(ClientError::IssuerMismatch);
        }
        let endpoint = |text: &str, what: &'static str| -> Result<Url, ClientError> {
            let url = Url::parse(text).map_err(|_| ClientError::InvalidUrl(what))?;
            check_transport(&url, what)?;
            Ok(url)
        };
        let optional = |text: Option<String>, what| text.map(|t| endpoint(&t, what)).transpose();
        if !raw
            .dpop_signing_alg_values_supported
            .iter()
            .any(|a| a == "ES256")
        {
            return Err(ClientError::DpopUnsupported);
        }
        Ok(Self {
            authorization_endpoint: endpoint(
                &raw.authorization_endpoint,
                "authorization_endpoint",
            )?,
            token_endpoint: endpoint(&raw.token_endpoint, "token_endpoint")?,
            revocation_endpoint: optional(raw.revocation_endpoint, "revocation_endpoint")?,
            introspection_endpoint: optional(raw.introspection_endpoint, "introspection_endpoint")?,
            jwks_uri: optional(raw.jwks_uri, "jwks_uri")?,
            dpop_signing_alg_values_supported: raw.dpop_signing_alg_values_supported,
            issuer: raw.issuer,
        })
    }
}

/// The outcome of a sign-in or refresh, without the tokens themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIn {
    /// The scopes granted, as the server reported them.
    pub scope: Option<String>,
    /// When the access token expires.
    pub expires_at: UnixTime,
}

/// The two header values a DPoP-protected request needs, for callers with their own HTTP
/// stack. Both are secrets: `Debug` shows neither.
#[derive(Debug)]
pub struct DpopHeaders {
    /// The `Authorization` value: `DPoP <access token>`.
    pub authorization: SecretString,
    /// The `DPoP` proof for this one request.
    pub dpop: SecretString,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    token_type: String,
    expires_in: Option<i64>,
    refresh_token: Option<SecretString>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    error_description: Option<String>,
}

/// Sets up a [`Client`].
pub struct ClientBuilder {
    config: ClientConfig,
    keystore: Arc<dyn KeyStore>,
    cache: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
    http: Option<reqwest::Client>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Replaces the wall clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this HTTP client (proxies, pinning, timeouts). It should not follow
    /// redirects: the default one does not.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    fn default_http() -> Result<reqwest::Client, ClientError> {
        Ok(reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()?)
    }

    /// Builds the client from metadata the app already has.
    pub fn build(self, metadata: ServerMetadata) -> Result<Client, ClientError> {
        let jkt = self.keystore.thumbprint()?;
        let http = match self.http {
            Some(h) => h,
            None => Self::default_http()?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                config: self.config,
                metadata,
                keystore: self.keystore,
                jkt,
                cache: self.cache,
                clock: self.clock,
                http,
                nonces: NonceStore::new(),
                clock_offset: std::sync::atomic::AtomicI64::new(0),
                refresh_lock: Arc::new(tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// Fetches and checks the server metadata, then builds the client.
    #[tracing::instrument(skip_all)]
    pub async fn discover(mut self) -> Result<Client, ClientError> {
        let http = match self.http.take() {
            Some(h) => h,
            None => Self::default_http()?,
        };
        let url = Url::parse(&format!("{}{METADATA_PATH}", self.config.base()))
            .map_err(|_| ClientError::InvalidUrl("metadata URL"))?;
        let response = http
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(ClientError::InvalidResponse("metadata endpoint status"));
        }
        let body = read_limited(response).await?;
        let metadata = ServerMetadata::from_json(&self.config, &body)?;
        self.http = Some(http);
        self.build(metadata)
    }
}

/// A keygate client: signs in with the code flow + PKCE, keeps its tokens fresh, and
/// sends DPoP-protected requests. Cheap to clone; clones share tokens and nonces.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    metadata: ServerMetadata,
    keystore: Arc<dyn KeyStore>,
    jkt: Jkt,
    cache: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    nonces: NonceStore,
    /// Seconds to add to the local clock for proofs' `iat`: non-zero only after the
    /// server refused a proof and its `Date` showed the device clock to be off.
    clock_offset: std::sync::atomic::AtomicI64,
    /// One refresh at a time: two concurrent refreshes with the same rotating token
    /// would look like reuse and revoke the session (S08).
    refresh_lock: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .field("issuer", &self.inner.metadata.issuer)
            .field("jkt", &self.inner.jkt)
            .field("signed_in", &self.is_signed_in())
            .finish_non_exhaustive()
    }
}

async fn read_limited(mut response: Response) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_OAUTH_BODY {
            return Err(ClientError::InvalidResponse("response body too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Client {
    /// Starts building a client whose DPoP key lives in `keystore` and whose tokens live
    /// in `cache`.
    pub fn builder(
        config: ClientConfig,
        keystore: Arc<dyn KeyStore>,
        cache: Arc<dyn TokenCache>,
    ) -> ClientBuilder {
        ClientBuilder {
            config,
            keystore,
            cache,
            clock: Arc::new(SystemClock),
            http: None,
        }
    }

    /// The server metadata in use.
    pub fn metadata(&self) -> &ServerMetadata {
        &self.inner.metadata
    }

    /// The thumbprint of the DPoP key (`dpop_jkt`, and `cnf.jkt` of issued tokens).
    pub fn jkt(&self) -> &Jkt {
        &self.inner.jkt
    }

    /// Whether tokens are cached (they may still need a refresh).
    pub fn is_signed_in(&self) -> bool {
        self.inner.cache.load().is_some()
    }

    /// The URL to open in the system browser (or an `ASWebAuthenticationSession` /
    /// Custom Tab), and what to keep until the redirect comes back.
    pub fn authorization_url(
        &self,
        scopes: &[&str],
    ) -> Result<(Url, PendingAuthorization), ClientError> {
        authorize::build(
            &self.inner.metadata.authorization_endpoint,
            &self.inner.config.client_id,
            &self.inner.config.redirect_uri,
            scopes,
            self.inner.jkt.clone(),
        )
    }

    /// Completes sign-in: checks the redirect (a full callback URL, or a bare code with
    /// its `state`) against `pending`, redeems the code with the PKCE verifier and a DPoP
    /// proof, and stores the tokens.
    #[tracing::instrument(skip_all)]
    pub async fn exchange_code(
        &self,
        pending: PendingAuthorization,
        callback_url_or_code: &str,
        state: Option<&str>,
    ) -> Result<SignedIn, ClientError> {
        let code = authorize::parse_response(
            &pending,
            callback_url_or_code,
            state,
            &self.inner.metadata.issuer,
        )?;
        let now = self.inner.clock.now();
        let form = form_body(&[
            ("grant_type", "authorization_code"),
            ("code", code.0.expose_secret()),
            ("redirect_uri", &pending.redirect_uri),
            ("client_id", &self.inner.config.client_id),
            ("code_verifier", pending.code_verifier.expose_secret()),
        ]);
        let response = self.inner.token_request(form).await?;
        let tokens = token_set(response, now, None)?;
        let signed_in = SignedIn {
            scope: tokens.scope.clone(),
            expires_at: tokens.expires_at,
        };
        self.inner.cache.store(tokens);
        tracing::debug!("signed in");
        Ok(signed_in)
    }

    /// A valid access token, refreshed first if it expires within the refresh margin.
    pub async fn access_token(&self) -> Result<SecretString, ClientError> {
        let tokens = self.inner.cache.load().ok_or(ClientError::NotSignedIn)?;
        if !tokens.needs_refresh(self.inner.clock.now(), self.inner.margin_secs()) {
            return Ok(tokens.access_token);
        }
        self.run_refresh(false).await
    }

    /// Refreshes now, whatever the expiry (e.g. after scopes changed server-side).
    pub async fn refresh(&self) -> Result<SignedIn, ClientError> {
        self.run_refresh(true).await?;
        let tokens = self.inner.cache.load().ok_or(ClientError::NotSignedIn)?;
        Ok(SignedIn {
            scope: tokens.scope,
            expires_at: tokens.expires_at,
        })
    }

    /// Runs the refresh in its own task, so that a caller that gives up (timeout,
    /// dropped future) cannot lose a rotated refresh token between the server's answer
    /// and the cache update.
    async fn run_refresh(&self, force: bool) -> Result<SecretString, ClientError> {
        let guard = self.inner.refresh_lock.clone().lock_owned().await;
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let result = inner.refresh_locked(force).await;
            drop(guard);
            result
        });
        task.await
            .map_err(|_| ClientError::InvalidResponse("refresh task failed"))?
    }

    /// The `Authorization` and `DPoP` header values for one request to `url` with
    /// `method`, for callers with their own HTTP stack. `url` must be under the base URL.
    /// On a `use_dpop_nonce` answer, pass its `DPoP-Nonce` to [`Client::observe_nonce`]
    /// and call this again.
    pub async fn dpop_headers(
        &self,
        method: &Method,
        url: &Url,
    ) -> Result<DpopHeaders, ClientError> {
        self.inner.check_resource_url(url)?;
        let token = self.access_token().await?;
        let nonce = self.inner.nonces.get(url);
        let proof = create_proof(
            self.inner.keystore.as_ref(),
            &ProofInput {
                method: method.as_str(),
                url,
                iat: self.inner.proof_time(),
                nonce: nonce.as_deref(),
                access_token: Some(token.expose_secret()),
            },
        )?;
        Ok(DpopHeaders {
            authorization: SecretString::from(format!("DPoP {}", token.expose_secret())),
            dpop: SecretString::from(proof),
        })
    }

    /// Remembers the `DPoP-Nonce` of a response received outside this client.
    pub fn observe_nonce(&self, url: &Url, headers: &HeaderMap) {
        self.inner.nonces.observe(url, headers);
    }

    /// A request to keygate, e.g. `client.request(Method::POST,
    /// "/proxy/openai/v1/chat/completions")`. `path` is joined to the base URL; an
    /// absolute URL must lie under the base URL (tokens go to keygate only).
    pub fn request(&self, method: Method, path: &str) -> ResourceRequest<'_> {
        let url = self.inner.resolve(path);
        ResourceRequest {
            client: self,
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            error: None,
        }
    }

    /// Signs out: forgets the tokens and revokes the refresh token at the server (RFC
    /// 7009), which ends the session's access tokens too. The local tokens are gone even
    /// if the server cannot be reached.
    #[tracing::instrument(skip_all)]
    pub async fn revoke(&self) -> Result<(), ClientError> {
        let _guard = self.inner.refresh_lock.lock().await;
        let Some(tokens) = self.inner.cache.load() else {
            return Ok(());
        };
        self.inner.cache.clear();
        let endpoint = self
            .inner
            .metadata
            .revocation_endpoint
            .clone()
            .ok_or(ClientError::InvalidResponse("no revocation endpoint"))?;
        let (token, hint) = match &tokens.refresh_token {
            Some(rt) => (rt.expose_secret(), "refresh_token"),
            None => (tokens.access_token.expose_secret(), "access_token"),
        };
        let form = form_body(&[
            ("token", token),
            ("token_type_hint", hint),
            ("client_id", &self.inner.config.client_id),
        ]);
        let response = self
            .inner
            .http
            .post(endpoint)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(form)
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_limited(response).await?;
        Err(oauth_error(status, &body))
    }
}

fn form_body(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish().into_bytes()
}

fn oauth_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::OAuth {
            status: status.as_u16(),
            error: authorize::sanitise_code(&e.error),
            description: e
                .error_description
                .map(|d| d.chars().filter(|c| !c.is_control()).take(256).collect()),
        },
        Err(_) => ClientError::OAuth {
            status: status.as_u16(),
            error: String::new(),
            description: None,
        },
    }
}

/// Turns a token response into the set to store. `expires_at` counts from `requested_at`
/// (before the request left), so network delay only makes the client refresh earlier.
fn token_set(
    response: TokenResponse,
    requested_at: UnixTime,
    previous_refresh: Option<SecretString>,
) -> Result<TokenSet, ClientError> {
    if !response.token_type.eq_ignore_ascii_case("DPoP") {
        return Err(ClientError::NotDpopBound);
    }
    if response.access_token.expose_secret().is_empty() {
        return Err(ClientError::InvalidResponse("empty access token"));
    }
    let expires_in = response.expires_in.unwrap_or(DEFAULT_EXPIRES_IN).max(0);
    Ok(TokenSet {
        access_token: response.access_token,
        refresh_token: response.refresh_token.or(previous_refresh),
        expires_at: requested_at.plus(expires_in),
        scope: response.scope,
    })
}

impl Inner {
    /// The `iat` for a new proof: the local clock, corrected by the server's if it was
    /// found to be off.
    fn proof_time(&self) -> UnixTime {
        self.clock
            .now()
            .plus(self.clock_offset.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// After a refused proof: if the response's `Date` shows the device clock off by more
    /// than the server tolerates, remember the difference and say so (the caller retries
    /// once). Expiry times stay on the local clock: they are relative and unaffected.
    fn correct_clock(&self, headers: &HeaderMap) -> bool {
        let Some(offset) = server_offset(headers, self.clock.now()) else {
            return false;
        };
        let current = self.clock_offset.load(std::sync::atomic::Ordering::Relaxed);
        if (offset - current).abs() <= MAX_CLOCK_SKEW_SECS {
            return false;
        }
        tracing::debug!(
            offset,
            "device clock differs from the server's; correcting proof iat"
        );
        self.clock_offset
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        true
    }

    fn margin_secs(&self) -> i64 {
        i64::try_from(self.config.refresh_margin.as_secs()).unwrap_or(i64::MAX)
    }

    fn resolve(&self, path: &str) -> Result<Url, ClientError> {
        let url = if path.starts_with('/') {
            Url::parse(&format!("{}{path}", self.config.base()))
                .map_err(|_| ClientError::InvalidUrl("request path"))?
        } else {
            Url::parse(path).map_err(|_| ClientError::InvalidUrl("request URL"))?
        };
        self.check_resource_url(&url)?;
        Ok(url)
    }

    /// Tokens and proofs go to keygate only: same origin, under the base path.
    fn check_resource_url(&self, url: &Url) -> Result<(), ClientError> {
        let base = &self.config.base_url;
        let base_path = base.path().trim_end_matches('/');
        let under_base = url.path() == base_path
            || url
                .path()
                .strip_prefix(base_path)
                .is_some_and(|rest| rest.starts_with('/'));
        if url.origin() != base.origin() || !under_base || !url.username().is_empty() {
            return Err(ClientError::InvalidUrl(
                "request URL is not under the base URL",
            ));
        }
        Ok(())
    }

    /// POSTs a form to the token endpoint with a fresh proof; on `use_dpop_nonce` (400
    /// with a `DPoP-Nonce` header, RFC 9449 §8) retries once with the new nonce.
    async fn token_request(&self, form: Vec<u8>) -> Result<TokenResponse, ClientError> {
        let endpoint = &self.metadata.token_endpoint;
        let body = Bytes::from(form);
        let mut retried = false;
        let mut clock_corrected = false;
        loop {
            let nonce = self.nonces.get(endpoint);
            let proof = create_proof(
                self.keystore.as_ref(),
                &ProofInput {
                    method: "POST",
                    url: endpoint,
                    iat: self.proof_time(),
                    nonce: nonce.as_deref(),
                    access_token: None,
                },
            )?;
            let mut proof_value = HeaderValue::from_str(&proof)
                .map_err(|_| ClientError::InvalidResponse("proof header"))?;
            proof_value.set_sensitive(true);
            let response = self
                .http
                .post(endpoint.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(ACCEPT, "application/json")
                .header("DPoP", proof_value)
                .body(body.clone())
                .send()
                .await?;
            let fresh_nonce = self.nonces.observe(endpoint, response.headers());
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = read_limited(response).await?;
            if status.is_success() {
                return serde_json::from_slice(&bytes)
                    .map_err(|_| ClientError::InvalidResponse("token response"));
            }
            let error = oauth_error(status, &bytes);
            let wants_nonce = status == StatusCode::BAD_REQUEST
                && error.oauth_code() == Some("use_dpop_nonce")
                && fresh_nonce.is_some();
            if wants_nonce && !retried {
                tracing::debug!("token endpoint asked for a DPoP nonce; retrying once");
                retried = true;
                continue;
            }
            if error.oauth_code() == Some("invalid_dpop_proof")
                && !clock_corrected
                && self.correct_clock(&headers)
            {
                clock_corrected = true;
                continue;
            }
            return Err(error);
        }
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_locked(&self, force: bool) -> Result<SecretString, ClientError> {
        // Another task may have refreshed while this one waited for the lock.
        let current = self.cache.load().ok_or(ClientError::NotSignedIn)?;
        let now = self.clock.now();
        if !force && !current.needs_refresh(now, self.margin_secs()) {
            return Ok(current.access_token);
        }
        let Some(refresh_token) = current.refresh_token.clone() else {
            if current.is_expired(now) {
                self.cache.clear();
                return Err(ClientError::ReauthenticationRequired);
            }
            return Ok(current.access_token);
        };
        let form = form_body(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
            ("client_id", &self.config.client_id),
        ]);
        match self.token_request(form).await {
            Ok(response) => {
                let tokens = token_set(response, now, Some(refresh_token))?;
                let access = tokens.access_token.clone();
                self.cache.store(tokens);
                tracing::debug!("access token refreshed");
                Ok(access)
            }
            Err(ClientError::OAuth { error, .. })
                if error == "invalid_grant" || error == "invalid_client" =>
            {
                // The family is revoked, expired or reused: the tokens are dead.
                self.cache.clear();
                Err(ClientError::ReauthenticationRequired)
            }
            // A transient failure of a proactive refresh: keep using a token that is
            // still valid.
            Err(_) if !force && !current.is_expired(self.clock.now()) => Ok(current.access_token),
            Err(e) => Err(e),
        }
    }
}

/// A request to keygate being built; [`send`](Self::send) adds the access token and a
/// fresh DPoP proof, and retries once when the server asks for a nonce.
pub struct ResourceRequest<'c> {
    client: &'c Client,
    method: Method,
    url: Result<Url, ClientError>,
    headers: HeaderMap,
    body: Option<Bytes>,
    error: Option<ClientError>,
}

impl fmt::Debug for ResourceRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_ref().map(crate::proof::htu).ok())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ResourceRequest<'_> {
    /// Adds a header. `Authorization` and `DPoP` are set by the client and replaced.
    pub fn header<K, V>(mut self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        HeaderValue: TryFrom<V>,
    {
        match (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            (Ok(k), Ok(v)) => {
                self.headers.append(k, v);
            }
            _ => self.error = Some(ClientError::InvalidUrl("invalid header")),
        }
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                self.body = Some(Bytes::from(bytes));
            }
            Err(_) => self.error = Some(ClientError::InvalidResponse("body not serialisable")),
        }
        self
    }

    /// Sets a raw body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sends the request with `Authorization: DPoP <token>` and a fresh proof,
    /// refreshing the token first if it is about to expire. When the answer is a 401
    /// `use_dpop_nonce` challenge with a `DPoP-Nonce` header (RFC 9449 §9), sends it once
    /// more with a new proof carrying that nonce; when it is a 401 `invalid_dpop_proof`
    /// whose `Date` shows the device clock off, once more with a corrected `iat`. Any
    /// other answer is returned as is.
    #[tracing::instrument(skip_all)]
    pub async fn send(self) -> Result<Response, ClientError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let url = self.url?;
        let inner = &self.client.inner;
        let mut retried = false;
        let mut clock_corrected = false;
        loop {
            let token = self.client.access_token().await?;
            let nonce = inner.nonces.get(&url);
            let proof = create_proof(
                inner.keystore.as_ref(),
                &ProofInput {
                    method: self.method.as_str(),
                    url: &url,
                    iat: inner.proof_time(),
                    nonce: nonce.as_deref(),
                    access_token: Some(token.expose_secret()),
                },
            )?;
            let mut authorization =
                HeaderValue::from_str(&format!("DPoP {}", token.expose_secret())).map_err(
                    |_| ClientError::InvalidResponse("access token is not a header value"),
                )?;
            authorization.set_sensitive(true);
            let mut proof_value = HeaderValue::from_str(&proof)
                .map_err(|_| ClientError::InvalidResponse("proof header"))?;
            proof_value.set_sensitive(true);
            let mut headers = self.headers.clone();
            headers.insert(AUTHORIZATION, authorization);
            headers.insert(HeaderName::from_static("dpop"), proof_value);
            let mut request = inner
                .http
                .request(self.method.clone(), url.clone())
                .headers(headers);
            if let Some(body) = &self.body {
                request = request.body(body.clone());
            }
            let response = request.send().await?;
            let fresh_nonce = inner.nonces.observe(&url, response.headers());
            if !retried
                && fresh_nonce.is_some()
                && is_resource_nonce_challenge(response.status(), response.headers())
            {
                tracing::debug!("resource asked for a DPoP nonce; retrying once");
                retried = true;
                continue;
            }
            if !clock_corrected
                && has_dpop_challenge_error(
                    response.status(),
                    response.headers(),
                    "invalid_dpop_proof",
                )
                && inner.correct_clock(response.headers())
            {
                clock_corrected = true;
                continue;
            }
            return Ok(response);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::MemoryKeyStore;
    use crate::tokens::MemoryTokenCache;

    fn config() -> ClientConfig {
        ClientConfig::new("https://gate.example.com", "ios-app", "com.example.app:/cb").unwrap()
    }

    fn metadata_json(issuer: &str, algs: &str) -> String {
        format!(
            r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/oauth2/authorize",
            "token_endpoint":"{issuer}/oauth2/token","revocation_endpoint":"{issuer}/oauth2/revoke",
            "introspection_endpoint":"{issuer}/oauth2/introspect","jwks_uri":"{issuer}/oauth2/jwks",
            "dpop_signing_alg_values_supported":{algs}}}"#
        )
    }

    #[test]
    fn config_refuses_insecure_base_urls() {
        for ok in [
            "https://gate.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:2",
        ] {
            assert!(ClientConfig::new(ok, "c", "app:/cb").is_ok(), "{ok}");
        }
        for bad in [
            "http://gate.example.com",
            "ftp://x",
            "https://u:p@gate.example.com",
            "https://g/?q=1",
            "nope",
        ] {
            assert!(ClientConfig::new(bad, "c", "app:/cb").is_err(), "{bad}");
        }
        assert_eq!(config().refresh_margin, Duration::from_secs(30));
    }

    #[test]
    fn metadata_checks_issuer_transport_and_es256() {
        let m = ServerMetadata::from_json(
            &config(),
            metadata_json("https://gate.example.com", r#"["EdDSA","ES256"]"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            m.token_endpoint.as_str(),
            "https://gate.example.com/oauth2/token"
        );
        assert!(matches!(
            ServerMetadata::from_json(
                &config(),
                metadata_json("https://evil.example", r#"["ES256"]"#).as_bytes()
            ),
            Err(ClientError::IssuerMismatch)
        ));
        assert!(matches!(
            ServerMetadata::from_json(
                &config(),
                metadata_json("https://gate.example.com", r#"["EdDSA"]"#).as_bytes()
            ),
            Err(ClientError::DpopUnsupported)
        ));
        let plain = metadata_json("https://gate.example.com", r#"["ES256"]"#).replace(
            "https://gate.example.com/oauth2/token",
            "http://gate.example.com/oauth2/token",
        );
        assert!(matches!(
            ServerMetadata::from_json(&config(), plain.as_bytes()),
            Err(ClientError::InvalidUrl(_))
        ));
    }

    fn client() -> Client {
        let m = ServerMetadata::from_json(
            &config(),
            metadata_json("https://gate.example.com", r#"["ES256"]"#).as_bytes(),
        )
        .unwrap();
        Client::builder(
            config(),
            Arc::new(MemoryKeyStore::generate()),
            Arc::new(MemoryTokenCache::new()),
        )
        .build(m)
        .unwrap()
    }

    #[test]
    fn requests_stay_under_the_base_url() {
        let c = client();
        assert_eq!(
            c.inner
                .resolve("/proxy/openai/v1/chat/completions?x=1")
                .unwrap()
                .as_str(),
            "https://gate.example.com/proxy/openai/v1/chat/completions?x=1"
        );
        assert!(c.inner.resolve("https://gate.example.com/proxy/a").is_ok());
        // A scheme-relative-looking path is still a path on keygate.
        assert_eq!(
            c.inner.resolve("//evil.example/x").unwrap().host_str(),
            Some("gate.example.com")
        );
        for bad in [
            "https://evil.example/proxy/a",
            "http://gate.example.com/proxy/a",
            "https://gate.example.com:444/proxy/a",
            "proxy/a",
        ] {
            assert!(c.inner.resolve(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_type_must_be_dpop() {
        let response = |token_type: &str| TokenResponse {
            access_token: SecretString::from("at"),
            token_type: token_type.into(),
            expires_in: Some(300),
            refresh_token: None,
            scope: None,
        };
        assert!(matches!(
            token_set(response("Bearer"), UnixTime(0), None),
            Err(ClientError::NotDpopBound)
        ));
        let set = token_set(
            response("dpop"),
            UnixTime(100),
            Some(SecretString::from("old")),
        )
        .unwrap();
        assert_eq!(set.expires_at, UnixTime(400));
        // Without a new refresh token the previous one is kept.
        assert_eq!(set.refresh_token.unwrap().expose_secret(), "old");
    }

    #[test]
    fn oauth_errors_are_sanitised() {
        let e = oauth_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant\u0000\n","error_description":"bad\r\ngrant"}"#,
        );
        match e {
            ClientError::OAuth {
                status,
                error,
                description,
            } => {
                assert_eq!(status, 400);
                assert_eq!(error, "invalid_grant");
                assert_eq!(description.as_deref(), Some("badgrant"));
            }
            other => panic!("{other:?}"),
        }
    }
}
