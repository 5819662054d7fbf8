//! A small client for the admin API, configured by `KEYGATE_ADDR` and `KEYGATE_TOKEN`.

use anyhow::{Context, anyhow, bail};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

pub struct AdminClient {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

/// An answer the server refused, with its status and error code.
#[derive(Debug, thiserror::Error)]
#[error("{message} (HTTP {status}, {code})")]
pub struct ApiRefusal {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl AdminClient {
    /// From `KEYGATE_ADDR` (default `http://127.0.0.1:8080`) and `KEYGATE_TOKEN`.
    pub fn from_env() -> anyhow::Result<Self> {
        let base = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
        let token = std::env::var("KEYGATE_TOKEN").map_err(|_| {
            anyhow!("KEYGATE_TOKEN is not set: export the admin token that `keygate init` printed")
        })?;
        Self::new(&base, SecretString::from(token))
    }

    pub fn new(base: &str, token: SecretString) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(base).with_context(|| {
            format!("KEYGATE_ADDR `{base}` is not a URL like http://127.0.0.1:8080")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("KEYGATE_ADDR `{base}` must start with http:// or https://");
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(self.token.expose_secret());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach keygate at {}: {}", self.base, without_url(&e)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the response")?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(ApiRefusal {
            status: status.as_u16(),
            code: value["error"].as_str().unwrap_or("error").to_owned(),
            message: value["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    status
                        .canonical_reason()
                        .unwrap_or("request failed")
                        .to_owned()
                }),
        }
        .into())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s = format!("{s}: {inner}");
        source = inner.source();
    }
    s
}
