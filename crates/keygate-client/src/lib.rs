//! A small Rust client for keygate, for apps, tools and tests.
//!
//! It keeps a P-256 DPoP key behind a [`KeyStore`], signs the user in with the
//! authorization code flow and PKCE (S256), binds the tokens to the key (RFC 9449),
//! refreshes the access token before it expires with the rotating refresh token, answers
//! server nonce requests (`use_dpop_nonce`), and sends requests through keygate with
//! `Authorization: DPoP <token>` and a fresh proof each time. It never logs or
//! `Debug`-prints a token, verifier, refresh token, proof or key.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use keygate_client::{Client, ClientConfig, FileKeyStore, MemoryTokenCache, Method};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::new("https://gate.example.com", "ios-app", "com.example.app:/oauth/callback")?;
//! let key = Arc::new(FileKeyStore::open_or_create("dpop.key")?); // mode 0600
//! let client = Client::builder(config, key, Arc::new(MemoryTokenCache::new()))
//!     .discover() // GET /.well-known/oauth-authorization-server
//!     .await?;
//!
//! // 1. Open this in the system browser; keep `pending` until the redirect arrives.
//! let (url, pending) = client.authorization_url(&["ai"])?;
//! println!("open {url}");
//! # let callback = String::new();
//! // 2. The redirect: com.example.app:/oauth/callback?code=…&state=…
//! client.exchange_code(pending, &callback, None).await?;
//!
//! // 3. Calls through keygate: token, proof, refresh and nonce retry are handled.
//! let answer = client
//!     .request(Method::POST, "/proxy/openai/v1/chat/completions")
//!     .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": []}))
//!     .send()
//!     .await?;
//! println!("{}", answer.status());
//!
//! // 4. Sign out: revokes the session at keygate, forgets the tokens.
//! client.revoke().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Keeping the key in the device's hardware keystore
//!
//! [`MemoryKeyStore`] and [`FileKeyStore`] hold a software key. On a phone the key should
//! be generated inside the platform keystore and never leave it; the app then implements
//! [`KeyStore`] over FFI (UniFFI, `swift-bridge`, JNI) with two calls, and the client
//! never asks for anything else:
//!
//! - [`KeyStore::public_jwk`]: export the **public** key and return
//!   `PublicJwk::P256 { x, y }` (base64url of the 32-byte coordinates).
//! - [`KeyStore::sign`]: sign the bytes given (ECDSA P-256 with SHA-256 over the whole
//!   input; the platform hashes) and return 64-byte R‖S. Both platforms below return
//!   ASN.1 DER; convert with [`signature_from_der`].
//!
//! **iOS (Keychain, Secure Enclave).** Create the key once with `SecKeyCreateRandomKey`
//! and attributes `kSecAttrKeyType: kSecAttrKeyTypeECSECPrimeRandom`,
//! `kSecAttrKeySizeInBits: 256`, `kSecAttrTokenID: kSecAttrTokenIDSecureEnclave`,
//! `kSecPrivateKeyAttrs: { kSecAttrIsPermanent: true, kSecAttrApplicationTag: …,
//! kSecAttrAccessControl: SecAccessControlCreateWithFlags(…,
//! kSecAttrAccessibleWhenUnlockedThisDeviceOnly, .privateKeyUsage, …) }`. A Secure
//! Enclave key is non-exportable by construction and `…ThisDeviceOnly` keeps it out of
//! backups. `public_jwk`: `SecKeyCopyPublicKey` + `SecKeyCopyExternalRepresentation`
//! gives `04‖X‖Y` (65 bytes). `sign`: `SecKeyCreateSignature(key,
//! .ecdsaSignatureMessageX962SHA256, input)` gives DER.
//!
//! **Android (Keystore, StrongBox).** `KeyPairGenerator.getInstance("EC",
//! "AndroidKeyStore")` with `KeyGenParameterSpec.Builder(alias, PURPOSE_SIGN)
//! .setAlgorithmParameterSpec(ECGenParameterSpec("secp256r1"))
//! .setDigests(KeyProperties.DIGEST_SHA256).setIsStrongBoxBacked(true)` (fall back to
//! the TEE on `StrongBoxUnavailableException`). Keystore keys are not exportable.
//! `public_jwk`: the `ECPublicKey`'s affine X and Y, left-padded to 32 bytes. `sign`:
//! `Signature.getInstance("SHA256withECDSA")` with the private key entry gives DER.
//!
//! If the user must confirm each use (biometry), `sign` blocks until they do; proofs are
//! made per request, so prefer a key usable while the device is unlocked. Losing the key
//! (reinstall, new device) only means signing in again: tokens are bound to it and are
//! useless without it.
//!
//! # What the client expects from the server
//!
//! RFC 8414 metadata at `{base}/.well-known/oauth-authorization-server` whose `issuer`
//! is the base URL and whose `dpop_signing_alg_values_supported` contains `ES256`; a
//! token endpoint answering `token_type` `DPoP`; `use_dpop_nonce` as RFC 9449 §8 (token
//! endpoint: 400 + JSON error + `DPoP-Nonce`) and §9 (resource: 401 + `WWW-Authenticate:
//! DPoP error="use_dpop_nonce"` + `DPoP-Nonce`).
//!
//! Phones' clocks are often wrong, and a proof whose `iat` is off is refused. When a
//! proof is refused (`invalid_dpop_proof`: 400 JSON at the token endpoint, 401 DPoP
//! challenge at a resource) and the response's `Date` header is more than 5 s away from
//! the device clock, the client adopts the server's time for later proofs' `iat` and
//! retries once. Token expiry is tracked on the device clock (lifetimes are relative).
#![warn(missing_docs)]

mod authorize;
mod client;
mod error;
#[cfg(feature = "headless")]
pub mod headless;
pub mod keystore;
pub mod nonce;
pub mod proof;
pub mod tokens;

pub use authorize::PendingAuthorization;
pub use client::{
    Client, ClientBuilder, ClientConfig, DpopHeaders, METADATA_PATH, ResourceRequest,
    ServerMetadata, SignedIn,
};
pub use error::ClientError;
pub use keygate_auth::jwk::{Jkt, PublicJwk};
pub use keygate_auth::{Clock, FixedClock, SystemClock, UnixTime};
pub use keystore::{FileKeyStore, KeyStore, KeyStoreError, MemoryKeyStore, signature_from_der};
pub use reqwest::{Method, Response};
pub use tokens::{MemoryTokenCache, TokenCache, TokenSet};
