//! The storage-free protocol core of keygate's token service.
//!
//! Pure, typed functions with no HTTP framework and no database: JOSE (strict compact JWS,
//! EdDSA and ES256, JWKs and thumbprints), external ID tokens for token exchange, RFC 9068
//! access tokens with a rotating signing key set, RFC 9449 DPoP proofs with a replay-cache
//! trait and stateless server nonces, PKCE, Argon2id passwords, TOTP, opaque tokens,
//! redirect-URI matching, authorization codes and the refresh token family state machine.
//! The server crate wires these to the store and to axum; this crate picks no HTTP status
//! code (an [`AuthError`] says its [`Disposition`], the server chooses the status).
//!
//! | module | owns |
//! |---|---|
//! | [`jws`], [`jwk`], [`b64`] | strict compact JWS, algorithms, public JWKs, thumbprints |
//! | [`keys`] | signing keys, the rotating [`keys::SigningKeySet`], the JWKS |
//! | [`idtoken`] | external ID tokens (RS256/ES256/EdDSA against an issuer's JWKS) for token exchange |
//! | [`access`] | issuing and verifying `at+jwt` access tokens, signature cache |
//! | [`dpop`] | proof checks, [`dpop::ReplayCache`], nonces, proof creation |
//! | [`resource`] | request → [`resource::VerifiedAccess`] (the proxy's entry ticket) |
//! | [`refresh`], [`code`] | refresh families and authorization codes, with storage contracts |
//! | [`pkce`], [`password`], [`totp`], [`opaque`], [`redirect`], [`throttle`] | login building blocks |
//! | [`metadata`] | the RFC 8414 server metadata document |
//! | [`uri`] | percent-escapes (RFC 3986), shared with the proxy's path normaliser |
//! | [`error`] | [`AuthError`]: OAuth code, challenge, `DPoP-Nonce`, internal reason |
//!
//! # Example: a DPoP-bound token from issue to a verified proxied request
//!
//! ```
//! use std::future::{Future, ready};
//! use keygate_auth::access::{self, AccessGrant, AccessTokenConfig, VerifiedAccessToken};
//! use keygate_auth::dpop::{self, DpopConfig, InMemoryReplayCache, ProofClaims, PublicBaseUrl};
//! use keygate_auth::ids::{ClientId, ScopeSet, SessionId, UserId};
//! use keygate_auth::jws::Algorithm;
//! use keygate_auth::keys::{RotationPolicy, SigningKey, SigningKeySet};
//! use keygate_auth::resource::{self, ResourceRequest, ResourceVerifier, RevocationCheck, RevocationUnavailable};
//! use keygate_auth::UnixTime;
//! use secrecy::ExposeSecret;
//!
//! struct NothingRevoked;
//! impl RevocationCheck for NothingRevoked {
//!     fn is_revoked(&self, _: &VerifiedAccessToken)
//!         -> impl Future<Output = Result<bool, RevocationUnavailable>> + Send { ready(Ok(false)) }
//! }
//! # fn block_on<F: Future>(fut: F) -> F::Output {
//! #     let mut fut = std::pin::pin!(fut);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) { return v; } }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = UnixTime(1_800_000_000);
//! let keys = SigningKeySet::bootstrap(RotationPolicy::default(), SigningKey::generate(Algorithm::EdDsa), now);
//! let device = SigningKey::generate(Algorithm::Es256); // lives in the phone's keystore
//!
//! // Token endpoint: bind the token to the key of the request's DPoP proof.
//! let config = AccessTokenConfig::new("https://gate.example.com", "https://gate.example.com/proxy");
//! let grant = AccessGrant {
//!     user: UserId::parse("user-1")?,
//!     client: ClientId::parse("ios-app")?,
//!     scopes: ScopeSet::parse("ai")?,
//!     session: SessionId::generate(),
//!     jkt: Some(device.verification_key().thumbprint()),
//!     x5t: None,
//!     tier: None,
//! };
//! let issued = access::issue(&config, &keys, &grant, now)?;
//! let token = issued.token.expose_secret();
//!
//! // The app calls the proxy with the token and a fresh proof.
//! let proof = dpop::create_proof(&device, &ProofClaims {
//!     htm: "POST",
//!     htu: "https://gate.example.com/proxy/openai/v1/chat/completions",
//!     iat: now,
//!     jti: "8c2f0b7e-unique",
//!     nonce: None,
//!     access_token: Some(token),
//! });
//! let authorization = format!("DPoP {token}");
//! let auth_headers: [&[u8]; 1] = [authorization.as_bytes()];
//! let dpop_headers: [&[u8]; 1] = [proof.as_bytes()];
//! let request = ResourceRequest {
//!     method: "POST",
//!     target: "/proxy/openai/v1/chat/completions",
//!     authorization: &auth_headers,
//!     dpop: &dpop_headers,
//!     client_cert: None,
//! };
//! let verifier = ResourceVerifier {
//!     access: config,
//!     dpop: DpopConfig::new(PublicBaseUrl::parse("https://gate.example.com")?),
//!     allow_unbound_bearer: false,
//!     token_cache: None,
//! };
//! let replay = InMemoryReplayCache::new(100_000);
//! let access = block_on(resource::verify_request(&verifier, &keys, &request, &replay, &NothingRevoked, now))?;
//! assert_eq!(access.user().as_str(), "user-1");
//!
//! // The same proof again is a replay.
//! let again = block_on(resource::verify_request(&verifier, &keys, &request, &replay, &NothingRevoked, now));
//! assert_eq!(again.unwrap_err().code().as_str(), "invalid_dpop_proof");
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod access;
pub mod b64;
pub mod clock;
pub mod code;
pub mod dpop;
pub mod error;
pub mod ids;
pub mod idtoken;
mod json;
pub mod jwk;
pub mod jws;
pub mod keys;
pub mod metadata;
pub mod opaque;
pub mod password;
pub mod pkce;
pub mod redirect;
pub mod refresh;
pub mod resource;
pub mod throttle;
pub mod totp;
pub mod uri;

pub use clock::{Clock, FixedClock, ManualClock, SystemClock, UnixTime};
pub use error::{AuthError, Disposition, ErrorCode, Reason};
