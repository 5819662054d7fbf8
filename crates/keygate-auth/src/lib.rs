//! The storage-free protocol core of keygate's token service.
//!
//! Pure, typed functions with no HTTP framework and no database: JOSE (strict compact JWS,
//! EdDSA and ES256, JWKs and thumbprints), RFC 9068 access tokens with a rotating signing
//! key set, RFC 9449 DPoP proofs with a replay-cache trait and stateless server nonces,
//! PKCE, Argon2id passwords, TOTP, opaque tokens, redirect-URI matching and the refresh
//! token family state machine. The server crate wires these to the store and to axum.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![warn(missing_docs)]

pub mod access;
pub mod b64;
pub mod clock;
pub mod code;
pub mod dpop;
pub mod error;
pub mod ids;
mod json;
pub mod jwk;
pub mod jws;
pub mod keys;
pub mod opaque;
pub mod password;
pub mod pkce;
pub mod redirect;
pub mod refresh;
pub mod resource;
pub mod totp;

pub use clock::{Clock, FixedClock, SystemClock, UnixTime};
pub use error::{AuthError, Disposition, ErrorCode, Reason};
