//! `keygate-loadgen token`: an access token for the benchmark from the client
//! credentials grant, bound to a DPoP key when one is given (the proof at the token
//! endpoint makes keygate put the key's thumbprint into the token's `cnf.jkt`).

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use keygate_client::KeyStore;
use keygate_client::proof::{ProofInput, create_proof};
use serde_json::Value;
use url::Url;

use crate::proofs::unix_now;

/// What the token request needs.
pub struct TokenRequest<'a> {
    /// `…/oauth2/token`.
    pub token_url: &'a Url,
    /// A confidential client.
    pub client_id: &'a str,
    /// Its secret (sent with HTTP Basic).
    pub client_secret: &'a str,
    /// Space-separated scopes, if any.
    pub scope: Option<&'a str>,
    /// The key to bind the token to.
    pub dpop_key: Option<Arc<dyn KeyStore>>,
}

/// Requests the token and returns the access token, after checking that a DPoP request
/// got a DPoP-bound token for this very key.
pub async fn fetch(req: &TokenRequest<'_>) -> anyhow::Result<String> {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = req.scope {
        form.push(("scope", scope));
    }
    let mut http = reqwest::Client::new()
        .post(req.token_url.clone())
        .basic_auth(req.client_id, Some(req.client_secret))
        .form(&form);
    if let Some(key) = &req.dpop_key {
        let proof = create_proof(
            key.as_ref(),
            &ProofInput {
                method: "POST",
                url: req.token_url,
                iat: unix_now(),
                nonce: None,
                access_token: None,
            },
        )
        .map_err(|e| anyhow!("signing the token request's DPoP proof: {e}"))?;
        http = http.header("DPoP", proof);
    }
    let resp = http.send().await.context("token request")?;
    let status = resp.status();
    let body: Value = resp.json().await.context("token response is not JSON")?;
    if !status.is_success() {
        let error = body.get("error").and_then(Value::as_str).unwrap_or("?");
        if error == "use_dpop_nonce" {
            return Err(anyhow!(
                "the server requires DPoP nonces; the benchmark signs proofs ahead and needs tokens.dpop_nonce = false"
            ));
        }
        return Err(anyhow!("token endpoint answered {status}: {error}"));
    }
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("token response has no access_token"))?;
    let token_type = body.get("token_type").and_then(Value::as_str).unwrap_or("");
    if let Some(key) = &req.dpop_key {
        let jkt = key.thumbprint().map_err(|e| anyhow!("DPoP key: {e}"))?;
        // The access token is a JWT (RFC 9068) whose `cnf.jkt` names the bound key; the
        // signature is the server's business, only the binding is looked at here.
        let claims = keygate_auth::jws::parse_compact(token)
            .and_then(|jws| jws.claims())
            .map_err(|e| anyhow!("the access token is not a JWT: {e}"))?;
        let bound = claims
            .get("cnf")
            .and_then(|c| c.get("jkt"))
            .and_then(Value::as_str);
        if !token_type.eq_ignore_ascii_case("DPoP") || bound != Some(jkt.as_str()) {
            return Err(anyhow!(
                "the token is not bound to the DPoP key (token_type {token_type:?}, cnf.jkt {bound:?})"
            ));
        }
    }
    Ok(token.to_owned())
}
