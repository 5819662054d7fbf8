//! Hot paths of the token service: access-token verification (uncached and cached) and
//! DPoP proof verification, per algorithm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate_auth::UnixTime;
use keygate_auth::access::{self, AccessGrant, AccessTokenCache, AccessTokenConfig};
use keygate_auth::dpop::{
    self, DpopConfig, Freshness, ProofClaims, ProofRequest, PublicBaseUrl, ReplayCache,
    ReplayCacheUnavailable, ReplayKey,
};
use keygate_auth::ids::{ClientId, ScopeSet, SessionId, UserId};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::{RotationPolicy, SigningKey, SigningKeySet};
use secrecy::ExposeSecret;

const NOW: UnixTime = UnixTime(1_800_000_000);

/// Accepts every key, so the benchmark measures the checks, not the cache.
struct NoReplayCache;
impl ReplayCache for NoReplayCache {
    fn insert_if_absent(
        &self,
        _: ReplayKey,
        _: UnixTime,
        _: UnixTime,
    ) -> impl std::future::Future<Output = Result<Freshness, ReplayCacheUnavailable>> + Send {
        std::future::ready(Ok(Freshness::Fresh))
    }
}

fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn bench(c: &mut Criterion) {
    let config =
        AccessTokenConfig::new("https://gate.example.com", "https://gate.example.com/proxy");
    for alg in [Algorithm::EdDsa, Algorithm::Es256] {
        let keys =
            SigningKeySet::bootstrap(RotationPolicy::default(), SigningKey::generate(alg), NOW);
        let device = SigningKey::generate(Algorithm::Es256);
        let grant = AccessGrant {
            user: UserId::parse("user-1").unwrap(),
            client: ClientId::parse("app-1").unwrap(),
            scopes: ScopeSet::parse("ai").unwrap(),
            session: SessionId::generate(),
            jkt: Some(device.verification_key().thumbprint()),
        };
        let issued = access::issue(&config, &keys, &grant, NOW).unwrap();
        let token = issued.token.expose_secret().to_owned();
        c.bench_function(&format!("access_token_verify_{}", alg.as_str()), |b| {
            b.iter(|| access::verify(&config, &keys, black_box(&token), NOW).unwrap())
        });
        let cache = AccessTokenCache::new(1024);
        c.bench_function(
            &format!("access_token_verify_cached_{}", alg.as_str()),
            |b| {
                b.iter(|| {
                    cache
                        .verify(&config, &keys, black_box(&token), NOW)
                        .unwrap()
                })
            },
        );
    }
    let dpop_config = DpopConfig::new(PublicBaseUrl::parse("https://gate.example.com").unwrap());
    for alg in [Algorithm::EdDsa, Algorithm::Es256] {
        let device = SigningKey::generate(alg);
        let proof = dpop::create_proof(
            &device,
            &ProofClaims {
                htm: "POST",
                htu: "https://gate.example.com/proxy/openai/v1/chat/completions",
                iat: NOW,
                jti: "bench-jti",
                nonce: None,
                access_token: Some("token"),
            },
        );
        let jkt = device.verification_key().thumbprint();
        c.bench_function(&format!("dpop_proof_verify_{}", alg.as_str()), |b| {
            b.iter(|| {
                let headers: [&[u8]; 1] = [proof.as_bytes()];
                let request = ProofRequest {
                    method: "POST",
                    target: "/proxy/openai/v1/chat/completions",
                    dpop_headers: &headers,
                    access_token: Some("token"),
                    expected_jkt: Some(&jkt),
                };
                block_on(dpop::verify_proof(
                    &dpop_config,
                    &request,
                    &NoReplayCache,
                    NOW,
                ))
                .unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
