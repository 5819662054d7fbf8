//! keygate's proxy engine: everything between an app's call and the third-party API it
//! reaches with the real key injected, as plain types and functions (no router, no
//! database).
//!
//! [`Gatekeeper`] owns the pipeline. [`Gatekeeper::handle`] takes a request and the peer's
//! address and runs each step once, in an order the types enforce (each step's output is
//! the next step's required input, and none can be built elsewhere):
//!
//! 1. [`CheckedRequest::new`] refuses ambiguous heads (S28); [`ProxyTarget::parse`] takes
//!    `/proxy/{route}/{path}?{query}` apart with the one path normaliser (S29); the route
//!    is looked up by name in the live [`RouteTable`].
//! 2. The [`AccessVerifier`] (the token service, in the server) yields a
//!    [`VerifiedAccess`]: token, DPoP proof, revocation.
//! 3. [`Route::authorize`] checks the allow-list and scopes for that token and yields an
//!    [`AuthorizedCall`] (S30); then the monitor's [`throttle::Throttles`], if any.
//! 4. [`LimitGate::admit`] applies rate, the user's cost budget ([`budget::Budgets`]) and
//!    quota, and yields a [`RatePermit`] (or a 429 with `Retry-After`).
//! 5. The route's key comes from the [`KeySource`] (the vault, in the server) through a
//!    short cache, prepared with the forms of it responses are searched for
//!    ([`RouteKey`]).
//! 6. [`Forwarder::forward`] takes all of it, builds the upstream request from the route
//!    only (S25), cleans the headers (S26, S27), injects the key, streams both bodies,
//!    redacts the key wherever a body echoes it (S30) and meters the call's cost.
//!
//! Every refusal, from a malformed head to a refused token (answered as OAuth does, with
//! its `WWW-Authenticate` challenge) or an unreachable upstream, is answered with
//! [`ProxyError::to_response`] and counted once in [`usage::ProxyMetrics`]; a call refused
//! after its token was verified is also a [`usage::UsageEvent`], so the monitor sees
//! traffic pushing past its limits. HTTP/1 connections should be read through
//! [`h1guard::StrictHttp1`], so ambiguous framing the HTTP server would silently repair is
//! refused instead (S28).
//!
//! | module | owns |
//! |---|---|
//! | [`gatekeeper`] | the pipeline, the route table in force, the key cache, the traits the server implements |
//! | [`route`] | `[routes.NAME]` config, validation, allow-list patterns, limits, timeouts |
//! | [`path`] | the path normaliser, query checks, route names, proxy targets |
//! | [`framing`] | request head framing checks on parsed heads, [`CheckedRequest`] |
//! | [`h1guard`] | the same checks on the raw HTTP/1 byte stream, before the server's parser |
//! | [`headers`] | outbound/inbound header hygiene and key injection |
//! | [`limit`] | GCRA rate limiter and quota traits + in-memory implementations, permits |
//! | [`budget`] | per-user cost budgets: the check, the spending sink, the ledger trait |
//! | [`throttle`] | the monitor's throttles on users, sessions, clients and networks |
//! | [`meter`] | reading a call's cost from the response header, JSON body or event stream |
//! | [`forward`] | pooled upstream client, streaming, timeouts, redaction |
//! | [`key`] | [`RouteKey`]: a route's key and its searched forms, prepared once per read |
//! | [`redact`] | finding the key in clear/base64/URL-encoded form |
//! | [`usage`] | usage events and Prometheus counters |
//! | [`error`] | [`ProxyError`]: who failed, status, generic body |
//!
//! # Example: a server's proxy handler
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use keygate_proxy::{Gatekeeper, ProxyBody};
//!
//! async fn proxy<B>(gatekeeper: &Gatekeeper, peer: SocketAddr, request: http::Request<B>)
//!     -> http::Response<ProxyBody>
//! where
//!     B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
//!     B::Error: Into<keygate_proxy::forward::BoxError>,
//! {
//!     gatekeeper.handle(request, peer.ip()).await
//! }
//! ```
//!
//! [`VerifiedAccess`]: keygate_auth::resource::VerifiedAccess

pub mod budget;
pub mod error;
pub mod forward;
pub mod framing;
pub mod gatekeeper;
pub mod h1guard;
pub mod headers;
pub mod key;
pub mod limit;
pub mod meter;
pub mod path;
pub mod redact;
pub mod route;
pub mod throttle;
mod upstream;
pub mod usage;

pub use budget::Budgets;
pub use error::{BudgetWindow, Fault, ProxyError};
pub use forward::{Forwarder, ForwarderConfig, ProxyBody};
pub use framing::CheckedRequest;
pub use gatekeeper::{
    AccessRequest, AccessVerifier, Gatekeeper, GatekeeperConfig, KeySource, KeyUnavailable,
};
pub use headers::ForwardedInfo;
pub use key::RouteKey;
pub use limit::{LimitGate, RatePermit};
pub use path::{NormalPath, ProxyTarget, RouteName};
pub use route::{AuthorizedCall, Route, RouteTable};
