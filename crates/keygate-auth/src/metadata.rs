//! The authorization server metadata document (RFC 8414) served at
//! `/.well-known/oauth-authorization-server`.

use serde_json::{Value, json};

use crate::dpop::PublicBaseUrl;

/// The metadata for a keygate reachable at `base`; `issuer` must be the same string the
/// access tokens carry.
pub fn authorization_server_metadata(base: &PublicBaseUrl, issuer: &str) -> Value {
    let url = |path: &str| format!("{}{path}", base.as_string());
    json!({
        "issuer": issuer,
        "authorization_endpoint": url("/oauth2/authorize"),
        "token_endpoint": url("/oauth2/token"),
        "revocation_endpoint": url("/oauth2/revoke"),
        "introspection_endpoint": url("/oauth2/introspect"),
        "jwks_uri": url("/oauth2/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "dpop_signing_alg_values_supported": ["EdDSA", "Ed25519", "ES256"],
        "authorization_response_iss_parameter_supported": true
    })
}
