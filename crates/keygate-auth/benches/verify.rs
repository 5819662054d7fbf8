//! Hot paths of the token service: access-token verification (uncached and cached) and
//! DPoP proof verification, per algorithm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate_auth::UnixTime;
use keygate_auth::access::{self, AccessGrant, AccessTokenCache, AccessTokenConfig};
use keygate_auth::dpop::{
    self, DpopConfig, Freshness, ProofClaims, ProofKeyCache, ProofRequest, PublicBaseUrl,
    ReplayCache, ReplayCacheUnavailable, ReplayKey,
};
use keygate_auth::ids::{ClientId, ScopeSet, SessionId, UserId};
use keygate_auth::jwk::PublicJwk;
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
            x5t: None,
            tier: None,
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
    let mut dpop_uncached =
        DpopConfig::new(PublicBaseUrl::parse("https://gate.example.com").unwrap());
    dpop_uncached.key_cache = ProofKeyCache::new(0);
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
        // The part of a proof check a per-key cache could skip (RFC 9449 allows caching
        // the key, never a verdict): the `jwk` member to a checked public key.
        let jwk_json = device.verification_key().to_jwk().to_json();
        c.bench_function(&format!("dpop_proof_jwk_parse_{}", alg.as_str()), |b| {
            b.iter(|| {
                PublicJwk::from_json(black_box(&jwk_json))
                    .unwrap()
                    .verification_key()
                    .unwrap()
            })
        });
        // With the proof key cache (the default), then with it off (capacity 0: every
        // proof parses its key, as before the cache).
        for (suffix, config) in [("", &dpop_config), ("_uncached", &dpop_uncached)] {
            c.bench_function(
                &format!("dpop_proof_verify_{}{suffix}", alg.as_str()),
                |b| {
                    b.iter(|| {
                        let headers: [&[u8]; 1] = [proof.as_bytes()];
                        let request = ProofRequest {
                            method: "POST",
                            target: "/proxy/openai/v1/chat/completions",
                            dpop_headers: &headers,
                            access_token: Some("token"),
                            expected_jkt: Some(&jkt),
                        };
                        block_on(dpop::verify_proof(config, &request, &NoReplayCache, NOW)).unwrap()
                    })
                },
            );
        }
    }
}

/// Raw signature verification, side by side in one run: keygate's ES256 path (range check,
/// then ring) against RustCrypto p256 (what it used before), and ed25519-dalek's
/// `verify_strict` (what EdDSA uses) against ring's Ed25519.
fn signatures(c: &mut Criterion) {
    use keygate_auth::jws::verify_signature;
    use keygate_auth::keys::VerificationKey;
    use p256::ecdsa::signature::Verifier as _;
    let input = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEiLCJpYXQiOjE4MDAwMDAwMDB9";

    let es = SigningKey::generate(Algorithm::Es256);
    let es_sig = es.sign(input);
    let VerificationKey::P256(p256_vk) = es.verification_key().clone() else {
        unreachable!()
    };
    let p256_sig = p256::ecdsa::Signature::from_slice(&es_sig).unwrap();
    c.bench_function("es256_signature_keygate_ring", |b| {
        b.iter(|| {
            verify_signature(
                es.verification_key(),
                Algorithm::Es256,
                black_box(input),
                &es_sig,
            )
            .unwrap()
        })
    });
    c.bench_function("es256_signature_rustcrypto_p256", |b| {
        b.iter(|| p256_vk.verify(black_box(input), &p256_sig).unwrap())
    });

    let ed = SigningKey::generate(Algorithm::EdDsa);
    let ed_sig = ed.sign(input);
    let VerificationKey::Ed25519(dalek_vk) = ed.verification_key().clone() else {
        unreachable!()
    };
    c.bench_function("ed25519_signature_keygate_dalek_strict", |b| {
        b.iter(|| {
            verify_signature(
                ed.verification_key(),
                Algorithm::EdDsa,
                black_box(input),
                &ed_sig,
            )
            .unwrap()
        })
    });
    let ring_ed = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        dalek_vk.to_bytes().to_vec(),
    );
    c.bench_function("ed25519_signature_ring", |b| {
        b.iter(|| ring_ed.verify(black_box(input), &ed_sig).unwrap())
    });
}

criterion_group!(benches, bench, signatures);
criterion_main!(benches);
