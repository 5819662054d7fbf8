//! The OAuth 2.1 endpoints: metadata (RFC 8414), JWKS, authorize (login page, PKCE S256
//! only), token (authorization_code, refresh_token, client_credentials, and token
//! exchange (RFC 8693) in [`super::exchange`]), revocation (RFC 7009) and introspection
//! (RFC 7662). Handlers parse, call keygate-auth and the store, and map the result; every
//! failure answers a generic RFC error code.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use keygate_audit::{AuditEvent, Outcome};
use keygate_auth::UnixTime;
use keygate_auth::access::AccessGrant;
use keygate_auth::code::{CodeGrant, CodeRedemption};
use keygate_auth::dpop::ProofRequest;
use keygate_auth::ids::{ClientId, ScopeSet, SessionId, UserId};
use keygate_auth::jwk::{CertThumbprint, Jkt};
use keygate_auth::opaque::{OpaqueToken, TokenHash, TokenKind};
use keygate_auth::pkce::CodeChallenge;
use keygate_auth::refresh::{
    self, ClientType, FamilyState, PresentedToken, Presenter, RefreshDecision,
};
use keygate_store::{ClientRecord, FamilyRecord, Redemption, RotationWrite};
use keygate_vault::now_ms;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{OAuthError, TokenService, unix_now};
use crate::{AppState, Served};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth2/jwks", get(jwks))
        .route(
            "/oauth2/authorize",
            get(super::login::show).post(super::login::submit),
        )
        .route("/oauth2/token", post(token))
        .route("/oauth2/attestation/challenge", post(attestation_challenge))
        .route("/oauth2/revoke", post(revoke))
        .route("/oauth2/introspect", post(introspect))
}

/// The token service, or 503 while the vault is sealed.
pub(crate) fn service(state: &AppState) -> Result<Arc<TokenService>, OAuthError> {
    state
        .tokens
        .clone()
        .ok_or_else(|| OAuthError::unavailable(&"token service unavailable: the vault is sealed"))
}

async fn metadata(State(s): State<AppState>) -> Result<Json<Value>, OAuthError> {
    let svc = service(&s)?;
    let mut doc =
        keygate_auth::metadata::authorization_server_metadata(&svc.public_base, &svc.issuer);
    // Token exchange is offered only when an issuer is trusted for it.
    if svc.issuers.is_empty() {
        if let Some(Value::Array(grants)) = doc.get_mut("grant_types_supported") {
            grants.retain(|g| g != TOKEN_EXCHANGE_GRANT);
        }
    }
    // RFC 8705: certificate client authentication and bound tokens where a [tls.mtls]
    // listener takes certificates; its endpoints published as aliases (§5).
    if let (Some(m), Some(obj)) = (
        s.config.tls.as_ref().and_then(|t| t.mtls.as_ref()),
        doc.as_object_mut(),
    ) {
        for endpoint in ["token", "revocation", "introspection"] {
            let key = format!("{endpoint}_endpoint_auth_methods_supported");
            if let Some(Value::Array(methods)) = obj.get_mut(&key) {
                if m.client_ca.is_some() {
                    methods.push(Value::String(crate::mtls::TLS_CLIENT_AUTH.into()));
                }
                methods.push(Value::String(
                    crate::mtls::SELF_SIGNED_TLS_CLIENT_AUTH.into(),
                ));
            }
        }
        obj.insert(
            "tls_client_certificate_bound_access_tokens".into(),
            Value::Bool(true),
        );
        let at = |path: &str| Value::String(format!("{}{path}", m.public_url));
        obj.insert(
            "mtls_endpoint_aliases".into(),
            json!({
                "token_endpoint": at("/oauth2/token"),
                "revocation_endpoint": at("/oauth2/revoke"),
                "introspection_endpoint": at("/oauth2/introspect"),
            }),
        );
    }
    // App attestation (keygate's own extension): where an app gets its challenge.
    if let (Some(_), Some(obj)) = (svc.attestation.as_ref(), doc.as_object_mut()) {
        obj.insert(
            "keygate_attestation_challenge_endpoint".into(),
            Value::String(format!("{}/oauth2/attestation/challenge", svc.issuer)),
        );
    }
    Ok(Json(doc))
}

const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

async fn jwks(State(s): State<AppState>) -> Result<Response, OAuthError> {
    let svc = service(&s)?;
    let set = svc.keys().await.jwks(unix_now());
    let mut headers = HeaderMap::new();
    // Short enough that a new next key is seen well before it signs (it waits an hour).
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok((headers, Json(set.to_json())).into_response())
}

/// Form parameters; a parameter sent twice is an error (RFC 6749 §3.1).
pub(crate) struct Form(HashMap<String, String>);

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if map.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request("A parameter is repeated"));
            }
        }
        Ok(Self(map))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::invalid_request("A required parameter is missing"))
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect()
}

/// A client that authenticated, and the certificate it authenticated with, if any: the
/// access tokens it gets are bound to that certificate (RFC 8705 §3).
pub(crate) struct AuthenticatedClient {
    record: ClientRecord,
    cert: Option<CertThumbprint>,
}

impl std::ops::Deref for AuthenticatedClient {
    type Target = ClientRecord;
    fn deref(&self) -> &ClientRecord {
        &self.record
    }
}

impl AuthenticatedClient {
    /// The certificate its tokens are bound to (`cnf.x5t#S256`).
    pub(crate) fn bound_cert(&self) -> Option<&CertThumbprint> {
        self.cert.as_ref()
    }
}

/// The TLS side of a request, for certificate client authentication.
#[derive(Clone, Copy, Default)]
pub(crate) struct TlsClient<'a> {
    /// The certificate the connection presented.
    pub peer: Option<&'a crate::mtls::PeerCertificate>,
    /// The CAs of `[tls.mtls] client_ca`.
    pub trust: Option<&'a crate::mtls::ClientTrust>,
}

impl<'a> TlsClient<'a> {
    pub(crate) fn of(s: &'a AppState, served: Option<&'a Served>) -> Self {
        Self {
            peer: served.and_then(|s| s.peer_cert.as_deref()),
            trust: s.client_trust.as_ref(),
        }
    }
}

/// Authenticates the client of a token, revocation or introspection request:
/// `client_secret_basic`, `client_secret_post`, `tls_client_auth` and
/// `self_signed_tls_client_auth` (RFC 8705 §2, with the certificate of the connection), or
/// a public client's bare `client_id`.
pub(crate) async fn authenticate_client(
    svc: &TokenService,
    headers: &HeaderMap,
    form: &Form,
    tls: TlsClient<'_>,
) -> Result<AuthenticatedClient, OAuthError> {
    let (id, secret) = presented_client(headers, form)?;
    let client = svc
        .store
        .client_by_id(&id)
        .await
        .map_err(|e| OAuthError::unavailable(&e))?
        .filter(|c| c.removed_ms.is_none())
        .ok_or_else(OAuthError::invalid_client)?;
    if let Some(method) = client.auth_method.as_deref() {
        // A certificate client has no secret; one presented is a confused client.
        if secret.is_some() || client.kind != "confidential" {
            return Err(OAuthError::invalid_client());
        }
        let identity = client
            .tls_identity
            .as_deref()
            .and_then(|j| serde_json::from_str::<crate::mtls::TlsClientIdentity>(j).ok())
            .ok_or_else(|| OAuthError::unavailable(&"a stored client identity does not parse"))?;
        let now = unix_now().0;
        return match crate::mtls::check(method, &identity, tls.peer, tls.trust, now) {
            Ok(()) => Ok(AuthenticatedClient {
                cert: tls.peer.map(|p| p.thumbprint().clone()),
                record: client,
            }),
            Err(reason) => {
                tracing::info!(client = %client.id, reason, "client certificate refused");
                Err(OAuthError::invalid_client())
            }
        };
    }
    match (client.kind.as_str(), secret, &client.secret_hash) {
        ("public", None, _) => Ok(AuthenticatedClient {
            record: client,
            cert: None,
        }),
        ("confidential", Some(secret), Some(stored)) => {
            let stored: [u8; 32] = stored
                .as_slice()
                .try_into()
                .map_err(|_| OAuthError::invalid_client())?;
            if TokenHash::of(&secret).ct_eq(&TokenHash::from_bytes(stored)) {
                Ok(AuthenticatedClient {
                    record: client,
                    cert: None,
                })
            } else {
                Err(OAuthError::invalid_client())
            }
        }
        _ => Err(OAuthError::invalid_client()),
    }
}

/// The client id and secret a request presents: `client_secret_basic` or
/// `client_secret_post` (or a bare `client_id`), one method only.
pub(crate) fn presented_client(
    headers: &HeaderMap,
    form: &Form,
) -> Result<(String, Option<String>), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(|b| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| OAuthError::invalid_client())?;
            let text = String::from_utf8(raw).map_err(|_| OAuthError::invalid_client())?;
            let (id, secret) = text
                .split_once(':')
                .ok_or_else(OAuthError::invalid_client)?;
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("v={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Ok::<_, OAuthError>((decode(id), Some(decode(secret))))
        })
        .transpose()?;
    let (id, secret) = match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "Use one client authentication method",
            ));
        }
        (Some((id, secret)), form_id, None) => {
            if form_id.is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_client());
            }
            (id, secret)
        }
        (None, Some(id), secret) => (id.to_owned(), secret.map(str::to_owned)),
        (None, None, _) => return Err(OAuthError::invalid_client()),
    };
    Ok((id, secret))
}

pub(crate) fn client_type(c: &ClientRecord) -> ClientType {
    if c.kind == "confidential" {
        ClientType::Confidential
    } else {
        ClientType::Public
    }
}

/// Verifies the request's DPoP proof for the token endpoint, if it has one (S13, S14).
pub(crate) async fn token_proof(
    svc: &TokenService,
    headers: &HeaderMap,
) -> Result<Option<Jkt>, OAuthError> {
    let proofs = header_values(headers, "dpop");
    if proofs.is_empty() {
        return Ok(None);
    }
    let request = ProofRequest {
        method: "POST",
        target: "/oauth2/token",
        dpop_headers: &proofs,
        access_token: None,
        expected_jkt: None,
    };
    keygate_auth::dpop::verify_proof(&svc.token_dpop, &request, &svc.replay, unix_now())
        .await
        .map(|p| Some(p.jkt().clone()))
        .map_err(|e| OAuthError::at_token_endpoint(&e))
}

/// Issues the access token for `grant` and answers the token request with it (and the
/// refresh token, if the grant has one).
pub(crate) async fn grant_response(
    svc: &TokenService,
    client: &ClientRecord,
    grant: AccessGrant,
    refresh: Option<&OpaqueToken>,
    issued_token_type: Option<&'static str>,
) -> Result<Response, OAuthError> {
    let access = svc.issue_access(&grant, client).await?;
    Ok(token_response(
        &access,
        refresh,
        &grant.scopes,
        grant.jkt.is_some(),
        issued_token_type,
    ))
}

fn token_response(
    access: &keygate_auth::access::IssuedAccessToken,
    refresh: Option<&OpaqueToken>,
    scopes: &ScopeSet,
    bound: bool,
    issued_token_type: Option<&'static str>,
) -> Response {
    let scope: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let mut body = json!({
        "access_token": access.token.expose_secret(),
        "token_type": if bound { "DPoP" } else { "Bearer" },
        "expires_in": access.expires_in,
        "scope": scope.join(" "),
    });
    if let Some(obj) = body.as_object_mut() {
        if let Some(r) = refresh {
            obj.insert(
                "refresh_token".into(),
                Value::String(r.value().expose_secret().to_owned()),
            );
        }
        // RFC 8693 §2.2.1: a token exchange response names what it issued.
        if let Some(t) = issued_token_type {
            obj.insert("issued_token_type".into(), Value::String(t.into()));
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    (StatusCode::OK, headers, Json(body)).into_response()
}

fn family_state(f: &FamilyRecord) -> Result<FamilyState, OAuthError> {
    let (user, client, scopes) = TokenService::ids(&f.user_id, &f.client_id, &f.scopes)?;
    let bad = || OAuthError::unavailable(&"a stored family does not parse");
    Ok(FamilyState {
        family: SessionId::parse(&f.id).map_err(|_| bad())?,
        user,
        client,
        jkt: match &f.jkt {
            Some(j) => Some(Jkt::parse(j).ok_or_else(bad)?),
            None => None,
        },
        scopes,
        created_at: UnixTime(f.created_ms / 1000),
        last_used_at: UnixTime(f.last_used_ms / 1000),
        generation: u64::try_from(f.generation).map_err(|_| bad())?,
        previous_generation: f.previous_generation.and_then(|g| u64::try_from(g).ok()),
        rotated_at: f.rotated_ms.map(|m| UnixTime(m / 1000)),
        revoked_at: f.revoked_ms.map(|m| UnixTime(m / 1000)),
    })
}

async fn token(
    State(s): State<AppState>,
    served: Option<axum::Extension<Served>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let svc = service(&s)?;
    let form = Form::parse(&body)?;
    // A machine credential (`keygate machine add`) is not an OAuth client: its
    // client_credentials grant gives a machine token that reads what its policy grants.
    if form.get("grant_type") == Some("client_credentials") {
        let (id, secret) = presented_client(&headers, &form)?;
        if crate::ci::is_machine_id(&id) {
            let ci = s.ci.as_ref().ok_or_else(|| {
                OAuthError::unavailable(&"the CI service is not running (vault sealed)")
            })?;
            return crate::ci::machine_login(ci, &id, secret.as_deref(), &form).await;
        }
    }
    let client =
        authenticate_client(&svc, &headers, &form, TlsClient::of(&s, served.as_deref())).await?;
    match form.require("grant_type")? {
        "authorization_code" => authorization_code(&svc, &headers, &form, &client).await,
        "refresh_token" => refresh(&svc, &headers, &form, &client, peer.ip()).await,
        "client_credentials" => client_credentials(&svc, &headers, &form, &client).await,
        super::exchange::GRANT_TYPE => super::exchange::grant(&svc, &headers, &form, &client).await,
        "password" => Err(OAuthError::unsupported_grant_type()),
        _ => Err(OAuthError::unsupported_grant_type()),
    }
}

/// A single-use challenge for the app's attestation (`client_id` in the form).
async fn attestation_challenge(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let svc = service(&s)?;
    let form = Form::parse(&body)?;
    let client_id = form.require("client_id")?;
    let record = svc
        .store
        .client_by_id(client_id)
        .await
        .map_err(|e| OAuthError::unavailable(&e))?
        .filter(|c| c.removed_ms.is_none());
    let Some((att, record)) = svc
        .attestation
        .as_ref()
        .zip(record)
        .filter(|(a, c)| a.configured(&c.name))
    else {
        return Err(OAuthError::invalid_request(
            "This client has no app attestation configured",
        ));
    };
    let (challenge, expires_in) = att.challenge(&svc.csrf_key, &record.id);
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((
        StatusCode::OK,
        headers,
        Json(json!({"challenge": challenge, "expires_in": expires_in})),
    )
        .into_response())
}

async fn authorization_code(
    svc: &TokenService,
    headers: &HeaderMap,
    form: &Form,
    client: &AuthenticatedClient,
) -> Result<Response, OAuthError> {
    let proof_jkt = token_proof(svc, headers).await?;
    let code = form.require("code")?;
    let hash = TokenHash::of(code);
    let record = svc
        .store
        .code_by_hash(hash.as_bytes())
        .await
        .map_err(|e| OAuthError::unavailable(&e))?
        .ok_or_else(OAuthError::invalid_grant)?;
    let (user, code_client, scopes) =
        TokenService::ids(&record.user_id, &record.client_id, &record.scopes)?;
    let grant = CodeGrant {
        client: code_client,
        user: user.clone(),
        redirect_uri: record.redirect_uri.clone(),
        scopes: scopes.clone(),
        challenge: CodeChallenge::parse(Some(&record.challenge), Some("S256"))
            .map_err(|_| OAuthError::unavailable(&"stored challenge does not parse"))?,
        dpop_jkt: record.dpop_jkt.as_deref().and_then(Jkt::parse),
        expires_at: UnixTime(record.expires_ms / 1000),
    };
    let client_id = ClientId::parse(&client.id).map_err(|_| OAuthError::invalid_client())?;
    keygate_auth::code::redeem(
        &grant,
        &CodeRedemption {
            client: &client_id,
            redirect_uri: form.get("redirect_uri"),
            code_verifier: form.get("code_verifier"),
            proof_jkt: proof_jkt.as_ref(),
        },
        unix_now(),
    )
    .map_err(|e| OAuthError::at_token_endpoint(&e))?;
    let jkt = if svc.dpop_required_for(client) {
        refresh::family_binding(client_type(client), proof_jkt.as_ref())
            .map_err(|e| OAuthError::at_token_endpoint(&e))?
    } else {
        proof_jkt
    };
    let user_record = svc
        .store
        .user_by_id(user.as_str())
        .await
        .map_err(|e| OAuthError::unavailable(&e))?;
    if user_record.is_none_or(|u| u.disabled_ms.is_some()) {
        return Err(OAuthError::invalid_grant());
    }
    let verdict = super::attestation::evaluate(svc, client, form, jkt.as_ref(), None).await?;
    let session = SessionId::generate();
    let now = now_ms();
    let refresh_token = OpaqueToken::generate(TokenKind::Refresh);
    let mut family = FamilyRecord::started(
        session.as_str().to_owned(),
        user.as_str().to_owned(),
        client.id.clone(),
        jkt.as_ref().map(|j| j.as_str().to_owned()),
        record.scopes.clone(),
        now,
    );
    if let Some(v) = &verdict {
        family.tier = Some(v.tier.as_str().to_owned());
        family.attest_key = v.attested_key.clone();
        family.attest_counter = v.counter;
    }
    let audit = AuditEvent::new(
        format!("user:{}", user.as_str()),
        "token.issue",
        Outcome::Success,
    )
    .target(session.as_str())
    .detail("client", client.id.clone())
    .detail("grant", "authorization_code")
    .detail("dpop_bound", jkt.is_some());
    let audit = attestation_details(audit, verdict.as_ref()).detail(
        "refresh_ref",
        svc.token_ref("refresh", refresh_token.value().expose_secret()),
    );
    match svc
        .store
        .redeem_code(
            hash.as_bytes(),
            family,
            refresh_token.hash().as_bytes().to_vec(),
            audit,
            now,
        )
        .await
        .map_err(|e| OAuthError::unavailable(&e))?
    {
        Redemption::Redeemed => {}
        Redemption::AlreadyUsed { .. } => return Err(OAuthError::invalid_grant()),
    }
    grant_response(
        svc,
        client,
        AccessGrant {
            user,
            client: client_id,
            scopes: scopes.clone(),
            session,
            jkt: jkt.clone(),
            x5t: client.bound_cert().cloned(),
            tier: verdict.map(|v| v.tier),
        },
        Some(&refresh_token),
        None,
    )
    .await
}

/// The attestation outcome in a grant's audit entry.
fn attestation_details(
    audit: AuditEvent,
    verdict: Option<&super::attestation::Verdict>,
) -> AuditEvent {
    match verdict {
        None => audit,
        Some(v) => audit
            .detail("tier", v.tier.as_str())
            .detail("attestation", v.reason)
            .detail("platform", v.platform),
    }
}

async fn refresh(
    svc: &TokenService,
    headers: &HeaderMap,
    form: &Form,
    client: &AuthenticatedClient,
    ip: std::net::IpAddr,
) -> Result<Response, OAuthError> {
    let proof_jkt = token_proof(svc, headers).await.inspect_err(|_| {
        svc.signal(keygate_monitor::Signal::ProofRefused {
            ip,
            client: ClientId::parse(&client.id).ok(),
            user: None,
        });
    })?;
    let presented = form.require("refresh_token")?;
    let hash = TokenHash::of(presented);
    let (family_id, generation) = svc
        .store
        .refresh_token(hash.as_bytes())
        .await
        .map_err(|e| OAuthError::unavailable(&e))?
        .ok_or_else(OAuthError::invalid_grant)?;
    let client_id = ClientId::parse(&client.id).map_err(|_| OAuthError::invalid_client())?;
    let presenter = Presenter {
        client: &client_id,
        jkt: proof_jkt.as_ref(),
        // Once a client in DPoP migration must use DPoP, its unbound sessions end.
        must_be_bound: matches!(client_type(client), ClientType::Public)
            && client.bound_cert().is_none()
            && svc.dpop_required_for(client),
    };
    let token_ref = svc.token_ref("refresh", presented);
    // The attestation is judged once (its challenge is single use), on the session as it
    // is now; the rotation's compare-and-set keeps a replayed assertion counter out.
    // Only a client that attests pays for the extra read.
    let verdict = if super::attestation::attests(svc, client) {
        match svc
            .store
            .family(&family_id)
            .await
            .map_err(|e| OAuthError::unavailable(&e))?
        {
            Some(f) if f.client_id == client.id => {
                super::attestation::evaluate(svc, client, form, proof_jkt.as_ref(), Some(&f))
                    .await?
            }
            _ => None,
        }
    } else {
        None
    };
    // At most two rounds: a lost compare-and-set means another request rotated first;
    // deciding again on the new state yields a grace retry, reuse or a refusal.
    for _ in 0..2 {
        let record = svc
            .store
            .family(&family_id)
            .await
            .map_err(|e| OAuthError::unavailable(&e))?
            .ok_or_else(OAuthError::invalid_grant)?;
        let state = family_state(&record)?;
        let presented_token = PresentedToken {
            family: state.family.clone(),
            generation: u64::try_from(generation).map_err(|_| OAuthError::invalid_grant())?,
        };
        let now = unix_now();
        let rotation = match refresh::decide(
            &svc.refresh_policy,
            &state,
            &presented_token,
            &presenter,
            now,
        ) {
            RefreshDecision::Rotate(r) | RefreshDecision::GraceRetry(r) => r,
            RefreshDecision::RevokeFamily(reuse) => {
                let mut audit = AuditEvent::new(
                    format!("user:{}", state.user.as_str()),
                    "token.reuse_detected",
                    Outcome::Denied,
                )
                .target(state.family.as_str())
                .detail("presented_generation", reuse.presented_generation as i64)
                .detail("live_generation", reuse.live_generation as i64)
                .detail("refresh_ref", token_ref.clone());
                audit.outcome = Outcome::Denied;
                svc.store
                    .revoke_family(
                        state.family.as_str(),
                        "refresh token reuse",
                        audit,
                        now_ms(),
                    )
                    .await
                    .map_err(|e| OAuthError::unavailable(&e))?;
                tracing::warn!(
                    session = state.family.as_str(),
                    "refresh token reuse: session revoked"
                );
                return Err(OAuthError::at_token_endpoint(&reuse.to_error()));
            }
            RefreshDecision::Reject(r) => {
                if matches!(r, keygate_auth::refresh::RefreshRejection::KeyMismatch) {
                    // A refresh token shown with a key other than its session's: stolen.
                    svc.signal(keygate_monitor::Signal::KeyMismatch {
                        session: state.family.clone(),
                        user: state.user.clone(),
                        client: client_id.clone(),
                        ip,
                    });
                }
                return Err(OAuthError::at_token_endpoint(&r.to_error()));
            }
        };
        let next = OpaqueToken::generate(TokenKind::Refresh);
        let write = RotationWrite {
            family_id: record.id.clone(),
            expected_generation: rotation.expected_generation as i64,
            new_generation: rotation.new_generation as i64,
            previous_generation: rotation.previous_generation.map(|g| g as i64),
            rotated_ms: rotation.rotated_at.map(|t| t.0 * 1000),
            now_ms: now_ms(),
            new_token_hash: next.hash().as_bytes().to_vec(),
            attest_counter: verdict.as_ref().and_then(|v| v.counter),
        };
        let audit = AuditEvent::new(
            format!("user:{}", state.user.as_str()),
            "token.refresh",
            Outcome::Success,
        )
        .target(state.family.as_str())
        .detail("client", client.id.clone())
        .detail("generation", rotation.new_generation as i64)
        .detail(
            "refresh_ref",
            svc.token_ref("refresh", next.value().expose_secret()),
        );
        let audit = attestation_details(audit, verdict.as_ref());
        if !svc
            .store
            .rotate_family(write, audit)
            .await
            .map_err(|e| OAuthError::unavailable(&e))?
        {
            continue;
        }
        return grant_response(
            svc,
            client,
            AccessGrant {
                user: state.user.clone(),
                client: client_id.clone(),
                scopes: state.scopes.clone(),
                session: state.family.clone(),
                jkt: state.jkt.clone(),
                x5t: client.bound_cert().cloned(),
                tier: verdict.as_ref().map(|v| v.tier),
            },
            Some(&next),
            None,
        )
        .await;
    }
    Err(OAuthError::invalid_grant())
}

async fn client_credentials(
    svc: &TokenService,
    headers: &HeaderMap,
    form: &Form,
    client: &AuthenticatedClient,
) -> Result<Response, OAuthError> {
    if client.kind != "confidential" {
        return Err(OAuthError::unauthorized_client());
    }
    let proof_jkt = token_proof(svc, headers).await?;
    let allowed = ScopeSet::parse(&client.scopes).map_err(|_| OAuthError::invalid_scope())?;
    let requested = match form.get("scope") {
        Some(s) => Some(ScopeSet::parse(s).map_err(|_| OAuthError::invalid_scope())?),
        None => None,
    };
    let scopes = keygate_auth::code::grant_scopes(requested.as_ref(), &allowed)
        .ok_or_else(OAuthError::invalid_scope)?;
    let client_id = ClientId::parse(&client.id).map_err(|_| OAuthError::invalid_client())?;
    // The client acts as itself; a session row makes its tokens revocable like any other.
    let user = UserId::parse(&client.id).map_err(|_| OAuthError::invalid_client())?;
    let session = SessionId::generate();
    let now = now_ms();
    let scope_text: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let family = FamilyRecord::started(
        session.as_str().to_owned(),
        client.id.clone(),
        client.id.clone(),
        proof_jkt.as_ref().map(|j| j.as_str().to_owned()),
        scope_text.join(" "),
        now,
    );
    // No refresh token for this grant; the row's token hash is random and unusable.
    let unusable = OpaqueToken::generate(TokenKind::Other);
    svc.store
        .insert_family(
            family,
            unusable.hash().as_bytes().to_vec(),
            AuditEvent::new(
                format!("client:{}", client.id),
                "token.issue",
                Outcome::Success,
            )
            .target(session.as_str())
            .detail("grant", "client_credentials"),
            now,
        )
        .await
        .map_err(|e| OAuthError::unavailable(&e))?;
    grant_response(
        svc,
        client,
        AccessGrant {
            user,
            client: client_id,
            scopes: scopes.clone(),
            session,
            jkt: proof_jkt.clone(),
            x5t: client.bound_cert().cloned(),
            tier: None,
        },
        None,
        None,
    )
    .await
}

/// The session a token belongs to: a refresh token by its hash, an access token by its
/// verified `sid`.
async fn session_of(
    svc: &TokenService,
    token: &str,
) -> Result<Option<(String, String)>, OAuthError> {
    if let Some((family, _)) = svc
        .store
        .refresh_token(TokenHash::of(token).as_bytes())
        .await
        .map_err(|e| OAuthError::unavailable(&e))?
    {
        let client = svc
            .store
            .family(&family)
            .await
            .map_err(|e| OAuthError::unavailable(&e))?
            .map(|f| f.client_id)
            .unwrap_or_default();
        return Ok(Some((family, client)));
    }
    let keys = svc.keys().await;
    match keygate_auth::access::verify(&svc.access, &keys, token, unix_now()) {
        Ok(t) => Ok(Some((
            t.session().as_str().to_owned(),
            t.client().as_str().to_owned(),
        ))),
        Err(_) => Ok(None),
    }
}

/// RFC 7009: the client is authenticated; an unknown token is a 200; revoking either
/// token of a session revokes the whole family, access tokens included (S11).
async fn revoke(
    State(s): State<AppState>,
    served: Option<axum::Extension<Served>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let svc = service(&s)?;
    let form = Form::parse(&body)?;
    let client =
        authenticate_client(&svc, &headers, &form, TlsClient::of(&s, served.as_deref())).await?;
    let token = form.require("token")?;
    if let Some((family, owner)) = session_of(&svc, token).await? {
        // A client may only revoke its own tokens; another's are "unknown" (still 200).
        if owner == client.id {
            let audit = AuditEvent::new(
                format!("client:{}", client.id),
                "token.revoke",
                Outcome::Success,
            )
            .target(family.clone())
            .detail("token_ref", svc.token_ref("revoked", token));
            svc.store
                .revoke_family(&family, "revoked by client", audit, now_ms())
                .await
                .map_err(|e| OAuthError::unavailable(&e))?;
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::OK, headers).into_response())
}

/// RFC 7662: only confidential clients may introspect; any bad, expired or revoked
/// token answers exactly `{"active":false}` (S11).
async fn introspect(
    State(s): State<AppState>,
    served: Option<axum::Extension<Served>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let svc = service(&s)?;
    let form = Form::parse(&body)?;
    let client =
        authenticate_client(&svc, &headers, &form, TlsClient::of(&s, served.as_deref())).await?;
    if client.kind != "confidential" {
        return Err(OAuthError::invalid_client());
    }
    let inactive = || Json(json!({"active": false})).into_response();
    let Some(token) = form.get("token") else {
        return Ok(inactive());
    };
    let keys = svc.keys().await;
    let Ok(t) = keygate_auth::access::verify(&svc.access, &keys, token, unix_now()) else {
        return Ok(inactive());
    };
    let revoked = svc
        .store
        .family_revoked(t.session().as_str())
        .await
        .map_err(|e| OAuthError::unavailable(&e))?;
    if revoked {
        return Ok(inactive());
    }
    let scope: Vec<&str> = t.scopes().iter().map(|s| s.as_str()).collect();
    let mut body = json!({
        "active": true,
        "sub": t.user().as_str(),
        "client_id": t.client().as_str(),
        "scope": scope.join(" "),
        "exp": t.expires_at().0,
        "iat": t.issued_at().0,
        "iss": svc.issuer,
        "token_type": if t.jkt().is_some() { "DPoP" } else { "Bearer" },
        "sid": t.session().as_str(),
    });
    if let Some(obj) = body.as_object_mut() {
        // RFC 9449 §6.2 and RFC 8705 §3.2: the confirmation the token carries.
        let mut cnf = serde_json::Map::new();
        if let Some(jkt) = t.jkt() {
            cnf.insert("jkt".into(), Value::String(jkt.as_str().to_owned()));
        }
        if let Some(x5t) = t.x5t() {
            cnf.insert("x5t#S256".into(), Value::String(x5t.as_str().to_owned()));
        }
        if !cnf.is_empty() {
            obj.insert("cnf".into(), Value::Object(cnf));
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((headers, Json(body)).into_response())
}
