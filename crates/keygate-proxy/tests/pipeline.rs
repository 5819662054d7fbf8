//! The policy pipeline as types: limiter outages degrade to a stricter local limit
//! (never to unlimited), quota outages fail closed, and proofs cannot be mixed up
//! between calls.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use keygate_proxy::limit::{
    BoxFuture, InMemoryQuotaStore, InMemoryRateLimiter, LimitKey, LimiterUnavailable,
    QuotaDecision, QuotaStore, QuotaUnavailable, QuotaWindow, RateDecision, RateLimiter,
    RatePolicy,
};
use keygate_proxy::usage::{NoUsage, ProxyMetrics};
use keygate_proxy::{
    ForwardedInfo, Forwarder, ForwarderConfig, LimitGate, ProxyError, ProxyTarget, RouteTable,
};
use secrecy::SecretString;

struct DownLimiter(AtomicUsize);
impl RateLimiter for DownLimiter {
    fn acquire<'a>(
        &'a self,
        _: &'a LimitKey,
        _: &'a RatePolicy,
    ) -> BoxFuture<'a, Result<RateDecision, LimiterUnavailable>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(std::future::ready(Err(LimiterUnavailable)))
    }
}

struct DownQuota;
impl QuotaStore for DownQuota {
    fn consume<'a>(
        &'a self,
        _: &'a LimitKey,
        _: QuotaWindow,
        _: u64,
    ) -> BoxFuture<'a, Result<QuotaDecision, QuotaUnavailable>> {
        Box::pin(std::future::ready(Err(QuotaUnavailable)))
    }
}

const ROUTES: &str = r#"
[routes.a]
upstream = "http://127.0.0.1:9"
secret = "k"
inject = { header = "X-Api-Key" }
allow = ["GET /x"]
scopes = ["ai"]
limits = { rate = "8/min", burst = 8, quota = "100/day" }

[routes.b]
upstream = "http://127.0.0.1:9"
secret = "k"
inject = { header = "X-Api-Key" }
allow = ["GET /x"]
"#;

fn ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

#[tokio::test]
async fn s35_limiter_outage_degrades_to_a_stricter_local_limit() {
    let table = RouteTable::from_toml(ROUTES).unwrap();
    let route = table.iter().next().unwrap().clone();
    let access = verified_access("alice", "ai").await;
    let target = ProxyTarget::parse("/proxy/", "/proxy/a/x").unwrap();
    let down = Arc::new(DownLimiter(AtomicUsize::new(0)));
    // Four replicas share the limit: each allows 8/4 = 2 at once while Redis is down.
    let gate = LimitGate::new(down.clone(), Arc::new(InMemoryQuotaStore::new()), 4);
    let mut allowed = 0;
    for _ in 0..10 {
        let call = route.authorize(&access, &Method::GET, &target).unwrap();
        match gate.admit(&call, ip()).await {
            Ok(_) => allowed += 1,
            Err(ProxyError::RateLimited { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(allowed, 2);
    assert_eq!(
        down.0.load(Ordering::Relaxed),
        10,
        "the shared limiter is still asked first"
    );
}

#[tokio::test]
async fn s35_quota_store_outage_fails_closed() {
    let table = RouteTable::from_toml(ROUTES).unwrap();
    let route = table.iter().next().unwrap().clone();
    let access = verified_access("alice", "ai").await;
    let target = ProxyTarget::parse("/proxy/", "/proxy/a/x").unwrap();
    let gate = LimitGate::new(
        Arc::new(InMemoryRateLimiter::new(100)),
        Arc::new(DownQuota),
        1,
    );
    let call = route.authorize(&access, &Method::GET, &target).unwrap();
    let err = gate.admit(&call, ip()).await.unwrap_err();
    assert_eq!(err.status(), 503);
    assert_eq!(err.fault(), keygate_proxy::Fault::Keygate);
}

#[tokio::test]
async fn scope_check_requires_every_route_scope() {
    let table = RouteTable::from_toml(ROUTES).unwrap();
    let route = table.iter().next().unwrap().clone();
    let target = ProxyTarget::parse("/proxy/", "/proxy/a/x").unwrap();
    let without = verified_access("alice", "maps").await;
    let err = route
        .authorize(&without, &Method::GET, &target)
        .unwrap_err();
    assert!(matches!(err, ProxyError::InsufficientScope));
    // A target of another route is not authorised by this one.
    let other = ProxyTarget::parse("/proxy/", "/proxy/b/x").unwrap();
    let with = verified_access("alice", "ai").await;
    assert!(route.authorize(&with, &Method::GET, &other).is_err());
}

#[tokio::test]
async fn a_permit_for_one_call_does_not_open_another() {
    let table = RouteTable::from_toml(ROUTES).unwrap();
    let mut routes = table.iter();
    let a = routes.next().unwrap().clone();
    let b = routes.next().unwrap().clone();
    let alice = verified_access("alice", "ai").await;
    let bob = verified_access("bob", "ai").await;
    let gate = LimitGate::in_memory(100);
    let forwarder = Arc::new(Forwarder::new(
        ForwarderConfig::default(),
        Arc::new(NoUsage),
        Arc::new(ProxyMetrics::new()),
    ));
    let forwarded = ForwardedInfo {
        client_ip: ip(),
        proto: "https",
        host: HeaderValue::from_static("gate.example.com"),
    };
    let call_a = a
        .authorize(
            &alice,
            &Method::GET,
            &ProxyTarget::parse("/proxy/", "/proxy/a/x").unwrap(),
        )
        .unwrap();
    let call_b = b
        .authorize(
            &alice,
            &Method::GET,
            &ProxyTarget::parse("/proxy/", "/proxy/b/x").unwrap(),
        )
        .unwrap();
    let permit_a = gate.admit(&call_a, ip()).await.unwrap();
    let request = || {
        Request::get("/proxy/b/x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // Route A's permit on route B's call.
    let err = forwarder
        .forward(
            &alice,
            call_b.clone(),
            permit_a,
            SecretString::from("k1"),
            request(),
            &forwarded,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::Keygate(_)), "{err}");
    // Alice's call and permit presented with Bob's access.
    let permit_b = gate.admit(&call_b, ip()).await.unwrap();
    let err = forwarder
        .forward(
            &bob,
            call_b.clone(),
            permit_b,
            SecretString::from("k1"),
            request(),
            &forwarded,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::Keygate(_)), "{err}");
    // The forward future is Send, so it can run in an axum handler / tokio::spawn.
    let permit_b = gate.admit(&call_b, ip()).await.unwrap();
    let f = Arc::clone(&forwarder);
    let handle = tokio::spawn(async move {
        f.forward(
            &alice,
            call_b,
            permit_b,
            SecretString::from("k1"),
            request(),
            &forwarded,
        )
        .await
        .map(|_| ())
    });
    // Port 9 on localhost is closed: an upstream failure, not a panic.
    let err = handle.await.unwrap().unwrap_err();
    assert_eq!(err.fault(), keygate_proxy::Fault::Upstream);
}
