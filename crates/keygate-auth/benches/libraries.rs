//! Which library should verify signatures: ring, aws-lc-rs, RustCrypto p256 and
//! ed25519-dalek measured side by side in one run, on the same message, key and signature
//! (issue 10, item 4). Needs the opt-in feature, so ordinary builds never compile AWS-LC:
//! `cargo bench -p keygate-auth --features bench-aws-lc --bench libraries`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::SigningKey;

/// The candidate verifiers on the same message, key and signature, in the same run: for
/// ES256 ring, aws-lc-rs (unparsed key, and a key parsed once) and RustCrypto p256; for
/// Ed25519 ed25519-dalek `verify_strict`, ring and aws-lc-rs. Library calls only, none of
/// keygate's own checks, so the rows compare the libraries.
fn libraries(c: &mut Criterion) {
    use keygate_auth::keys::VerificationKey;
    use p256::ecdsa::signature::Verifier as _;
    let input = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEiLCJpYXQiOjE4MDAwMDAwMDB9";
    let mut group = c.benchmark_group("lib");

    let es = SigningKey::generate(Algorithm::Es256);
    let es_sig = es.sign(input);
    let VerificationKey::P256(p256_vk) = es.verification_key().clone() else {
        unreachable!()
    };
    let point = p256_vk.to_encoded_point(false).as_bytes().to_vec();
    let p256_sig = p256::ecdsa::Signature::from_slice(&es_sig).unwrap();
    let ring_es =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point);
    let aws_es = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point,
    );
    let aws_es_parsed = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point,
    )
    .unwrap();
    group.bench_function("es256_ring", |b| {
        b.iter(|| ring_es.verify(black_box(input), &es_sig).unwrap())
    });
    group.bench_function("es256_aws_lc_rs", |b| {
        b.iter(|| aws_es.verify(black_box(input), &es_sig).unwrap())
    });
    group.bench_function("es256_aws_lc_rs_parsed", |b| {
        b.iter(|| aws_es_parsed.verify_sig(black_box(input), &es_sig).unwrap())
    });
    group.bench_function("es256_rustcrypto_p256", |b| {
        b.iter(|| p256_vk.verify(black_box(input), &p256_sig).unwrap())
    });
    // What a per-proof key parse costs on its own, per library.
    group.bench_function("es256_parse_p256_sec1", |b| {
        b.iter(|| p256::ecdsa::VerifyingKey::from_sec1_bytes(black_box(&point)).unwrap())
    });
    group.bench_function("es256_parse_aws_lc_rs", |b| {
        b.iter(|| {
            aws_lc_rs::signature::ParsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                black_box(&point),
            )
            .unwrap()
        })
    });

    let ed = SigningKey::generate(Algorithm::EdDsa);
    let ed_sig = ed.sign(input);
    let VerificationKey::Ed25519(dalek_vk) = ed.verification_key().clone() else {
        unreachable!()
    };
    let ed_bytes = dalek_vk.to_bytes();
    let dalek_sig = ed25519_dalek::Signature::from_slice(&ed_sig).unwrap();
    let ring_ed = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, ed_bytes);
    let aws_ed =
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, ed_bytes);
    let aws_ed_parsed =
        aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ED25519, ed_bytes)
            .unwrap();
    group.bench_function("ed25519_dalek_strict", |b| {
        b.iter(|| {
            dalek_vk
                .verify_strict(black_box(input), &dalek_sig)
                .unwrap()
        })
    });
    group.bench_function("ed25519_ring", |b| {
        b.iter(|| ring_ed.verify(black_box(input), &ed_sig).unwrap())
    });
    group.bench_function("ed25519_aws_lc_rs", |b| {
        b.iter(|| aws_ed.verify(black_box(input), &ed_sig).unwrap())
    });
    group.bench_function("ed25519_aws_lc_rs_parsed", |b| {
        b.iter(|| aws_ed_parsed.verify_sig(black_box(input), &ed_sig).unwrap())
    });
    group.finish();
}

criterion_group!(benches, libraries);
criterion_main!(benches);
