//! `/admin/v1/users`, `/clients`, `/sessions` and `/keys`: the token service.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keygate_audit::{AuditEvent, Outcome};
use keygate_auth::ids::ScopeSet;
use keygate_auth::opaque::{OpaqueToken, TokenKind};
use keygate_auth::password::PasswordHasher;
use keygate_auth::redirect::RedirectUri;
use keygate_auth::totp::{Totp, TotpSeed};
use keygate_store::{ClientRecord, UserRecord};
use keygate_vault::now_ms;
use secrecy::{ExposeSecret, SecretString};

use super::api::{
    AddClient, AddUser, Client, ClientList, ClientRemoved, KeyList, KeysRotated, MfaEnrolled,
    Session, SessionList, SessionQuery, SessionRevoked, SetClientDpop, SigningKey, User,
    UserDisabled, UserEnabled, UserList,
};
use super::openapi::{BadInput, BodyRefused, Conflict, NotFound, Refused};
use super::{Admin, Body, Params, Segment, no_store};
use crate::AppState;
use crate::error::ApiError;
use crate::mtls::TlsClientIdentity;
use crate::oauth::TokenService;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, add_user))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(enrol_mfa))
        .routes(routes!(list_clients, add_client))
        .routes(routes!(remove_client))
        .routes(routes!(set_client_dpop))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(list_keys))
        .routes(routes!(rotate_keys))
}

fn tokens(s: &AppState) -> Result<Arc<TokenService>, ApiError> {
    s.tokens.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sealed",
            "the token service is unavailable while the vault is sealed",
        )
    })
}

pub(super) fn valid_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {what} name: 1-64 characters of letters, digits, '.', '_', '-', '@'"
        )))
    }
}

/// A new password, checked against the length rules and hashed (Argon2id, off the async
/// workers): the PHC string to store.
pub(super) async fn hash_password(
    svc: &Arc<TokenService>,
    password: SecretString,
) -> Result<String, ApiError> {
    PasswordHasher::check_policy(&password).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let owner = Arc::clone(svc);
    let hash = tokio::task::spawn_blocking(move || owner.hasher.hash(&password))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    Ok(hash.as_str().to_owned())
}

fn scopes_text(scopes: &[String]) -> Result<String, ApiError> {
    let text = scopes.join(" ");
    if !scopes.is_empty() {
        ScopeSet::parse(&text).map_err(|_| {
            ApiError::bad_request("invalid scope (RFC 6749 §3.3 characters, no spaces)")
        })?;
    }
    Ok(text)
}

#[utoipa::path(
    post,
    path = "/admin/v1/users",
    tag = "users",
    summary = "Add a user",
    request_body = AddUser,
    responses((status = 200, description = "Done.", body = User), Refused, BodyRefused, Conflict)
)]
async fn add_user(
    admin: Admin,
    State(s): State<AppState>,
    Body(b): Body<AddUser>,
) -> Result<Json<User>, ApiError> {
    let svc = tokens(&s)?;
    valid_name(&b.name, "user")?;
    let scopes = scopes_text(&b.scopes)?;
    let hash = hash_password(&svc, b.password).await?;
    let id = format!(
        "u_{}",
        hex::encode(keygate_auth::opaque::random_bytes::<12>())
    );
    let user = UserRecord {
        id: id.clone(),
        name: b.name.clone(),
        password_hash: Some(hash),
        scopes,
        created_ms: now_ms(),
        disabled_ms: None,
        totp_sealed: None,
        totp_last_step: None,
        issuer: None,
        subject: None,
    };
    let audit = AuditEvent::new(admin.actor(), "user.add", Outcome::Success).target(b.name.clone());
    svc.store.create_user(user.clone(), audit, now_ms()).await?;
    Ok(Json(User::from(&user)))
}

#[utoipa::path(
    get,
    path = "/admin/v1/users",
    tag = "users",
    summary = "List users",
    responses((status = 200, description = "Done.", body = UserList), Refused)
)]
async fn list_users(_admin: Admin, State(s): State<AppState>) -> Result<Json<UserList>, ApiError> {
    let svc = tokens(&s)?;
    let users = svc.store.list_users().await?;
    Ok(Json(UserList {
        users: users.iter().map(User::from).collect(),
    }))
}

async fn user_named(svc: &TokenService, name: &str) -> Result<UserRecord, ApiError> {
    svc.store
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))
}

#[utoipa::path(
    post,
    path = "/admin/v1/users/{name}/disable",
    tag = "users",
    summary = "Disable a user and revoke their sessions",
    params(("name" = String, Path, description = "A user's name.")),
    responses((status = 200, description = "Done.", body = UserDisabled), Refused, NotFound)
)]
async fn disable_user(
    admin: Admin,
    State(s): State<AppState>,
    Segment(name): Segment,
) -> Result<Json<UserDisabled>, ApiError> {
    let svc = tokens(&s)?;
    let user = user_named(&svc, &name).await?;
    let audit =
        AuditEvent::new(admin.actor(), "user.disable", Outcome::Success).target(name.clone());
    let revoked = svc.store.disable_user(&user.id, audit, now_ms()).await?;
    Ok(Json(UserDisabled {
        name,
        disabled: true,
        revoked_sessions: revoked,
    }))
}

/// Lets a disabled user (by an operator or by the monitor) sign in again. Sessions
/// revoked when the user was disabled stay revoked.
#[utoipa::path(
    post,
    path = "/admin/v1/users/{name}/enable",
    tag = "users",
    summary = "Enable a disabled user",
    params(("name" = String, Path, description = "A user's name.")),
    responses((status = 200, description = "Done.", body = UserEnabled), Refused, NotFound)
)]
async fn enable_user(
    admin: Admin,
    State(s): State<AppState>,
    Segment(name): Segment,
) -> Result<Json<UserEnabled>, ApiError> {
    let svc = tokens(&s)?;
    let user = user_named(&svc, &name).await?;
    let audit =
        AuditEvent::new(admin.actor(), "user.enable", Outcome::Success).target(name.clone());
    let changed = svc.store.enable_user(&user.id, audit, now_ms()).await?;
    Ok(Json(UserEnabled {
        name,
        enabled: true,
        changed,
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/users/{name}/mfa",
    tag = "users",
    summary = "Enrol (or re-enrol) a user in TOTP; the seed is shown once",
    params(("name" = String, Path, description = "A user's name.")),
    responses((status = 200, description = "Done.", body = MfaEnrolled, headers(("Cache-Control" = String, description = "`no-store`"))), Refused, NotFound)
)]
async fn enrol_mfa(
    admin: Admin,
    State(s): State<AppState>,
    Segment(name): Segment,
) -> Result<Response, ApiError> {
    let svc = tokens(&s)?;
    let user = user_named(&svc, &name).await?;
    let seed = TotpSeed::generate();
    let sealed = svc
        .vault
        .seal_internal("totp-seed", &user.id, seed.expose_bytes())
        .map_err(ApiError::from)?;
    let audit =
        AuditEvent::new(admin.actor(), "user.mfa_enrol", Outcome::Success).target(name.clone());
    svc.store
        .set_user_totp(&user.id, sealed, audit, now_ms())
        .await?;
    let uri = Totp::default().otpauth_uri(&seed, "keygate", &user.name);
    Ok(no_store(MfaEnrolled {
        name,
        otpauth_uri: SecretString::from(uri.expose_secret().to_owned()),
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/clients",
    tag = "clients",
    summary = "Register an OAuth client (a confidential client's secret is shown once)",
    request_body = AddClient,
    responses((status = 200, description = "Done.", body = Client, headers(("Cache-Control" = String, description = "`no-store`"))), Refused, BodyRefused, Conflict)
)]
async fn add_client(
    admin: Admin,
    State(s): State<AppState>,
    Body(b): Body<AddClient>,
) -> Result<Response, ApiError> {
    let svc = tokens(&s)?;
    valid_name(&b.name, "client")?;
    let scopes = scopes_text(&b.scopes)?;
    for uri in &b.redirect_uris {
        RedirectUri::register(uri)
            .map_err(|e| ApiError::bad_request(format!("redirect URI {uri}: {e}")))?;
    }
    let tls = client_tls_auth(&b)?;
    let dpop = match b.dpop.as_deref() {
        None => None,
        Some(p) => client_dpop_policy(p)?,
    };
    let display_name = b
        .display_name
        .as_deref()
        .map(|t| page_text(t, "display_name", 64))
        .transpose()?;
    let session_note = b
        .session_note
        .as_deref()
        .map(|t| page_text(t, "session_note", 200))
        .transpose()?;
    let privacy_url = b.privacy_url.as_deref().map(privacy_url).transpose()?;
    let secret = match (b.kind.as_str(), &tls) {
        ("public", None) => {
            if b.redirect_uris.is_empty() {
                return Err(ApiError::bad_request(
                    "a public client needs at least one redirect URI",
                ));
            }
            None
        }
        ("public", Some(_)) => {
            return Err(ApiError::bad_request(
                "a certificate authentication method is for confidential clients",
            ));
        }
        ("confidential", None) => Some(OpaqueToken::generate(TokenKind::ClientSecret)),
        ("confidential", Some(_)) => None,
        _ => return Err(ApiError::bad_request("type must be public or confidential")),
    };
    let id = format!(
        "{}-{}",
        b.name,
        hex::encode(keygate_auth::opaque::random_bytes::<4>())
    );
    let client = ClientRecord {
        id: id.clone(),
        name: b.name.clone(),
        kind: b.kind.clone(),
        secret_hash: secret.as_ref().map(|t| t.hash().as_bytes().to_vec()),
        redirect_uris: b.redirect_uris.clone(),
        scopes,
        created_ms: now_ms(),
        removed_ms: None,
        auth_method: tls.as_ref().map(|(m, _)| (*m).to_owned()),
        tls_identity: tls
            .as_ref()
            .map(|(_, i)| serde_json::to_string(i))
            .transpose()
            .map_err(|e| ApiError::internal(&e))?,
        dpop: dpop.map(str::to_owned),
        display_name,
        privacy_url,
        session_note,
    };
    let audit = AuditEvent::new(admin.actor(), "client.add", Outcome::Success)
        .target(id.clone())
        .detail("type", b.kind.clone())
        .detail("dpop", dpop.unwrap_or("default"))
        .detail(
            "auth_method",
            tls.as_ref().map_or("client_secret", |(m, _)| *m),
        );
    svc.store
        .create_client(client.clone(), audit, now_ms())
        .await?;
    let mut body = Client::from(&client);
    body.client_secret = secret
        .as_ref()
        .map(|t| SecretString::from(t.value().expose_secret().to_owned()));
    Ok(no_store(body))
}

/// Text for the login page: trimmed, not empty, at most `max` characters, no control
/// characters (it is HTML-escaped when shown).
fn page_text(text: &str, field: &str, max: usize) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {max} characters without line breaks or control characters"
        )));
    }
    Ok(text.to_owned())
}

/// A privacy notice link: an absolute `https` URL (`http` only on loopback), without
/// credentials, at most 512 bytes.
fn privacy_url(text: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "privacy_url must be an https:// URL (http:// only on loopback), without user or password",
        )
    };
    let url = url::Url::parse(text.trim()).map_err(|_| bad())?;
    let scheme_ok =
        url.scheme() == "https" || (url.scheme() == "http" && crate::config::is_loopback(&url));
    if !scheme_ok
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.as_str().len() > 512
    {
        return Err(bad());
    }
    Ok(url.to_string())
}

/// A DPoP policy as the admin API takes it: `Some` of what is stored, `None` for
/// `default` (follow `tokens.dpop`), a 400 naming the choices otherwise.
fn client_dpop_policy(p: &str) -> Result<Option<&'static str>, ApiError> {
    use crate::oauth::{DPOP_OPTIONAL, DPOP_REQUIRED};
    match p {
        DPOP_OPTIONAL => Ok(Some(DPOP_OPTIONAL)),
        DPOP_REQUIRED => Ok(Some(DPOP_REQUIRED)),
        "default" => Ok(None),
        _ => Err(ApiError::bad_request(
            "dpop must be optional, required or default",
        )),
    }
}

/// Changes a client's own DPoP policy. Tightening it (`required`) takes effect at once
/// for new tokens and, at the proxy, for unbound tokens already issued (within the
/// revocation freshness bound on other replicas).
#[utoipa::path(
    post,
    path = "/admin/v1/clients/{id}/dpop",
    tag = "clients",
    summary = "Set a client's own DPoP policy",
    params(("id" = String, Path, description = "A client's id.")),
    request_body = SetClientDpop,
    responses((status = 200, description = "Done.", body = Client), Refused, BodyRefused, NotFound)
)]
async fn set_client_dpop(
    admin: Admin,
    State(s): State<AppState>,
    Segment(id): Segment,
    Body(b): Body<SetClientDpop>,
) -> Result<Json<Client>, ApiError> {
    let svc = tokens(&s)?;
    let policy = client_dpop_policy(&b.dpop)?;
    let audit = AuditEvent::new(admin.actor(), "client.dpop", Outcome::Success)
        .target(id.clone())
        .detail("dpop", policy.unwrap_or("default"));
    match svc
        .store
        .set_client_dpop(&id, policy, audit, now_ms())
        .await
    {
        Ok(()) => {}
        Err(keygate_store::StoreError::NotFound) => {
            return Err(ApiError::not_found("no such client"));
        }
        Err(e) => return Err(e.into()),
    }
    let client = svc
        .store
        .client_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such client"))?;
    Ok(Json(Client::from(&client)))
}

/// The RFC 8705 method and identity of a registration, if it names one; a 400 that says
/// what is missing or wrong otherwise.
fn client_tls_auth(b: &AddClient) -> Result<Option<(&'static str, TlsClientIdentity)>, ApiError> {
    use crate::mtls::{SELF_SIGNED_TLS_CLIENT_AUTH, TLS_CLIENT_AUTH};
    let names = [
        b.tls_client_auth_subject_dn.as_ref(),
        b.tls_client_auth_san_dns.as_ref(),
        b.tls_client_auth_san_uri.as_ref(),
    ];
    let named = names.iter().flatten().count();
    match b.token_endpoint_auth_method.as_deref() {
        None | Some("client_secret_basic" | "client_secret_post" | "none") => {
            if named > 0 || b.certificates.is_some() {
                return Err(ApiError::bad_request(
                    "tls_client_auth_* and certificates need token_endpoint_auth_method tls_client_auth or self_signed_tls_client_auth",
                ));
            }
            Ok(None)
        }
        Some(TLS_CLIENT_AUTH) => {
            if b.certificates.is_some() {
                return Err(ApiError::bad_request(
                    "certificates are for self_signed_tls_client_auth; tls_client_auth names the subject instead",
                ));
            }
            let identity = match (
                &b.tls_client_auth_subject_dn,
                &b.tls_client_auth_san_dns,
                &b.tls_client_auth_san_uri,
            ) {
                (Some(dn), None, None) => {
                    crate::mtls::valid_subject_dn(dn).map_err(ApiError::bad_request)?;
                    TlsClientIdentity::SubjectDn(dn.trim().to_owned())
                }
                (None, Some(dns), None) if !dns.trim().is_empty() => {
                    TlsClientIdentity::SanDns(dns.trim().to_ascii_lowercase())
                }
                (None, None, Some(uri)) if url::Url::parse(uri).is_ok() => {
                    TlsClientIdentity::SanUri(uri.clone())
                }
                _ => {
                    return Err(ApiError::bad_request(
                        "tls_client_auth needs exactly one of tls_client_auth_subject_dn, tls_client_auth_san_dns (a host name) or tls_client_auth_san_uri (a URI)",
                    ));
                }
            };
            Ok(Some((TLS_CLIENT_AUTH, identity)))
        }
        Some(SELF_SIGNED_TLS_CLIENT_AUTH) => {
            if named > 0 {
                return Err(ApiError::bad_request(
                    "self_signed_tls_client_auth registers certificates, not tls_client_auth_* names",
                ));
            }
            let pem = b.certificates.as_deref().ok_or_else(|| {
                ApiError::bad_request("self_signed_tls_client_auth needs certificates (PEM)")
            })?;
            let thumbprints = crate::mtls::thumbprints_of_pem(pem)
                .map_err(|e| ApiError::bad_request(format!("certificates: {e}")))?;
            Ok(Some((
                SELF_SIGNED_TLS_CLIENT_AUTH,
                TlsClientIdentity::SelfSigned(thumbprints),
            )))
        }
        Some(_) => Err(ApiError::bad_request(
            "token_endpoint_auth_method must be client_secret_basic, tls_client_auth or self_signed_tls_client_auth",
        )),
    }
}

#[utoipa::path(
    get,
    path = "/admin/v1/clients",
    tag = "clients",
    summary = "List OAuth clients",
    responses((status = 200, description = "Done.", body = ClientList), Refused)
)]
async fn list_clients(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<ClientList>, ApiError> {
    let svc = tokens(&s)?;
    let clients = svc.store.list_clients().await?;
    Ok(Json(ClientList {
        clients: clients.iter().map(Client::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/clients/{id}",
    tag = "clients",
    summary = "Remove a client and revoke its sessions",
    params(("id" = String, Path, description = "A client's id.")),
    responses((status = 200, description = "Done.", body = ClientRemoved), Refused, NotFound)
)]
async fn remove_client(
    admin: Admin,
    State(s): State<AppState>,
    Segment(id): Segment,
) -> Result<Json<ClientRemoved>, ApiError> {
    let svc = tokens(&s)?;
    let audit =
        AuditEvent::new(admin.actor(), "client.remove", Outcome::Success).target(id.clone());
    let revoked = svc.store.remove_client(&id, audit, now_ms()).await?;
    Ok(Json(ClientRemoved {
        client_id: id,
        removed: true,
        revoked_sessions: revoked,
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/sessions",
    tag = "sessions",
    summary = "List sessions (refresh-token families)",
    params(SessionQuery),
    responses((status = 200, description = "Done.", body = SessionList), Refused, BadInput, NotFound)
)]
async fn list_sessions(
    _admin: Admin,
    State(s): State<AppState>,
    Params(q): Params<SessionQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let svc = tokens(&s)?;
    let user_id = match &q.user {
        Some(name) => Some(user_named(&svc, name).await?.id),
        None => None,
    };
    let families = svc.store.list_families(user_id.as_deref(), q.all).await?;
    Ok(Json(SessionList {
        sessions: families.iter().map(Session::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/sessions/{id}",
    tag = "sessions",
    summary = "Revoke a session: its refresh and access tokens stop working",
    params(("id" = String, Path, description = "A session's id.")),
    responses((status = 200, description = "Done.", body = SessionRevoked), Refused, NotFound)
)]
async fn revoke_session(
    admin: Admin,
    State(s): State<AppState>,
    Segment(id): Segment,
) -> Result<Json<SessionRevoked>, ApiError> {
    let svc = tokens(&s)?;
    let audit =
        AuditEvent::new(admin.actor(), "session.revoke", Outcome::Success).target(id.clone());
    let changed = svc
        .store
        .revoke_family(&id, "revoked by admin", audit, now_ms())
        .await?;
    if !changed {
        return Err(ApiError::not_found("no such live session"));
    }
    Ok(Json(SessionRevoked { id, revoked: true }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/keys",
    tag = "keys",
    summary = "List token signing keys",
    responses((status = 200, description = "Done.", body = KeyList), Refused)
)]
async fn list_keys(_admin: Admin, State(s): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let svc = tokens(&s)?;
    let records = svc.store.signing_keys().await?;
    Ok(Json(KeyList {
        keys: records.iter().map(SigningKey::from).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/keys/rotate",
    tag = "keys",
    summary = "Move the signing keys one step: next becomes current, a new next is published",
    responses((status = 200, description = "Done.", body = KeysRotated), Refused)
)]
async fn rotate_keys(
    admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<KeysRotated>, ApiError> {
    let svc = tokens(&s)?;
    let what = svc
        .rotate_keys(true, &admin.actor())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(KeysRotated {
        changed: what.is_some(),
        message: what.unwrap_or_else(|| "nothing to do".into()),
    }))
}
