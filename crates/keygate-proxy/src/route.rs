//! Routes: the `[routes.NAME]` tables of `keygate.toml` (or the admin API's JSON, which
//! has the same shape), parsed into raw serde types and then validated into domain types
//! with errors that name the field, e.g. `routes.openai.allow[1]: …`.
//!
//! Everything about the upstream (scheme, host, port, base path) comes from here and
//! nowhere else (S25): the request contributes only the path below the route and the
//! query, both checked by [`crate::path`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method};
use keygate_auth::access::TrustTier;
use keygate_auth::ids::{ClientId, Scope, ScopeSet, SecretName, UserId};
use keygate_auth::resource::VerifiedAccess;
use serde::{Deserialize, Serialize};

use crate::error::ProxyError;
use crate::headers;
use crate::path::{NormalPath, ProxyTarget, RouteName, normalize_path};

/// The default largest request body: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Raw (serde) shape
// ---------------------------------------------------------------------------------------

/// One `[routes.NAME]` table as written.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Base URL: `https://api.example.com[:port][/base/path]`.
    pub upstream: String,
    /// The vault entry whose current version is injected.
    pub secret: String,
    /// How the key is injected.
    pub inject: RawInject,
    /// `METHOD /path/pattern` entries.
    pub allow: Vec<String>,
    /// Scopes the access token must carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Rate, burst and quota.
    #[serde(default)]
    pub limits: Option<RawLimits>,
    /// Connect/response/idle/total timeouts.
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    /// Largest request body in bytes.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Extra trust and client certificate for the upstream.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// What one call costs, and where the upstream reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<RawCost>,
    /// Cost budgets per user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RawBudget>,
    /// What app attestation the caller's token must show, and stricter rates for lower
    /// trust tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<RawAttestation>,
}

/// `attestation = { min_tier = "unattested", rate = { unattested = "10/min", failed = "1/min" } }`.
///
/// Tiers, least trusted first: `failed` (attestation evidence that did not verify),
/// `unattested` (none: a device or moment that cannot attest), `attested`. A token from a
/// client without attestation configured counts as `unattested`. `rate` replaces the
/// route's rate for callers of that tier (their own bucket, burst = count).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawAttestation {
    /// The least trusted tier served; lower tiers get 403 `insufficient_attestation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tier: Option<String>,
    /// `tier → "N/sec|min|hour|day"`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rate: std::collections::BTreeMap<String, String>,
}

/// A route's attestation demands, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttestationSpec {
    /// `None`: every tier is served.
    pub min_tier: Option<TrustTier>,
    /// Rates replacing the route's rate for a tier.
    pub rates: Vec<(TrustTier, RateSpec)>,
}

/// The tier a token counts as on a route: its `att` claim, or `unattested` without one.
pub fn effective_tier(access_tier: Option<TrustTier>) -> TrustTier {
    access_tier.unwrap_or(TrustTier::Unattested)
}

fn parse_attestation(raw: &RawAttestation) -> Result<AttestationSpec, (String, String)> {
    let tier = |field: String, s: &str| {
        TrustTier::parse(s).ok_or((field, "must be attested, unattested or failed".to_owned()))
    };
    let min_tier = raw
        .min_tier
        .as_deref()
        .map(|t| tier(".min_tier".into(), t))
        .transpose()?;
    let mut rates = Vec::new();
    for (name, rate) in &raw.rate {
        let t = tier(format!(".rate.{name}"), name)?;
        let spec = parse_rate(rate, None).map_err(|m| (format!(".rate.{name}"), m))?;
        rates.push((t, spec));
    }
    Ok(AttestationSpec { min_tier, rates })
}

/// `cost = { per_call = 1, header = "x-usage-cost", json = "usage.total_tokens" }`.
///
/// `per_call` is what a call costs when the upstream's report is absent or unreadable;
/// `header` or `json` (at most one) names where the upstream reports the real cost.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    /// Cost of a call without a readable report. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_call: Option<u64>,
    /// A response header holding the cost as a decimal integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A dotted path into the JSON response body (or the last JSON event of a
    /// `text/event-stream`), e.g. `usage.total_tokens` or `choices[0].usage.cost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
}

/// `budget = { daily = 100000, monthly = 2000000 }`: cost units per user per UTC day
/// and per UTC calendar month.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Cost units per user per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u64>,
    /// Cost units per user per UTC calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u64>,
}

/// `inject = { header = "…", value = "…{secret}…" } | { query = "…" } | { basic = { username = "…" } }`.
///
/// Each shape refuses fields of the others, so `{ header = …, query = … }` is an error
/// rather than a header injection that silently ignores `query`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RawInject {
    /// A header whose value is a template around `{secret}`.
    Header(RawHeaderInject),
    /// A query parameter.
    Query(RawQueryInject),
    /// HTTP Basic with the secret as password.
    Basic(RawBasicInject),
}

/// `{ header = "…", value = "…{secret}…" }`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderInject {
    /// Header name.
    pub header: String,
    /// Template; `{secret}` appears exactly once. Default `{secret}`.
    #[serde(default)]
    pub value: Option<String>,
}

/// `{ query = "…" }`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawQueryInject {
    /// Parameter name.
    pub query: String,
}

/// `{ basic = { username = "…" } }`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawBasicInject {
    /// `{ username = "…" }`.
    pub basic: RawBasic,
}

/// `basic = { username = "…" }`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    /// The user name sent with the secret.
    pub username: String,
}

/// `limits = { rate = "20/min", burst = 5, quota = "500/day", per = "user" }`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `N/sec|min|hour|day`.
    pub rate: Option<String>,
    /// Requests that may arrive at once; defaults to the rate's count.
    pub burst: Option<u32>,
    /// `N/day|month` (UTC windows).
    pub quota: Option<String>,
    /// `user` (default), `client` or `ip`.
    pub per: Option<String>,
}

/// `timeouts = { connect = "5s", response = "60s", idle = "60s", total = "10m" }`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP + TLS connect.
    pub connect: Option<String>,
    /// Until the upstream's response head.
    pub response: Option<String>,
    /// Longest gap between two response body frames.
    pub idle: Option<String>,
    /// The whole exchange, body included.
    pub total: Option<String>,
}

/// `tls = { ca_file = "…", client_cert_file = "…", client_key_file = "…" }`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM bundle trusted in addition to the web PKI roots.
    pub ca_file: Option<String>,
    /// PEM certificate chain for upstream mTLS.
    pub client_cert_file: Option<String>,
    /// PEM private key for upstream mTLS.
    pub client_key_file: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A route field was invalid; `field` is the full path (`routes.openai.allow[1]`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RouteConfigError {
    /// Where, e.g. `routes.openai.limits.rate`.
    pub field: String,
    /// What is wrong (never contains secret material: routes hold none).
    pub message: String,
}

struct FieldPath<'a>(&'a str);

impl FieldPath<'_> {
    fn err(&self, sub: &str, message: impl Into<String>) -> RouteConfigError {
        RouteConfigError {
            field: if sub.is_empty() {
                format!("routes.{}", self.0)
            } else {
                format!("routes.{}.{sub}", self.0)
            },
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Domain types
// ---------------------------------------------------------------------------------------

/// The upstream base URL: scheme, authority and base path, from configuration only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// No trailing slash; empty for the root.
    base_path: String,
    /// The `Host` header sent over HTTP/1.1: the authority without a default port.
    host: http::HeaderValue,
}

impl Upstream {
    /// Parses `http(s)://host[:port][/base]` with no user info, query or fragment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text.parse().map_err(|_| "not a valid URL".to_owned())?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::HTTPS,
            Some("http") => Scheme::HTTP,
            _ => return Err("scheme must be http or https".into()),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| "host is missing".to_owned())?;
        if authority.as_str().contains('@') {
            return Err("user info is not allowed in the upstream URL".into());
        }
        if authority.host().is_empty() {
            return Err("host is missing".into());
        }
        if text.contains('?') || text.contains('#') {
            return Err("query and fragment are not allowed in the upstream URL".into());
        }
        let path = uri.path();
        let base_path = if path == "/" || path.is_empty() {
            String::new()
        } else {
            let normal = normalize_path(path).map_err(|e| format!("base path: {e}"))?;
            normal.as_str().trim_end_matches('/').to_owned()
        };
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => authority.as_str().to_owned(),
            // An IPv6 literal keeps its brackets in `host()`.
            _ => authority.host().to_owned(),
        };
        let host = http::HeaderValue::try_from(host)
            .map_err(|_| "the host is not a valid Host header value".to_owned())?;
        Ok(Self {
            scheme,
            authority,
            base_path,
            host,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }
    /// Host and optional port.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
    /// The base path without trailing slash (empty for the root).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }
    /// The `Host` header for this upstream: its authority without a default port.
    pub fn host_header(&self) -> &http::HeaderValue {
        &self.host
    }

    /// Builds the upstream URI for a checked path and query. The query is passed
    /// already encoded.
    pub(crate) fn uri_for(
        &self,
        path: &NormalPath,
        query: Option<&str>,
    ) -> Result<http::Uri, ProxyError> {
        let mut pq = String::with_capacity(self.base_path.len() + path.as_str().len() + 16);
        pq.push_str(&self.base_path);
        pq.push_str(path.as_str());
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            pq.push('?');
            pq.push_str(q);
        }
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| ProxyError::keygate("upstream URI could not be built"))
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// Where and how the key goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injection {
    /// `name: prefix{secret}suffix`.
    Header {
        /// The header name (lower-case).
        name: HeaderName,
        /// Text before the secret.
        prefix: String,
        /// Text after the secret.
        suffix: String,
    },
    /// `?name=secret` (percent-encoded), replacing any parameter of that name.
    Query {
        /// The parameter name.
        name: String,
    },
    /// `Authorization: Basic base64(username:secret)`.
    Basic {
        /// The user name.
        username: String,
    },
}

impl Injection {
    /// The header this injection writes, if any; inbound copies of it are dropped (S26).
    pub fn header_name(&self) -> Option<HeaderName> {
        match self {
            Injection::Header { name, .. } => Some(name.clone()),
            Injection::Basic { .. } => Some(http::header::AUTHORIZATION),
            Injection::Query { .. } => None,
        }
    }
}

/// One segment of a path pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternSegment {
    /// Matches exactly this segment.
    Literal(String),
    /// `*`: any one non-empty segment.
    One,
    /// `**`: the rest of the path, possibly nothing (last segment only).
    Rest,
}

/// `METHOD /path/pattern`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    method: Method,
    segments: Vec<PatternSegment>,
    text: String,
}

impl AllowRule {
    /// Parses `METHOD /path/pattern`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (method, pattern) = text
            .split_once(' ')
            .ok_or_else(|| "expected \"METHOD /path/pattern\"".to_owned())?;
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("method must be an upper-case token such as GET or POST".into());
        }
        let method =
            Method::from_bytes(method.as_bytes()).map_err(|_| "invalid method".to_owned())?;
        if method == Method::CONNECT {
            return Err("CONNECT is never proxied".into());
        }
        let normal = normalize_path(pattern).map_err(|e| format!("pattern: {e}"))?;
        let raw: Vec<&str> = normal.segments().collect();
        let mut segments = Vec::with_capacity(raw.len());
        let count = raw.len();
        for (i, seg) in raw.into_iter().enumerate() {
            let s = match seg {
                "**" if i + 1 == count => PatternSegment::Rest,
                "**" => return Err("'**' may only be the last segment".into()),
                "*" => PatternSegment::One,
                other => PatternSegment::Literal(other.to_owned()),
            };
            segments.push(s);
        }
        Ok(Self {
            method,
            segments,
            text: text.to_owned(),
        })
    }

    /// Whether this rule allows `method` on `path`.
    pub fn matches(&self, method: &Method, path: &NormalPath) -> bool {
        if *method != self.method {
            return false;
        }
        let mut pattern = self.segments.iter();
        let mut segments = path.segments();
        loop {
            match (pattern.next(), segments.next()) {
                (Some(PatternSegment::Rest), _) => return true,
                (Some(PatternSegment::One), Some(seg)) if !seg.is_empty() => {}
                (Some(PatternSegment::Literal(lit)), Some(seg)) if lit == seg => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// The rule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What a limit is counted per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitPer {
    /// The token's subject.
    User,
    /// The OAuth client.
    Client,
    /// The caller's IP address (as the server determined it).
    Ip,
}

/// A rate: `count` requests per `period`, of which `burst` may arrive at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSpec {
    /// Requests per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
    /// Requests that may arrive back to back.
    pub burst: u32,
}

/// Quota window length (UTC calendar windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month.
    Month,
}

/// `count` requests per calendar `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaSpec {
    /// Requests per window.
    pub count: u64,
    /// The window.
    pub period: QuotaPeriod,
}

/// A route's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rate and burst.
    pub rate: Option<RateSpec>,
    /// Quota.
    pub quota: Option<QuotaSpec>,
    /// What the counters are keyed by.
    pub per: LimitPer,
}

/// Upstream timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// Until the response head.
    pub response: Duration,
    /// Longest gap between response body frames.
    pub idle: Duration,
    /// The whole exchange, body included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// Upstream TLS material, by file (loaded by the forwarder).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// Extra trusted CA bundle.
    pub ca_file: Option<String>,
    /// Client certificate chain and key for upstream mTLS.
    pub client_identity: Option<(String, String)>,
}

/// Longest `cost.json` path, in steps.
pub const MAX_JSON_PATH_STEPS: usize = 16;

/// Largest cost or budget value: the store keeps them as signed 64-bit integers.
pub const MAX_COST: u64 = i64::MAX as u64;

/// One step of a [`JsonPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonStep {
    /// An object member. A member name of digits also indexes an array (`choices.0`).
    Key(String),
    /// An array element, written `[N]`.
    Index(usize),
}

/// A dotted path into a JSON document: `usage.total_tokens`, `choices[0].usage.cost`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    steps: Vec<JsonStep>,
    text: String,
}

impl JsonPath {
    /// Parses `name(.name)*` where each name may be followed by `[N]` indices. Names are
    /// non-empty and hold no `.`, `[` or `]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 256 {
            return Err("the path must be 1-256 characters".into());
        }
        let mut steps = Vec::new();
        for segment in text.split('.') {
            let (name, mut rest) = match segment.find('[') {
                Some(i) => segment.split_at(i),
                None => (segment, ""),
            };
            if name.is_empty() || name.contains(']') {
                return Err(format!(
                    "'{segment}': every dotted segment starts with a member name"
                ));
            }
            steps.push(JsonStep::Key(name.to_owned()));
            while !rest.is_empty() {
                let close = rest
                    .find(']')
                    .filter(|_| rest.starts_with('['))
                    .ok_or_else(|| format!("'{segment}': expected [INDEX]"))?;
                let index = rest
                    .get(1..close)
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| format!("'{segment}': an index is a non-negative integer"))?;
                steps.push(JsonStep::Index(index));
                rest = rest.get(close + 1..).unwrap_or_default();
            }
        }
        if steps.len() > MAX_JSON_PATH_STEPS {
            return Err(format!("at most {MAX_JSON_PATH_STEPS} steps"));
        }
        Ok(Self {
            steps,
            text: text.to_owned(),
        })
    }

    /// The steps, outermost first.
    pub fn steps(&self) -> &[JsonStep] {
        &self.steps
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Where the upstream reports a call's cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CostSource {
    /// Nowhere: every call costs `per_call`, and nothing is read per call.
    Fixed,
    /// A response header holding a decimal integer.
    Header(HeaderName),
    /// A path into the JSON body, or into the last JSON event of an event stream.
    Json(JsonPath),
}

/// What a call costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostSpec {
    /// The cost when the report is absent or unreadable (and of every call when
    /// `source` is [`CostSource::Fixed`]).
    pub per_call: u64,
    /// Where the report is read.
    pub source: CostSource,
}

impl Default for CostSpec {
    fn default() -> Self {
        Self {
            per_call: 1,
            source: CostSource::Fixed,
        }
    }
}

/// Per-user cost budgets of a route, in cost units. At least one is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetSpec {
    /// Per UTC day.
    pub daily: Option<u64>,
    /// Per UTC calendar month.
    pub monthly: Option<u64>,
}

/// A validated route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    name: RouteName,
    upstream: Upstream,
    secret: SecretName,
    inject: Injection,
    allow: Vec<AllowRule>,
    scopes: ScopeSet,
    limits: Limits,
    timeouts: Timeouts,
    max_body_bytes: u64,
    tls: UpstreamTls,
    cost: CostSpec,
    budget: Option<BudgetSpec>,
    attestation: AttestationSpec,
}

impl Route {
    /// Validates one raw route named `name`.
    pub fn from_raw(name: &str, raw: &RawRoute) -> Result<Self, RouteConfigError> {
        let at = FieldPath(name);
        let route_name = RouteName::parse(name).map_err(|_| {
            at.err(
                "",
                "route names are 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
            )
        })?;
        let upstream = Upstream::parse(&raw.upstream).map_err(|m| at.err("upstream", m))?;
        let secret = SecretName::parse(&raw.secret).map_err(|e| at.err("secret", e.to_string()))?;
        let inject =
            parse_inject(&raw.inject).map_err(|(f, m)| at.err(&format!("inject.{f}"), m))?;
        if raw.allow.is_empty() {
            return Err(at.err("allow", "at least one \"METHOD /path\" entry is required"));
        }
        let allow = raw
            .allow
            .iter()
            .enumerate()
            .map(|(i, r)| AllowRule::parse(r).map_err(|m| at.err(&format!("allow[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        let scopes = raw
            .scopes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Scope::parse(s).map_err(|_| at.err(&format!("scopes[{i}]"), "malformed scope"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limits = parse_limits(raw.limits.as_ref().cloned().unwrap_or_default())
            .map_err(|(f, m)| at.err(&format!("limits.{f}"), m))?;
        let timeouts = parse_timeouts(raw.timeouts.as_ref().cloned().unwrap_or_default())
            .map_err(|(f, m)| at.err(&format!("timeouts.{f}"), m))?;
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        let tls = match &raw.tls {
            None => UpstreamTls::default(),
            Some(t) => {
                let client_identity = match (&t.client_cert_file, &t.client_key_file) {
                    (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                    (None, None) => None,
                    _ => {
                        return Err(
                            at.err("tls", "client_cert_file and client_key_file go together")
                        );
                    }
                };
                if upstream.scheme() != &Scheme::HTTPS {
                    return Err(at.err("tls", "TLS settings need an https upstream"));
                }
                UpstreamTls {
                    ca_file: t.ca_file.clone(),
                    client_identity,
                }
            }
        };
        let cost = match &raw.cost {
            None => CostSpec::default(),
            Some(c) => parse_cost(c).map_err(|(f, m)| at.err(&format!("cost{f}"), m))?,
        };
        let budget = match &raw.budget {
            None => None,
            Some(b) => Some(parse_budget(b).map_err(|(f, m)| at.err(&format!("budget{f}"), m))?),
        };
        let attestation = match &raw.attestation {
            None => AttestationSpec::default(),
            Some(a) => {
                parse_attestation(a).map_err(|(f, m)| at.err(&format!("attestation{f}"), m))?
            }
        };
        Ok(Self {
            name: route_name,
            upstream,
            secret,
            inject,
            allow,
            scopes: ScopeSet::from_scopes(scopes),
            limits,
            timeouts,
            max_body_bytes,
            tls,
            cost,
            budget,
            attestation,
        })
    }

    /// The route's name.
    pub fn name(&self) -> &RouteName {
        &self.name
    }
    /// The upstream base URL.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }
    /// The vault entry to inject.
    pub fn secret_name(&self) -> &str {
        self.secret.as_str()
    }
    /// How the key is injected.
    pub fn injection(&self) -> &Injection {
        &self.inject
    }
    /// The allow-list.
    pub fn allow(&self) -> &[AllowRule] {
        &self.allow
    }
    /// Required scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }
    /// Limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    /// Timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }
    /// Largest request body.
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }
    /// Upstream TLS material.
    pub fn tls(&self) -> &UpstreamTls {
        &self.tls
    }
    /// What a call costs and where the upstream reports it.
    pub fn cost(&self) -> &CostSpec {
        &self.cost
    }
    /// Per-user cost budgets, if any.
    pub fn budget(&self) -> Option<&BudgetSpec> {
        self.budget.as_ref()
    }
    /// What app attestation the route demands.
    pub fn attestation(&self) -> &AttestationSpec {
        &self.attestation
    }

    /// Whether the allow-list admits `method` on `path`.
    pub fn allows(&self, method: &Method, path: &NormalPath) -> bool {
        self.allow.iter().any(|r| r.matches(method, path))
    }

    /// The policy checks that need no state: the target belongs to this route, the
    /// method and path are allow-listed (S30) and the token carries every required
    /// scope. The result is the only way to get an [`AuthorizedCall`].
    pub fn authorize(
        self: &Arc<Self>,
        access: &VerifiedAccess,
        method: &Method,
        target: &ProxyTarget,
    ) -> Result<AuthorizedCall, ProxyError> {
        if target.route() != &self.name {
            return Err(ProxyError::keygate("target resolved to another route"));
        }
        if !self.allows(method, target.path()) {
            return Err(ProxyError::NotAllowed);
        }
        if !self.scopes.is_subset(access.scopes()) {
            return Err(ProxyError::InsufficientScope);
        }
        let tier = effective_tier(access.tier());
        if self.attestation.min_tier.is_some_and(|min| tier < min) {
            return Err(ProxyError::InsufficientAttestation);
        }
        Ok(AuthorizedCall {
            route: Arc::clone(self),
            target: target.clone(),
            method: method.clone(),
            user: access.user().clone(),
            client: access.client().clone(),
            tier,
        })
    }
}

/// A call that passed the route's allow-list and scope check for one verified token.
/// Only [`Route::authorize`] makes one; the limiter and the forwarder take it.
#[derive(Clone, Debug)]
pub struct AuthorizedCall {
    route: Arc<Route>,
    target: ProxyTarget,
    method: Method,
    user: UserId,
    client: ClientId,
    /// The trust tier the call counts as ([`effective_tier`]).
    tier: TrustTier,
}

impl AuthorizedCall {
    /// A call as if authorised, for unit tests of the later steps.
    #[cfg(test)]
    pub(crate) fn for_tests(route: Arc<Route>, target: ProxyTarget, user: UserId) -> Self {
        Self {
            route,
            target,
            method: Method::GET,
            client: ClientId::parse("test-client").expect("a valid client id"),
            user,
            tier: TrustTier::Unattested,
        }
    }

    /// The route.
    pub fn route(&self) -> &Arc<Route> {
        &self.route
    }
    /// The target (path and query below the route).
    pub fn target(&self) -> &ProxyTarget {
        &self.target
    }
    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }
    /// The token's user.
    pub fn user(&self) -> &UserId {
        &self.user
    }
    /// The token's client.
    pub fn client(&self) -> &ClientId {
        &self.client
    }
    /// The trust tier the call counts as.
    pub fn tier(&self) -> TrustTier {
        self.tier
    }
    /// The rate that applies to this call: its tier's, if the route sets one, else the
    /// route's; `true` when it is a tier's (counted in a bucket of the tier's own).
    pub fn rate(&self) -> (Option<&RateSpec>, bool) {
        match self
            .route
            .attestation
            .rates
            .iter()
            .find(|(t, _)| *t == self.tier)
        {
            Some((_, spec)) => (Some(spec), true),
            None => (self.route.limits().rate.as_ref(), false),
        }
    }
}

fn parse_inject(raw: &RawInject) -> Result<Injection, (&'static str, String)> {
    match raw {
        RawInject::Header(RawHeaderInject { header, value }) => {
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ("header", "not a valid header name".to_owned()))?;
            if headers::is_reserved_for_injection(&name) {
                return Err((
                    "header",
                    format!("'{name}' cannot carry a key (hop-by-hop or framing header)"),
                ));
            }
            let template = value.as_deref().unwrap_or("{secret}");
            let (prefix, suffix) = template
                .split_once("{secret}")
                .ok_or(("value", "the template must contain {secret}".to_owned()))?;
            if suffix.contains("{secret}") {
                return Err(("value", "{secret} may appear only once".into()));
            }
            for part in [prefix, suffix] {
                if HeaderValue::from_str(part).is_err() || !part.is_ascii() {
                    return Err(("value", "the template must be visible ASCII".into()));
                }
            }
            Ok(Injection::Header {
                name,
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            })
        }
        RawInject::Query(RawQueryInject { query }) => {
            let ok = !query.is_empty()
                && query.len() <= 64
                && query
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
            if !ok {
                return Err((
                    "query",
                    "parameter names are 1-64 unreserved characters".into(),
                ));
            }
            Ok(Injection::Query {
                name: query.clone(),
            })
        }
        RawInject::Basic(RawBasicInject { basic }) => {
            let u = &basic.username;
            if u.contains(':') || !u.bytes().all(|b| (0x20..0x7f).contains(&b)) || u.len() > 256 {
                return Err((
                    "basic.username",
                    "must be printable ASCII without ':'".into(),
                ));
            }
            Ok(Injection::Basic {
                username: u.clone(),
            })
        }
    }
}

fn split_count(text: &str) -> Result<(u64, &str), String> {
    let (n, unit) = text
        .split_once('/')
        .ok_or_else(|| "expected \"COUNT/UNIT\"".to_owned())?;
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| "count must be a positive integer".to_owned())?;
    if n == 0 {
        return Err("count must be positive".into());
    }
    Ok((n, unit.trim()))
}

/// Parses `20/min` and friends.
pub fn parse_rate(text: &str, burst: Option<u32>) -> Result<RateSpec, String> {
    let (n, unit) = split_count(text)?;
    let period = match unit {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        _ => return Err("unit must be sec, min, hour or day".into()),
    };
    let count = u32::try_from(n).map_err(|_| "count is too large".to_owned())?;
    let burst = burst.unwrap_or(count);
    if burst == 0 {
        return Err("burst must be at least 1".into());
    }
    Ok(RateSpec {
        count,
        period,
        burst,
    })
}

/// Parses `500/day` or `10000/month`.
pub fn parse_quota(text: &str) -> Result<QuotaSpec, String> {
    let (count, unit) = split_count(text)?;
    let period = match unit {
        "d" | "day" => QuotaPeriod::Day,
        "month" => QuotaPeriod::Month,
        _ => return Err("unit must be day or month".into()),
    };
    Ok(QuotaSpec { count, period })
}

fn parse_limits(raw: RawLimits) -> Result<Limits, (&'static str, String)> {
    let rate = match &raw.rate {
        Some(r) => Some(parse_rate(r, raw.burst).map_err(|m| ("rate", m))?),
        None if raw.burst.is_some() => {
            return Err(("burst", "burst needs a rate".into()));
        }
        None => None,
    };
    let quota = match &raw.quota {
        Some(q) => Some(parse_quota(q).map_err(|m| ("quota", m))?),
        None => None,
    };
    let per = match raw.per.as_deref() {
        None | Some("user") => LimitPer::User,
        Some("client") => LimitPer::Client,
        Some("ip") => LimitPer::Ip,
        Some(_) => return Err(("per", "must be user, client or ip".into())),
    };
    Ok(Limits { rate, quota, per })
}

/// Validates `cost = { … }`; errors name the sub-field as `""` or `".json"` etc.
fn parse_cost(raw: &RawCost) -> Result<CostSpec, (&'static str, String)> {
    let per_call = raw.per_call.unwrap_or(1);
    if per_call > MAX_COST {
        return Err((".per_call", format!("must be at most {MAX_COST}")));
    }
    let source = match (&raw.header, &raw.json) {
        (Some(_), Some(_)) => {
            return Err(("", "set at most one of header and json".into()));
        }
        (Some(h), None) => {
            let name = HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| (".header", "not a valid header name".to_owned()))?;
            CostSource::Header(name)
        }
        (None, Some(j)) => CostSource::Json(JsonPath::parse(j).map_err(|m| (".json", m))?),
        (None, None) => CostSource::Fixed,
    };
    Ok(CostSpec { per_call, source })
}

/// Validates `budget = { … }`.
fn parse_budget(raw: &RawBudget) -> Result<BudgetSpec, (&'static str, String)> {
    for (field, value) in [(".daily", raw.daily), (".monthly", raw.monthly)] {
        match value {
            Some(0) => return Err((field, "must be positive".into())),
            Some(v) if v > MAX_COST => return Err((field, format!("must be at most {MAX_COST}"))),
            _ => {}
        }
    }
    if raw.daily.is_none() && raw.monthly.is_none() {
        return Err(("", "set daily, monthly or both".into()));
    }
    Ok(BudgetSpec {
        daily: raw.daily,
        monthly: raw.monthly,
    })
}

/// Parses `250ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| "expected a number with a unit (ms, s, m, h)".to_owned())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| "expected a number with a unit (ms, s, m, h)".to_owned())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err("unit must be ms, s, m or h".into()),
    };
    if d.is_zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

fn parse_timeouts(raw: RawTimeouts) -> Result<Timeouts, (&'static str, String)> {
    let mut t = Timeouts::default();
    for (field, value, slot) in [
        ("connect", &raw.connect, &mut t.connect),
        ("response", &raw.response, &mut t.response),
        ("idle", &raw.idle, &mut t.idle),
        ("total", &raw.total, &mut t.total),
    ] {
        if let Some(v) = value {
            *slot = parse_duration(v).map_err(|m| (field, m))?;
        }
    }
    Ok(t)
}

/// Names the field of a serde error in one raw route (serde's own message is kept: it
/// names unknown or missing fields, never values).
pub fn raw_route_error(name: &str, message: &str) -> RouteConfigError {
    let message = message.trim().to_owned();
    if message.contains("RawInject") {
        return RouteConfigError {
            field: format!("routes.{name}.inject"),
            message: "expected { header = \"…\", value = \"…{secret}…\" }, { query = \"…\" } or { basic = { username = \"…\" } }".into(),
        };
    }
    RouteConfigError {
        field: format!("routes.{name}"),
        message,
    }
}

/// All routes by name, validated together.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: BTreeMap<RouteName, Arc<Route>>,
}

impl RouteTable {
    /// Validates every route; the first error names its field.
    pub fn from_raw(raw: &BTreeMap<String, RawRoute>) -> Result<Self, RouteConfigError> {
        let mut routes = BTreeMap::new();
        for (name, r) in raw {
            let route = Route::from_raw(name, r)?;
            routes.insert(route.name().clone(), Arc::new(route));
        }
        Ok(Self { routes })
    }

    /// Reads the `[routes.*]` tables of a TOML document (other keys are ignored).
    pub fn from_toml(text: &str) -> Result<Self, RouteConfigError> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| RouteConfigError {
            field: "routes".into(),
            message: e.message().to_owned(),
        })?;
        let mut raw = BTreeMap::new();
        match doc.get("routes") {
            None => {}
            Some(toml::Value::Table(routes)) => {
                for (name, value) in routes {
                    let route = RawRoute::deserialize(value.clone())
                        .map_err(|e| raw_route_error(name, &e.to_string()))?;
                    raw.insert(name.clone(), route);
                }
            }
            Some(_) => {
                return Err(RouteConfigError {
                    field: "routes".into(),
                    message: "must be a table of [routes.NAME] tables".into(),
                });
            }
        }
        Self::from_raw(&raw)
    }

    /// The route named `name`.
    pub fn get(&self, name: &RouteName) -> Option<&Arc<Route>> {
        self.routes.get(name)
    }

    /// Every route.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
public_url = "https://gate.example.com"

[routes.openai]
upstream = "https://api.openai.com/base"
secret   = "openai"
inject   = { header = "Authorization", value = "Bearer {secret}" }
allow    = ["POST /v1/chat/completions", "GET /v1/models", "GET /v1/models/*", "GET /v1/files/**"]
scopes   = ["ai"]
limits   = { rate = "20/min", burst = 5, quota = "500/day", per = "user" }
timeouts = { connect = "2s", response = "30s" }
max_body_bytes = 1000

[routes.maps]
upstream = "http://127.0.0.1:8081"
secret   = "maps"
inject   = { query = "key" }
allow    = ["GET /geocode"]

[routes.twilio]
upstream = "https://api.twilio.com"
secret   = "twilio"
inject   = { basic = { username = "AC123" } }
allow    = ["POST /2010-04-01/Accounts/*/Messages.json"]
limits   = { rate = "1/s", per = "ip" }
"#;

    #[test]
    fn parses_the_documented_shape() {
        let table = RouteTable::from_toml(GOOD).unwrap();
        assert_eq!(table.len(), 3);
        let openai = table.get(&RouteName::parse("openai").unwrap()).unwrap();
        assert_eq!(openai.upstream().to_string(), "https://api.openai.com/base");
        assert_eq!(openai.secret_name(), "openai");
        assert_eq!(
            openai.injection(),
            &Injection::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into(),
                suffix: String::new()
            }
        );
        let l = openai.limits();
        assert_eq!(l.rate.unwrap().burst, 5);
        assert_eq!(l.rate.unwrap().count, 20);
        assert_eq!(l.quota.unwrap().count, 500);
        assert_eq!(l.quota.unwrap().period, QuotaPeriod::Day);
        assert_eq!(openai.timeouts().connect, Duration::from_secs(2));
        assert_eq!(openai.timeouts().idle, Timeouts::default().idle);
        assert_eq!(openai.max_body_bytes(), 1000);
        let maps = table.get(&RouteName::parse("maps").unwrap()).unwrap();
        assert_eq!(maps.limits().rate, None);
        assert_eq!(maps.max_body_bytes(), DEFAULT_MAX_BODY_BYTES);
        let twilio = table.get(&RouteName::parse("twilio").unwrap()).unwrap();
        assert_eq!(twilio.limits().per, LimitPer::Ip);
        assert_eq!(twilio.limits().rate.unwrap().burst, 1);
    }

    #[test]
    fn allow_patterns() {
        let table = RouteTable::from_toml(GOOD).unwrap();
        let r = table.get(&RouteName::parse("openai").unwrap()).unwrap();
        let p = |s: &str| normalize_path(s).unwrap();
        assert!(r.allows(&Method::POST, &p("/v1/chat/completions")));
        assert!(!r.allows(&Method::GET, &p("/v1/chat/completions")));
        assert!(!r.allows(&Method::POST, &p("/v1/chat/completions/x")));
        assert!(!r.allows(&Method::POST, &p("/v1/chat")));
        assert!(!r.allows(&Method::POST, &p("/v1/chat/completions/")));
        assert!(r.allows(&Method::GET, &p("/v1/models")));
        assert!(r.allows(&Method::GET, &p("/v1/models/gpt-4")));
        assert!(!r.allows(&Method::GET, &p("/v1/models/gpt-4/x")));
        assert!(!r.allows(&Method::GET, &p("/v1/models/")));
        assert!(r.allows(&Method::GET, &p("/v1/files/a/b/c")));
        assert!(r.allows(&Method::GET, &p("/v1/files")));
        assert!(!r.allows(&Method::GET, &p("/v1/filesx")));
    }

    fn error_for(route_toml: &str) -> String {
        let doc = format!("[routes.r]\n{route_toml}");
        RouteTable::from_toml(&doc).unwrap_err().to_string()
    }

    const BASE: &str =
        "upstream = \"https://u.example\"\nsecret = \"s\"\ninject = { query = \"key\" }\n";

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (format!("{BASE}allow = [\"GET /a\", \"GET a\"]"), "routes.r.allow[1]: "),
            (format!("{BASE}allow = [\"GET /a\", \"GET /**/x\"]"), "routes.r.allow[1]: "),
            (format!("{BASE}allow = [\"get /a\"]"), "routes.r.allow[0]: "),
            (format!("{BASE}allow = [\"CONNECT /a\"]"), "routes.r.allow[0]: "),
            (format!("{BASE}allow = [\"GET /a/../b\"]"), "routes.r.allow[0]: "),
            (format!("{BASE}allow = []"), "routes.r.allow: "),
            (format!("{BASE}allow = [\"GET /a\"]\nlimits = {{ rate = \"5/fortnight\" }}"), "routes.r.limits.rate: "),
            (format!("{BASE}allow = [\"GET /a\"]\nlimits = {{ quota = \"5/year\" }}"), "routes.r.limits.quota: "),
            (format!("{BASE}allow = [\"GET /a\"]\nlimits = {{ per = \"planet\" }}"), "routes.r.limits.per: "),
            (format!("{BASE}allow = [\"GET /a\"]\nlimits = {{ burst = 3 }}"), "routes.r.limits.burst: "),
            (format!("{BASE}allow = [\"GET /a\"]\ntimeouts = {{ connect = \"5 parsecs\" }}"), "routes.r.timeouts.connect: "),
            (format!("{BASE}allow = [\"GET /a\"]\nscopes = [\"ok\", \"bad scope\"]"), "routes.r.scopes[1]: "),
            (format!("{BASE}allow = [\"GET /a\"]\ncost = {{ header = \"x-cost\", json = \"usage.n\" }}"), "routes.r.cost: "),
            (format!("{BASE}allow = [\"GET /a\"]\ncost = {{ header = \"bad header\" }}"), "routes.r.cost.header: "),
            (format!("{BASE}allow = [\"GET /a\"]\ncost = {{ json = \"usage..n\" }}"), "routes.r.cost.json: "),
            (format!("{BASE}allow = [\"GET /a\"]\ncost = {{ json = \"usage[x]\" }}"), "routes.r.cost.json: "),
            (format!("{BASE}allow = [\"GET /a\"]\nbudget = {{ daily = 0 }}"), "routes.r.budget.daily: "),
            (format!("{BASE}allow = [\"GET /a\"]\nbudget = {{ monthly = 0 }}"), "routes.r.budget.monthly: "),
            (format!("{BASE}allow = [\"GET /a\"]\nbudget = {{}}"), "routes.r.budget: "),
            ("upstream = \"ftp://u.example\"\nsecret = \"s\"\ninject = { query = \"key\" }\nallow = [\"GET /a\"]".into(), "routes.r.upstream: "),
            ("upstream = \"https://user:pw@u.example\"\nsecret = \"s\"\ninject = { query = \"key\" }\nallow = [\"GET /a\"]".into(), "routes.r.upstream: "),
            ("upstream = \"https://u.example/?a=b\"\nsecret = \"s\"\ninject = { query = \"key\" }\nallow = [\"GET /a\"]".into(), "routes.r.upstream: "),
            ("upstream = \"https://u.example\"\nsecret = \"a b\"\ninject = { query = \"key\" }\nallow = [\"GET /a\"]".into(), "routes.r.secret: "),
            ("upstream = \"https://u.example\"\nsecret = \"s\"\ninject = { header = \"Connection\" }\nallow = [\"GET /a\"]".into(), "routes.r.inject.header: "),
            ("upstream = \"https://u.example\"\nsecret = \"s\"\ninject = { header = \"X-Key\", value = \"no placeholder\" }\nallow = [\"GET /a\"]".into(), "routes.r.inject.value: "),
            ("upstream = \"https://u.example\"\nsecret = \"s\"\ninject = { basic = { username = \"a:b\" } }\nallow = [\"GET /a\"]".into(), "routes.r.inject.basic.username: "),
        ];
        for (toml, want) in cases {
            let got = error_for(&toml);
            assert!(got.starts_with(want), "{toml}\n→ {got}");
        }
        for (toml, want) in [
            (format!("{BASE}allow = [\"GET /a\"]\nextra = 1"), "routes.r: "),
            ("upstream = \"https://u.example\"\nsecret = \"s\"\ninject = { cookie = \"k\" }\nallow = [\"GET /a\"]".to_owned(), "routes.r.inject: "),
            ("upstream = \"https://u.example\"\nsecret = \"s\"\ninject = { header = \"X-K\", query = \"k\" }\nallow = [\"GET /a\"]".to_owned(), "routes.r.inject: "),
            (format!("{BASE}allow = \"GET /a\""), "routes.r: "),
        ] {
            let got = error_for(&toml);
            assert!(got.starts_with(want), "{toml}\n→ {got}");
        }
        let bad_name = RouteTable::from_toml(&format!("[routes.Bad]\n{BASE}allow = [\"GET /a\"]"))
            .unwrap_err()
            .to_string();
        assert!(bad_name.starts_with("routes.Bad: "), "{bad_name}");
    }

    #[test]
    fn cost_and_budget_parse_with_defaults() {
        let table = RouteTable::from_toml(&format!(
            "[routes.r]\n{BASE}allow = [\"GET /a\"]\ncost = {{ json = \"usage.total_tokens\" }}\nbudget = {{ daily = 100000, monthly = 2000000 }}\n\
             [routes.h]\n{BASE}allow = [\"GET /a\"]\ncost = {{ per_call = 3, header = \"X-Usage-Cost\" }}\n\
             [routes.plain]\n{BASE}allow = [\"GET /a\"]\n"
        ))
        .unwrap();
        let get = |n: &str| table.get(&RouteName::parse(n).unwrap()).unwrap().clone();
        let r = get("r");
        assert_eq!(r.cost().per_call, 1);
        assert!(
            matches!(&r.cost().source, CostSource::Json(p) if p.as_str() == "usage.total_tokens")
        );
        assert_eq!(
            r.budget(),
            Some(&BudgetSpec {
                daily: Some(100_000),
                monthly: Some(2_000_000)
            })
        );
        let h = get("h");
        assert_eq!(h.cost().per_call, 3);
        assert!(matches!(&h.cost().source, CostSource::Header(n) if n == "x-usage-cost"));
        let plain = get("plain");
        assert_eq!(plain.cost(), &CostSpec::default());
        assert!(plain.budget().is_none());
        // Routes without cost or budget serialise as before (stored admin routes).
        let raw: RawRoute = toml::from_str(&format!("{BASE}allow = [\"GET /a\"]")).unwrap();
        let json = toml::to_string(&raw).unwrap();
        assert!(!json.contains("cost") && !json.contains("budget"), "{json}");
    }

    #[test]
    fn host_header_is_the_authority_without_a_default_port() {
        let host = |url: &str| Upstream::parse(url).unwrap().host_header().clone();
        assert_eq!(host("https://api.example.com:443/v1"), "api.example.com");
        assert_eq!(host("https://api.example.com"), "api.example.com");
        assert_eq!(host("http://api.example.com:80"), "api.example.com");
        assert_eq!(host("http://127.0.0.1:8080/base"), "127.0.0.1:8080");
        assert_eq!(host("https://api.example.com:80"), "api.example.com:80");
        assert_eq!(host("http://[::1]:80"), "[::1]");
        assert_eq!(host("http://[::1]:9000"), "[::1]:9000");
    }

    #[test]
    fn upstream_uri_comes_from_the_route() {
        let up = Upstream::parse("https://api.example.com:8443/base/").unwrap();
        let uri = up
            .uri_for(&normalize_path("/v1/x").unwrap(), Some("a=1"))
            .unwrap();
        assert_eq!(
            uri.to_string(),
            "https://api.example.com:8443/base/v1/x?a=1"
        );
    }
}
