//! A small client for the admin API, configured by `KEYGATE_ADDR` and `KEYGATE_TOKEN`.

use anyhow::{Context, anyhow, bail};
use keygate_server::admin::api::ErrorBody;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret())
    }

    /// Sends `req` and reads the answer as `R`, or the refusal as an [`ApiRefusal`].
    async fn send<R: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<R> {
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach keygate at {}: {}", self.base, without_url(&e)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the response")?;
        if status.is_success() {
            // The error names the place in the document, never its contents (a response
            // may hold a secret).
            return serde_json::from_slice(&bytes).map_err(|e| {
                anyhow!(
                    "unexpected answer from keygate (line {}, column {}): is the server a different version?",
                    e.line(),
                    e.column()
                )
            });
        }
        let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let (code, message) = match body {
            Some(b) => (b.error, b.message),
            None => (
                "error".to_owned(),
                status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_owned(),
            ),
        };
        Err(ApiRefusal {
            status: status.as_u16(),
            code,
            message,
        }
        .into())
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> anyhow::Result<R> {
        self.send(self.request(Method::GET, path)).await
    }

    /// `GET` with a query string made from `query`.
    pub async fn get_query<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> anyhow::Result<R> {
        self.send(self.request(Method::GET, path).query(query))
            .await
    }

    /// A request with a JSON body.
    pub async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<R> {
        self.send(self.request(method, path).json(body)).await
    }

    /// A request without a body.
    pub async fn call_empty<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<R> {
        self.send(self.request(method, path)).await
    }
}

/// Prints an answer as one line of JSON (`--format json`), keys sorted.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    // Through a `Value`, whose map keeps keys sorted: the output does not depend on the
    // order of a struct's fields.
    println!("{}", serde_json::to_value(value)?);
    Ok(())
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
