//! The token service, wired: keygate-auth's protocol core on top of the store and the
//! vault. HTTP lives in [`endpoints`] (OAuth) and [`crate::admin::tokens`] (users, clients,
//! sessions, keys); this module holds the state they share and the operations they call.

pub mod attestation;
pub mod endpoints;
pub mod error;
pub mod exchange;
pub(crate) mod login;
mod throttle;

pub use error::OAuthError;

use std::sync::Arc;

use keygate_audit::{AuditEvent, AuditKey, Outcome};
use keygate_auth::UnixTime;
use keygate_auth::access::{AccessGrant, AccessTokenCache, AccessTokenConfig, VerifiedAccessToken};
use keygate_auth::dpop::{
    DpopConfig, Freshness, InMemoryReplayCache, NonceIssuer, PublicBaseUrl, ReplayCache,
    ReplayCacheUnavailable, ReplayKey, RestartGuard,
};
use keygate_auth::error::AuthError;
use keygate_auth::ids::{ClientId, ScopeSet, SessionId, UserId};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::{KeyEntry, KeyState, Kid, RotationPolicy, SigningKey, SigningKeySet};
use keygate_auth::password::PasswordHasher;
use keygate_auth::refresh::RefreshPolicy;
use keygate_auth::resource::{
    ResourceRequest, ResourceVerifier, RevocationCheck, RevocationUnavailable, VerifiedAccess,
};
use keygate_auth::throttle::ThrottlePolicy;
use keygate_store::{ClientRecord, SigningKeyRecord, Store};
use keygate_vault::{Vault, now_ms};
use secrecy::SecretBox;
use tokio::sync::RwLock;
use zeroize::Zeroizing;

use crate::config::{Config, TokenSettings};

const SIGNING_KEY_LABEL: &str = "signing-key";

/// The DPoP replay cache on the store (S14): one atomic upsert per proof, shared by every
/// replica on PostgreSQL, surviving restarts on both back ends.
#[derive(Clone)]
pub struct StoreReplay(pub Arc<dyn Store>);

impl ReplayCache for StoreReplay {
    async fn insert_if_absent(
        &self,
        key: ReplayKey,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<Freshness, ReplayCacheUnavailable> {
        match self
            .0
            .dpop_seen(key.as_bytes(), expires_at.0 * 1000, now.0 * 1000)
            .await
        {
            Ok(true) => Ok(Freshness::Fresh),
            Ok(false) => Ok(Freshness::Replayed),
            Err(e) => {
                tracing::error!(error = %e, "DPoP replay cache unavailable");
                Err(ReplayCacheUnavailable)
            }
        }
    }
}

/// Live replay entries the in-process cache holds at most: 61 s of proofs at 30k/s. When
/// full of live entries it answers "unavailable" (503, S35) rather than forget one.
const MEMORY_REPLAY_CAPACITY: usize = 2_000_000;

/// The DPoP replay cache this process uses (S14).
///
/// - SQLite (embedded): one process owns the store, so the cache lives in its memory, a
///   hash-set insert per proof instead of a synced write. A restart empties it; the
///   [`RestartGuard`] in the DPoP checks keeps a proof from before the restart out.
/// - PostgreSQL (scaled out): in the store, shared by every replica.
/// - Redis (`[coordination]`): shared by every replica, one `SET NX` per proof.
pub enum Replay {
    Memory(InMemoryReplayCache),
    Store(StoreReplay),
    Redis(crate::coordination::RedisReplay),
}

impl Replay {
    /// The right cache for `store`'s back end, or Redis when the replicas coordinate.
    pub fn for_store(
        store: &Arc<dyn Store>,
        coordinator: Option<&Arc<crate::coordination::Coordinator>>,
    ) -> Self {
        if let Some(c) = coordinator {
            Replay::Redis(crate::coordination::RedisReplay(c.clone()))
        } else if store.backend() == "sqlite" {
            Replay::Memory(InMemoryReplayCache::new(MEMORY_REPLAY_CAPACITY))
        } else {
            Replay::Store(StoreReplay(store.clone()))
        }
    }

    /// Whether proofs must pass the restart guard (the cache forgets on restart).
    pub fn in_process(&self) -> bool {
        matches!(self, Replay::Memory(_))
    }
}

impl ReplayCache for Replay {
    async fn insert_if_absent(
        &self,
        key: ReplayKey,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<Freshness, ReplayCacheUnavailable> {
        match self {
            Replay::Memory(m) => m.insert_if_absent(key, now, expires_at).await,
            Replay::Store(s) => s.insert_if_absent(key, now, expires_at).await,
            Replay::Redis(r) => r.insert_if_absent(key, now, expires_at).await,
        }
    }
}

/// How long a "not revoked" answer may be reused for a revocation made by *another*
/// replica. A revocation made through this process is seen by the very next call: the
/// cache is keyed to the store's change epoch (S12).
pub const REVOCATION_STALENESS: std::time::Duration = std::time::Duration::from_secs(1);

/// Revocation from the store, asked on every verified request (S12): a revoked family, a
/// disabled user or a removed client makes the token fail. Only "still live" answers are
/// cached, for at most [`REVOCATION_STALENESS`] and never across a local change.
pub struct StoreRevocation {
    store: Arc<dyn Store>,
    /// Keyed by session id, of tokens already verified (keygate's own ids).
    live: std::sync::Mutex<keygate_auth::ids::IdMap<String, (u64, std::time::Instant)>>,
    /// The clients registered with `dpop = "optional"`, as of a change epoch and a time;
    /// kept under the same freshness rule as `live`.
    bearer_clients: std::sync::Mutex<Option<BearerClients>>,
}

struct BearerClients {
    epoch: u64,
    read_at: std::time::Instant,
    ids: Arc<keygate_auth::ids::IdSet<String>>,
}

impl StoreRevocation {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            live: Default::default(),
            bearer_clients: Default::default(),
        }
    }

    async fn bearer_clients(
        &self,
    ) -> Result<Arc<keygate_auth::ids::IdSet<String>>, RevocationUnavailable> {
        let epoch = self.store.change_epoch();
        if let Ok(cached) = self.bearer_clients.lock() {
            if let Some(c) = cached.as_ref() {
                if c.epoch == epoch && c.read_at.elapsed() < REVOCATION_STALENESS {
                    return Ok(c.ids.clone());
                }
            }
        }
        let clients = self.store.list_clients().await.map_err(|e| {
            tracing::error!(error = %e, "client policy store unavailable");
            RevocationUnavailable
        })?;
        let ids: Arc<keygate_auth::ids::IdSet<String>> = Arc::new(
            clients
                .into_iter()
                .filter(|c| c.removed_ms.is_none() && c.dpop.as_deref() == Some(DPOP_OPTIONAL))
                .map(|c| c.id)
                .collect(),
        );
        if let Ok(mut cached) = self.bearer_clients.lock() {
            *cached = Some(BearerClients {
                epoch,
                read_at: std::time::Instant::now(),
                ids: ids.clone(),
            });
        }
        Ok(ids)
    }
}

/// A client's own DPoP policy as stored (`clients.dpop`): Bearer allowed while migrating.
pub const DPOP_OPTIONAL: &str = "optional";
/// A client's own DPoP policy as stored: DPoP always, whatever `tokens.dpop` says.
pub const DPOP_REQUIRED: &str = "required";
/// The longest an access token may live when a client in DPoP migration gets it unbound
/// (`client add --dpop optional` without a proof): a stolen Bearer token is good for
/// at most this long.
pub const UNBOUND_BEARER_TTL_SECS: i64 = 120;

impl RevocationCheck for StoreRevocation {
    async fn is_revoked(&self, token: &VerifiedAccessToken) -> Result<bool, RevocationUnavailable> {
        let sid = token.session().as_str();
        // Read the epoch before the store: a change committed after this point bumps it.
        let epoch = self.store.change_epoch();
        if let Ok(live) = self.live.lock() {
            if let Some((e, at)) = live.get(sid) {
                if *e == epoch && at.elapsed() < REVOCATION_STALENESS {
                    return Ok(false);
                }
            }
        }
        let revoked = self.store.family_revoked(sid).await.map_err(|e| {
            tracing::error!(error = %e, "revocation store unavailable");
            RevocationUnavailable
        })?;
        if !revoked {
            if let Ok(mut live) = self.live.lock() {
                if live.len() > 100_000 {
                    live.clear();
                }
                live.insert(sid.to_owned(), (epoch, std::time::Instant::now()));
            }
        }
        Ok(revoked)
    }

    async fn allows_unbound_bearer(
        &self,
        client: &ClientId,
    ) -> Result<bool, RevocationUnavailable> {
        Ok(self.bearer_clients().await?.contains(client.as_str()))
    }
}

/// Everything the token endpoints and the resource check share.
pub struct TokenService {
    pub store: Arc<dyn Store>,
    pub vault: Arc<Vault>,
    pub settings: TokenSettings,
    /// The issuer: the public URL without a trailing slash.
    pub issuer: String,
    pub public_base: PublicBaseUrl,
    pub access: AccessTokenConfig,
    pub verifier: ResourceVerifier,
    /// DPoP checks at the token endpoint (the same rules as at resources).
    pub token_dpop: DpopConfig,
    keys: RwLock<Arc<SigningKeySet>>,
    /// Held across a read of the key set from the store and its installation (a reload,
    /// or a rotation's read, save and install), so a slower reload never installs a set
    /// older than one a rotation just saved.
    key_update: tokio::sync::Mutex<()>,
    pub replay: Replay,
    pub revocation: StoreRevocation,
    pub refresh_policy: RefreshPolicy,
    pub hasher: PasswordHasher,
    /// Failed sign-ins per account, per (account, address) and per address (S18); in
    /// process, so a restart forgets them, which only ever loosens the delay.
    pub(crate) throttle: throttle::LoginThrottle,
    pub audit_key: AuditKey,
    /// Keys CSRF tokens of the login form (wiped on drop).
    pub(crate) csrf_key: Zeroizing<[u8; 32]>,
    /// Identity providers whose ID tokens are exchanged (`[[tokens.issuers]]`).
    pub issuers: exchange::TrustedIssuers,
    /// The monitor, once the server has started it: failed sign-ins, refused proofs and
    /// refresh tokens presented with another key are signalled to it.
    pub monitor: std::sync::OnceLock<Arc<keygate_monitor::Monitor>>,
    /// App attestation of the clients in `[[attestation.clients]]`; `None` without any.
    pub attestation: Option<attestation::Attestation>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Why the token service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the vault is sealed")]
    Sealed,
    #[error("public_url cannot be the base of DPoP `htu` values")]
    BaseUrl,
    #[error("signing keys: {0}")]
    Keys(String),
    #[error("storage: {0}")]
    Store(#[from] keygate_store::StoreError),
    #[error("trusted issuers: {0}")]
    Issuers(String),
    #[error("{0}")]
    Attestation(String),
}

pub(crate) fn unix_now() -> UnixTime {
    UnixTime(now_ms() / 1000)
}

/// How late the recorded horizon may be against the proofs accepted: the heartbeat's
/// period plus slack for a slow write.
const HORIZON_MARGIN_SECS: i64 = 5;

/// How often a process with an in-process replay cache records its horizon.
pub const HORIZON_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// The latest `iat` an earlier process of this store may have accepted (see
/// [`RestartGuard`]), and this process's own first horizon, recorded before it serves.
async fn restart_horizon(
    store: &Arc<dyn Store>,
    base: &PublicBaseUrl,
) -> Result<UnixTime, StartError> {
    let now = unix_now();
    let latest_possible = now
        .0
        .saturating_add(DpopConfig::new(base.clone()).future_skew_secs);
    let until = match store.replay_horizon().await? {
        Some(recorded) => recorded
            .saturating_add(HORIZON_MARGIN_SECS)
            .min(latest_possible),
        // Unknown: anything up to now may have been seen.
        None => latest_possible,
    };
    store.set_replay_horizon(latest_possible).await?;
    Ok(UnixTime(until))
}

impl TokenService {
    /// Records how late a proof this process accepts may be dated (every
    /// [`HORIZON_PERIOD`] while it serves), when its replay cache is in memory.
    pub async fn record_replay_horizon(&self) -> Result<(), keygate_store::StoreError> {
        if !self.replay.in_process() {
            return Ok(());
        }
        let skew = self.token_dpop.future_skew_secs;
        self.store
            .set_replay_horizon(unix_now().0.saturating_add(skew))
            .await
    }
}

fn dpop_config(
    base: &PublicBaseUrl,
    settings: &TokenSettings,
    mac: &[u8; 32],
    guard: Option<RestartGuard>,
) -> DpopConfig {
    let mut cfg = DpopConfig::new(base.clone());
    if settings.dpop_nonce {
        // Derived from the system key: every replica issues and accepts the same nonces.
        cfg.nonces = Some(NonceIssuer::new(SecretBox::new(Box::new(*mac)), 300));
    }
    cfg.restart_guard = guard;
    cfg
}

impl TokenService {
    /// Loads (or on first start creates) the signing keys and builds the service. Fails
    /// while the vault is sealed: the token endpoints then answer 503.
    pub async fn start(
        config: &Config,
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        coordinator: Option<&Arc<crate::coordination::Coordinator>>,
    ) -> Result<Self, StartError> {
        let keyring = vault.keyring().ok_or(StartError::Sealed)?.clone();
        let issuer = config.public_url.as_str().trim_end_matches('/').to_owned();
        let public_base = PublicBaseUrl::parse(&issuer).map_err(|_| StartError::BaseUrl)?;
        let settings = config.tokens.clone();
        let mut access = AccessTokenConfig::new(issuer.clone(), issuer.clone());
        access.ttl_secs = settings.access_ttl_secs;
        let mac = keyring.mac.clone();
        let replay = Replay::for_store(&store, coordinator);
        let until = if replay.in_process() {
            Some(restart_horizon(&store, &public_base).await?)
        } else {
            None
        };
        // One random key per process, never stored: nonces of the previous process fail.
        let guard_key = Zeroizing::new(keygate_auth::opaque::random_bytes::<32>());
        let guard = || until.map(|until| RestartGuard::new(until, *guard_key));
        let verifier = ResourceVerifier {
            access: access.clone(),
            dpop: dpop_config(&public_base, &settings, &mac, guard()),
            allow_unbound_bearer: !settings.dpop_required,
            token_cache: Some(AccessTokenCache::new(100_000)),
        };
        let token_dpop = dpop_config(&public_base, &settings, &mac, guard());
        let hasher = PasswordHasher::recommended()
            .map_err(|e| StartError::Keys(format!("password hasher: {e}")))?;
        let csrf_key = {
            use hmac::{Hmac, Mac};
            let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(mac.as_slice())
                .map_err(|_| StartError::Keys("mac key".into()))?;
            m.update(b"keygate/v1/csrf");
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(&m.finalize().into_bytes());
            key
        };
        let issuers = exchange::TrustedIssuers::load(&settings.issuers).await?;
        let attestation = if config.attestation.clients.is_empty() {
            None
        } else {
            Some(
                attestation::Attestation::load(&config.attestation)
                    .map_err(StartError::Attestation)?,
            )
        };
        let service = Self {
            attestation,
            issuers,
            monitor: std::sync::OnceLock::new(),
            replay,
            revocation: StoreRevocation::new(store.clone()),
            refresh_policy: RefreshPolicy {
                idle_secs: settings.refresh_idle_secs,
                absolute_secs: settings.refresh_absolute_secs,
                grace_secs: settings.refresh_grace_secs,
            },
            store,
            vault,
            issuer,
            public_base,
            access,
            verifier,
            token_dpop,
            key_update: tokio::sync::Mutex::new(()),
            // A fresh set, used only if the store has none yet (the first start).
            keys: RwLock::new(Arc::new(SigningKeySet::bootstrap(
                rotation_policy(&settings),
                SigningKey::generate(settings.signing_alg),
                unix_now(),
            ))),
            settings,
            hasher,
            throttle: throttle::LoginThrottle::new(
                ThrottlePolicy::default(),
                config.tokens.login_ip_max_failures,
                config.tokens.login_ip_window_secs,
            ),
            audit_key: keyring.audit.clone(),
            csrf_key,
        };
        match service.load_keys().await? {
            Some(stored) => *service.keys.write().await = Arc::new(stored),
            None => {
                let fresh = service.keys().await;
                let saved = service
                    .save_keys(&fresh, &[], "system", "keys.bootstrap")
                    .await?;
                if !saved {
                    // Another replica, starting at the same moment, stored the first set:
                    // every replica signs with that one.
                    let stored = service.load_keys().await?.ok_or_else(|| {
                        StartError::Keys("the signing keys changed while starting".into())
                    })?;
                    *service.keys.write().await = Arc::new(stored);
                }
            }
        }
        Ok(service)
    }

    /// The current signing key set.
    pub async fn keys(&self) -> Arc<SigningKeySet> {
        self.keys.read().await.clone()
    }

    async fn load_keys(&self) -> Result<Option<SigningKeySet>, StartError> {
        let records = self.store.signing_keys().await?;
        if records.is_empty() {
            return Ok(None);
        }
        let mut entries = Vec::with_capacity(records.len());
        for r in records {
            let alg = match r.alg.as_str() {
                "EdDSA" => Algorithm::EdDsa,
                "ES256" => Algorithm::Es256,
                other => return Err(StartError::Keys(format!("unknown algorithm {other}"))),
            };
            let secret = self
                .vault
                .open_internal(SIGNING_KEY_LABEL, &r.kid, &r.sealed_private)
                .map_err(|e| StartError::Keys(e.to_string()))?;
            let key = SigningKey::from_secret_bytes(alg, &secret)
                .map_err(|e| StartError::Keys(e.to_string()))?;
            let state = match r.state.as_str() {
                "next" => KeyState::Next,
                "active" => KeyState::Active,
                "retired" => KeyState::Retired {
                    since: UnixTime(r.changed_ms / 1000),
                },
                other => return Err(StartError::Keys(format!("unknown key state {other}"))),
            };
            let kid = Kid::parse(&r.kid).map_err(|e| StartError::Keys(e.to_string()))?;
            entries.push(KeyEntry {
                kid,
                key,
                state,
                published_at: UnixTime(r.created_ms / 1000),
            });
        }
        SigningKeySet::from_entries(rotation_policy(&self.settings), entries)
            .map(Some)
            .map_err(|e| StartError::Keys(e.to_string()))
    }

    async fn save_keys(
        &self,
        set: &SigningKeySet,
        expected: &[String],
        actor: &str,
        action: &str,
    ) -> Result<bool, StartError> {
        use secrecy::ExposeSecret;
        let mut records = Vec::new();
        for e in set.entries() {
            let sealed = self
                .vault
                .seal_internal(
                    SIGNING_KEY_LABEL,
                    e.kid.as_str(),
                    e.key.to_secret_bytes().expose_secret(),
                )
                .map_err(|e| StartError::Keys(e.to_string()))?;
            let (state, changed) = match e.state {
                KeyState::Next => ("next", e.published_at.0),
                KeyState::Active => ("active", e.published_at.0),
                KeyState::Retired { since } => ("retired", since.0),
            };
            records.push(SigningKeyRecord {
                kid: e.kid.as_str().to_owned(),
                alg: e.key.algorithm().as_str().to_owned(),
                sealed_private: sealed,
                state: state.to_owned(),
                created_ms: e.published_at.0 * 1000,
                changed_ms: changed * 1000,
            });
        }
        let kids: Vec<String> = set
            .entries()
            .iter()
            .map(|e| e.kid.as_str().to_owned())
            .collect();
        Ok(self
            .store
            .save_signing_keys(
                records,
                expected,
                AuditEvent::new(actor, action, Outcome::Success).detail("kids", kids),
                now_ms(),
            )
            .await?)
    }

    /// One rotation step, on schedule or on demand (`force`):
    /// - no next key yet: publish one (it signs after `min_publish_secs`, S06);
    /// - a next key published long enough, and the active key due (or `force`): promote
    ///   it and publish a new next key;
    /// - retired keys whose tokens have all expired are dropped.
    ///
    /// Returns a one-line description of what changed, or `None`.
    pub async fn rotate_keys(
        &self,
        force: bool,
        actor: &str,
    ) -> Result<Option<String>, StartError> {
        let _update = self.key_update.lock().await;
        let now = unix_now();
        let Some(mut set) = self.load_keys().await? else {
            return Ok(None);
        };
        let loaded: Vec<String> = set
            .entries()
            .iter()
            .map(|e| e.kid.as_str().to_owned())
            .collect();
        let policy = rotation_policy(&self.settings);
        let active_since = set.active().map(|e| e.published_at).unwrap_or(now);
        let next = set
            .entries()
            .iter()
            .find(|e| e.state == KeyState::Next)
            .map(|e| e.published_at);
        let due = now.0 >= active_since.0 + self.settings.key_rotation_secs;
        let mut what = Vec::new();
        match next {
            None if force
                || now.0
                    >= active_since.0 + self.settings.key_rotation_secs
                        - policy.min_publish_secs =>
            {
                let kid = set
                    .add_next(SigningKey::generate(self.settings.signing_alg), now)
                    .map_err(|e| StartError::Keys(e.to_string()))?;
                what.push(format!(
                    "published next key {} (signs after {}s in the JWKS)",
                    kid.as_str(),
                    policy.min_publish_secs
                ));
            }
            Some(published) if (force || due) && now.0 >= published.0 + policy.min_publish_secs => {
                set.rotate(SigningKey::generate(self.settings.signing_alg), now)
                    .map_err(|e| StartError::Keys(e.to_string()))?;
                let active = set
                    .active()
                    .map(|e| e.kid.as_str().to_owned())
                    .unwrap_or_default();
                what.push(format!(
                    "promoted {active} to signing key and published a new next key"
                ));
            }
            Some(published) if force => {
                what.push(format!(
                    "the next key has been published for {}s; it can sign after {}s",
                    now.0 - published.0,
                    policy.min_publish_secs
                ));
                return Ok(Some(what.join("; ")));
            }
            _ => {}
        }
        let pruned = set.prune(now);
        if !pruned.is_empty() {
            what.push(format!("dropped {} expired retired key(s)", pruned.len()));
        }
        if what.is_empty() {
            return Ok(None);
        }
        if !self.save_keys(&set, &loaded, actor, "keys.rotate").await? {
            // Another replica rotated first: take its set, not ours.
            if let Some(theirs) = self.load_keys().await? {
                *self.keys.write().await = Arc::new(theirs);
            }
            return Ok(Some(
                "another replica rotated the keys first; using its set".into(),
            ));
        }
        *self.keys.write().await = Arc::new(set);
        Ok(Some(what.join("; ")))
    }

    /// Re-reads the key set from the store (another replica may have rotated it).
    pub async fn reload_keys(&self) -> Result<(), StartError> {
        let _update = self.key_update.lock().await;
        if let Some(set) = self.load_keys().await? {
            *self.keys.write().await = Arc::new(set);
        }
        Ok(())
    }

    /// Issues an access token. An unbound one for a client in DPoP migration lives at
    /// most [`UNBOUND_BEARER_TTL_SECS`].
    pub async fn issue_access(
        &self,
        grant: &AccessGrant,
        client: &ClientRecord,
    ) -> Result<keygate_auth::access::IssuedAccessToken, OAuthError> {
        let keys = self.keys().await;
        let migrating = grant.jkt.is_none()
            && grant.x5t.is_none()
            && client.dpop.as_deref() == Some(DPOP_OPTIONAL);
        let issued = if migrating && self.access.ttl_secs > UNBOUND_BEARER_TTL_SECS {
            let mut capped = self.access.clone();
            capped.ttl_secs = UNBOUND_BEARER_TTL_SECS;
            keygate_auth::access::issue(&capped, &keys, grant, unix_now())
        } else {
            keygate_auth::access::issue(&self.access, &keys, grant, unix_now())
        };
        issued.map_err(|e| OAuthError::unavailable(&e))
    }

    /// Whether `client` must prove possession of a key (DPoP) to get tokens: its own
    /// policy where it has one, `tokens.dpop` otherwise. A stored value this build does
    /// not know counts as required.
    pub fn dpop_required_for(&self, client: &ClientRecord) -> bool {
        match client.dpop.as_deref() {
            None => self.settings.dpop_required,
            Some(DPOP_OPTIONAL) => false,
            Some(_) => true,
        }
    }

    /// The proxy's entry check: request head → [`VerifiedAccess`] or an error carrying
    /// the right `WWW-Authenticate` (S13–S16, S12).
    pub async fn verify_request(
        &self,
        request: &ResourceRequest<'_>,
    ) -> Result<VerifiedAccess, AuthError> {
        let keys = self.keys().await;
        keygate_auth::resource::verify_request(
            &self.verifier,
            &keys,
            request,
            &self.replay,
            &self.revocation,
            unix_now(),
        )
        .await
    }

    /// Tells the monitor, when it runs; never blocks.
    pub(crate) fn signal(&self, signal: keygate_monitor::Signal) {
        if let Some(m) = self.monitor.get() {
            m.signal(signal);
        }
    }

    /// A keyed reference to a token for the audit log (S22).
    pub fn token_ref(&self, kind: &str, token: &str) -> String {
        self.audit_key.reference(kind, token.as_bytes())
    }

    /// New ids.
    pub fn new_session() -> SessionId {
        SessionId::generate()
    }

    /// Parses stored ids; a stored value that does not parse is a store bug.
    pub(crate) fn ids(
        user: &str,
        client: &str,
        scopes: &str,
    ) -> Result<(UserId, ClientId, ScopeSet), OAuthError> {
        let bad = |_| OAuthError::unavailable(&"a stored id does not parse");
        Ok((
            UserId::parse(user).map_err(bad)?,
            ClientId::parse(client).map_err(bad)?,
            ScopeSet::parse(scopes).map_err(bad)?,
        ))
    }
}

fn rotation_policy(settings: &TokenSettings) -> RotationPolicy {
    RotationPolicy {
        min_publish_secs: 3600,
        retire_keep_secs: settings.access_ttl_secs + 60,
    }
}
