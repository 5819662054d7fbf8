//! Fuzzes DPoP proof verification (header, JWK, claims, htu normalisation) with
//! arbitrary header bytes and request targets.
#![no_main]

use keygate_auth::UnixTime;
use keygate_auth::dpop::{self, DpopConfig, InMemoryReplayCache, ProofRequest, PublicBaseUrl};
use libfuzzer_sys::fuzz_target;

fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fuzz_target!(|input: (&[u8], &str, &str)| {
    let (proof, target, htu) = input;
    let Ok(base) = PublicBaseUrl::parse("https://gate.example.com") else {
        return;
    };
    let config = DpopConfig::new(base);
    let headers = [proof];
    let request = ProofRequest {
        method: "POST",
        target,
        dpop_headers: &headers,
        access_token: Some("token"),
        expected_jkt: None,
    };
    let cache = InMemoryReplayCache::new(64);
    let _ = block_on(dpop::verify_proof(
        &config,
        &request,
        &cache,
        UnixTime(1_800_000_000),
    ));
    let _ = dpop::normalise_htu(htu);
});
