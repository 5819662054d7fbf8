//! A test identity provider: an RSA key (generated once per test binary), its JWKS, and
//! ID tokens signed by `jsonwebtoken`, a JOSE library keygate did not write.

use std::sync::OnceLock;

use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The identity provider: an RSA key (generated once per test binary) and its JWKS.
pub struct Idp {
    pub private_der: Vec<u8>,
    pub public_pem: String,
    pub n: String,
    pub e: String,
}

pub fn idp() -> &'static Idp {
    static IDP: OnceLock<Idp> = OnceLock::new();
    IDP.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        Idp {
            private_der: key.to_pkcs1_der().unwrap().as_bytes().to_vec(),
            public_pem: key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
            n: b64(&key.n().to_bytes_be()),
            e: b64(&key.e().to_bytes_be()),
        }
    })
}

impl Idp {
    pub fn jwk(&self, kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": self.n, "e": self.e})
    }

    pub fn jwks(&self, kids: &[&str]) -> String {
        let keys: Vec<Value> = kids.iter().map(|k| self.jwk(k)).collect();
        json!({ "keys": keys }).to_string()
    }

    pub fn sign_with(&self, alg: jsonwebtoken::Algorithm, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let key = EncodingKey::from_rsa_der(&self.private_der);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// An RS256 ID token with key `kid`.
    pub fn token(&self, kid: &str, claims: &Value) -> String {
        self.sign_with(jsonwebtoken::Algorithm::RS256, kid, claims)
    }
}
