//! keygate's proxy engine: everything the server needs to forward an app's call to a
//! third-party API with the real key injected, as plain types and functions (no router,
//! no database).
//!
//! The pipeline is enforced by types, so no path can skip a check:
//!
//! 1. [`framing::check_request_parts`] refuses ambiguous heads (S28) and
//!    [`path::ProxyTarget::parse`] takes `/proxy/{route}/{path}?{query}` apart with the
//!    one path normaliser (S29).
//! 2. keygate-auth's `verify_request` yields a [`VerifiedAccess`].
//! 3. [`route::Route::authorize`] checks the allow-list and scopes for that token and
//!    yields an [`route::AuthorizedCall`] (S30).
//! 4. [`limit::LimitGate::admit`] applies rate, the user's cost budget
//!    ([`budget::Budgets`]) and quota, and yields a [`limit::RatePermit`] (or a 429 with
//!    `Retry-After`).
//! 5. [`forward::Forwarder::forward`] takes all three proofs plus the key as a
//!    `SecretString`, builds the upstream request from the route only (S25), cleans the
//!    headers (S26, S27), injects the key, streams both bodies and redacts upstream error
//!    bodies that echo the key (S30).
//!
//! | module | owns |
//! |---|---|
//! | [`route`] | `[routes.NAME]` config, validation, allow-list patterns, limits, timeouts |
//! | [`path`] | the path normaliser, query checks, route names, proxy targets |
//! | [`framing`] | request head framing checks on parsed heads |
//! | [`h1guard`] | the same checks on the raw HTTP/1 byte stream, before the server's parser |
//! | [`headers`] | outbound/inbound header hygiene and key injection |
//! | [`limit`] | GCRA rate limiter and quota traits + in-memory implementations, permits |
//! | [`budget`] | per-user cost budgets: the check, the spending sink, the ledger trait |
//! | [`meter`] | reading a call's cost from the response header, JSON body or event stream |
//! | [`forward`] | pooled upstream client, streaming, timeouts, redaction |
//! | [`redact`] | finding the key in clear/base64/URL-encoded form |
//! | [`usage`] | usage events and Prometheus counters |
//! | [`error`] | [`ProxyError`]: who failed, status, generic body |
//!
//! # Example: a proxy handler
//!
//! How a server handler wires the steps (the token check, the vault read and the
//! response conversion are the server's; everything else is this crate's):
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use bytes::Bytes;
//! use http::{HeaderValue, Request, Response};
//! use keygate_auth::resource::VerifiedAccess;
//! use keygate_proxy::{
//!     framing, ForwardedInfo, Forwarder, LimitGate, ProxyBody, ProxyError, ProxyTarget, RouteTable,
//! };
//! use secrecy::SecretString;
//!
//! struct State { routes: RouteTable, gate: LimitGate, forwarder: Forwarder }
//!
//! async fn proxy<B>(
//!     state: &State,
//!     peer: SocketAddr,
//!     request: Request<B>,
//!     verify: impl AsyncFnOnce(&Request<B>) -> Result<VerifiedAccess, ProxyError>,
//!     secret_of: impl AsyncFnOnce(&str) -> Result<SecretString, ProxyError>,
//! ) -> Result<Response<ProxyBody>, ProxyError>
//! where
//!     B: http_body::Body<Data = Bytes> + Send + 'static,
//!     B::Error: Into<keygate_proxy::forward::BoxError>,
//! {
//!     framing::check_request(&request)?;
//!     let raw = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
//!     let target = ProxyTarget::parse("/proxy/", raw)?;
//!     let route = state.routes.get(target.route()).ok_or(ProxyError::UnknownRoute)?.clone();
//!     let access = verify(&request).await?; // keygate_auth::resource::verify_request
//!     let call = route.authorize(&access, request.method(), &target)?;
//!     let permit = state.gate.admit(&call, peer.ip()).await?;
//!     let secret = secret_of(route.secret_name()).await?; // vault: current version, or 503
//!     let forwarded = ForwardedInfo {
//!         client_ip: peer.ip(),
//!         proto: "https",
//!         host: HeaderValue::from_static("gate.example.com"),
//!     };
//!     state.forwarder.forward(&access, call, permit, secret, request, &forwarded).await
//! }
//! ```
//!
//! On `Err(e)`, answer `e.to_response()` (status, generic JSON body, `Retry-After`,
//! `Connection: close` for framing errors) and count it with
//! [`usage::ProxyMetrics::refused`]. Accepted HTTP/1 connections should be wrapped in
//! [`h1guard::StrictHttp1`] so that ambiguous framing the HTTP server would silently
//! repair is refused instead (S28).
//!
//! [`VerifiedAccess`]: keygate_auth::resource::VerifiedAccess
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod budget;
pub mod error;
pub mod forward;
pub mod framing;
pub mod gatekeeper;
pub mod h1guard;
pub mod headers;
pub mod limit;
pub mod meter;
pub mod path;
pub mod redact;
pub mod route;
pub mod throttle;
pub mod usage;

pub use budget::Budgets;
pub use error::{BudgetWindow, Fault, ProxyError};
pub use forward::{Forwarder, ForwarderConfig, ProxyBody};
pub use framing::CheckedRequest;
pub use gatekeeper::{
    AccessRequest, AccessVerifier, Gatekeeper, GatekeeperConfig, KeySource, KeyUnavailable,
};
pub use headers::ForwardedInfo;
pub use limit::{LimitGate, RatePermit};
pub use path::{NormalPath, ProxyTarget, RouteName};
pub use route::{AuthorizedCall, Route, RouteTable};
