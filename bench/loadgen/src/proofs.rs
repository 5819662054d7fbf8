//! DPoP proofs for the load: one fresh proof per request, signed ahead of the measured
//! window.
//!
//! Signing ES256 costs the generator tens of microseconds of CPU per request, on a machine
//! whose cores the server under test also needs. So the proofs a window will use are
//! signed before it starts, on every core while the server idles, and handed out from a
//! pool during it. If the pool runs dry, proofs are signed inline and counted, so a
//! report always says whether signing competed with the server.
//!
//! The proofs are built by keygate-client's own `proof::create_proof` (the code apps
//! use): `typ` `dpop+jwt`, ES256, the public JWK in the header, a fresh 128-bit `jti`,
//! `htm`, `htu` (query and fragment dropped), `iat`, and `ath` = base64url(SHA-256(access
//! token)). A proof is accepted for 60 s after its `iat`, so a run that uses pre-signed
//! proofs must finish well within that.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use http::HeaderValue;
use keygate_client::proof::{ProofInput, create_proof};
use keygate_client::{FileKeyStore, KeyStore, MemoryKeyStore, UnixTime};
use url::Url;

/// The longest a run with DPoP may last (warm-up + window): proofs signed before it must
/// still be younger than the server's 60 s limit at its end, with room for signing time
/// and clock steps.
pub const MAX_DPOP_RUN: Duration = Duration::from_secs(40);

/// The DPoP key: `generate` for a throwaway key in memory, otherwise a key file (created
/// with mode 0600 if missing, the same format as keygate-client's `FileKeyStore`).
pub fn load_key(spec: &str) -> anyhow::Result<Arc<dyn KeyStore>> {
    if spec == "generate" {
        return Ok(Arc::new(MemoryKeyStore::generate()));
    }
    let store = FileKeyStore::open_or_create(Path::new(spec))
        .with_context(|| format!("DPoP key {spec}"))?;
    Ok(Arc::new(store))
}

/// The current time as a JWT `iat`.
pub fn unix_now() -> UnixTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    UnixTime(secs)
}

/// Signs proofs for one method, URL and access token.
pub struct ProofSigner {
    key: Arc<dyn KeyStore>,
    method: String,
    url: Url,
    access_token: String,
}

impl std::fmt::Debug for ProofSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofSigner")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("access_token", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl ProofSigner {
    /// A signer for `method url` with `access_token` (its hash becomes `ath`).
    pub fn new(key: Arc<dyn KeyStore>, method: &str, url: Url, access_token: String) -> Self {
        Self {
            key,
            method: method.to_owned(),
            url,
            access_token,
        }
    }

    /// One proof with a fresh `jti`, issued at `iat`.
    pub fn sign(&self, iat: UnixTime) -> anyhow::Result<String> {
        create_proof(
            self.key.as_ref(),
            &ProofInput {
                method: &self.method,
                url: &self.url,
                iat,
                nonce: None,
                access_token: Some(&self.access_token),
            },
        )
        .map_err(|e| anyhow!("signing a DPoP proof: {e}"))
    }

    fn sign_header(&self) -> anyhow::Result<HeaderValue> {
        let proof = self.sign(unix_now())?;
        HeaderValue::from_str(&proof).context("a DPoP proof is not a valid header value")
    }
}

/// Proofs signed ahead, handed out once each; signs inline when they run out.
pub struct ProofPool {
    /// In signing order, each with when it was signed.
    proofs: Vec<(HeaderValue, Instant)>,
    next: AtomicUsize,
    inline: AtomicU64,
    /// The oldest a proof was when handed out, µs.
    max_age_us: AtomicU64,
    signer: Arc<ProofSigner>,
    signing_time: Duration,
}

/// Merges per-thread lists round-robin: proof i of thread t lands at `i·threads + t`,
/// so the pool is (nearly) in signing order and the proofs handed out first are the
/// oldest. The oldest proof used is then about max(signing time, run length) old rather
/// than the sum of both.
fn interleave<T>(chunks: Vec<Vec<T>>) -> Vec<T> {
    let total = chunks.iter().map(Vec::len).sum();
    let mut iters: Vec<_> = chunks.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        for it in &mut iters {
            if let Some(x) = it.next() {
                out.push(x);
            }
        }
    }
    out
}

impl ProofPool {
    /// Signs `count` proofs on `threads` threads (blocking: call it off the async workers).
    pub fn presign(signer: Arc<ProofSigner>, count: usize, threads: usize) -> anyhow::Result<Self> {
        let started = Instant::now();
        let threads = threads.clamp(1, count.max(1));
        let chunks: Vec<anyhow::Result<Vec<(HeaderValue, Instant)>>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let signer = &signer;
                        // Thread t signs proofs t, t + threads, t + 2·threads, …
                        let n = count.saturating_sub(t).div_ceil(threads);
                        scope.spawn(move || {
                            (0..n)
                                .map(|_| Ok((signer.sign_header()?, Instant::now())))
                                .collect()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().map_err(|_| anyhow!("a signing thread panicked"))?)
                    .collect()
            });
        let chunks = chunks.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            proofs: interleave(chunks),
            next: AtomicUsize::new(0),
            inline: AtomicU64::new(0),
            max_age_us: AtomicU64::new(0),
            signer,
            signing_time: started.elapsed(),
        })
    }

    /// The next unused proof, or a freshly signed one when the pool is empty.
    pub fn take(&self) -> anyhow::Result<HeaderValue> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        match self.proofs.get(i) {
            Some((p, signed)) => {
                let age = u64::try_from(signed.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.max_age_us.fetch_max(age, Ordering::Relaxed);
                Ok(p.clone())
            }
            None => {
                self.inline.fetch_add(1, Ordering::Relaxed);
                self.signer.sign_header()
            }
        }
    }

    /// How many proofs were signed ahead.
    pub fn presigned(&self) -> usize {
        self.proofs.len()
    }

    /// How many pre-signed proofs were handed out.
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.proofs.len())
    }

    /// How many proofs had to be signed during the load.
    pub fn signed_inline(&self) -> u64 {
        self.inline.load(Ordering::Relaxed)
    }

    /// How long signing ahead took.
    pub fn signing_time(&self) -> Duration {
        self.signing_time
    }

    /// The oldest a pre-signed proof was when it was handed out (the server refuses
    /// proofs more than 60 s past their `iat`).
    pub fn max_age(&self) -> Duration {
        Duration::from_micros(self.max_age_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use keygate_auth::dpop::{self, DpopConfig, InMemoryReplayCache, ProofRequest, PublicBaseUrl};
    use keygate_auth::jws;
    use serde_json::{Map, Value};

    use super::*;

    const TOKEN: &str = "the-access-token";

    fn signer() -> Arc<ProofSigner> {
        let url = Url::parse("http://127.0.0.1:18183/proxy/bench/hello?x=1").unwrap();
        Arc::new(ProofSigner::new(
            Arc::new(MemoryKeyStore::generate()),
            "GET",
            url,
            TOKEN.to_owned(),
        ))
    }

    fn claims(proof: &HeaderValue) -> Map<String, Value> {
        jws::parse_compact(proof.to_str().unwrap())
            .unwrap()
            .claims()
            .unwrap()
    }

    #[test]
    fn every_proof_carries_the_claims_and_a_fresh_jti() {
        let signer = signer();
        let before = unix_now().0;
        let pool = ProofPool::presign(signer.clone(), 50, 3).unwrap();
        let after = unix_now().0;
        assert_eq!(pool.presigned(), 50);
        let mut jtis = HashSet::new();
        for _ in 0..50 {
            let c = claims(&pool.take().unwrap());
            assert_eq!(c["htm"], "GET");
            assert_eq!(c["htu"], "http://127.0.0.1:18183/proxy/bench/hello");
            assert_eq!(c["ath"], dpop::ath_for(TOKEN));
            let iat = c["iat"].as_i64().unwrap();
            assert!((before..=after).contains(&iat));
            assert!(!c.contains_key("nonce"));
            assert!(jtis.insert(c["jti"].as_str().unwrap().to_owned()));
        }
        assert_eq!(pool.used(), 50);
        assert_eq!(pool.signed_inline(), 0);
        // Past the pool: signed on the spot, counted, still fresh.
        let c = claims(&pool.take().unwrap());
        assert!(jtis.insert(c["jti"].as_str().unwrap().to_owned()));
        assert_eq!(pool.signed_inline(), 1);
        assert_eq!(pool.used(), 50);
    }

    #[test]
    fn presign_splits_uneven_counts_over_threads() {
        for (count, threads) in [(0, 2), (1, 4), (7, 2), (10, 3), (9, 9)] {
            let pool = ProofPool::presign(signer(), count, threads).unwrap();
            assert_eq!(pool.presigned(), count, "{count} over {threads}");
        }
    }

    #[test]
    fn interleaving_keeps_signing_order() {
        let merged = interleave(vec![vec![0, 2, 4, 6], vec![1, 3, 5]]);
        assert_eq!(merged, vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(interleave::<u8>(vec![]), Vec::<u8>::new());
        assert_eq!(interleave(vec![vec![1], vec![], vec![2, 3]]), vec![1, 2, 3]);
    }

    #[test]
    fn pool_hands_out_in_signing_order_and_tracks_age() {
        // One thread: strictly in signing order.
        let pool = ProofPool::presign(signer(), 20, 1).unwrap();
        let times: Vec<Instant> = pool.proofs.iter().map(|(_, t)| *t).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(pool.max_age(), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        pool.take().unwrap();
        assert!(pool.max_age() >= Duration::from_millis(20));
    }

    #[tokio::test]
    async fn keygate_verifier_accepts_the_proofs_once_each() {
        let key: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::generate());
        let jkt = key.thumbprint().unwrap();
        let url = Url::parse("http://127.0.0.1:18183/proxy/bench/hello").unwrap();
        let signer = Arc::new(ProofSigner::new(key, "GET", url, TOKEN.to_owned()));
        let pool = ProofPool::presign(signer, 2, 1).unwrap();
        let config = DpopConfig::new(PublicBaseUrl::parse("http://127.0.0.1:18183").unwrap());
        let replay = InMemoryReplayCache::new(16);
        for _ in 0..2 {
            let proof = pool.take().unwrap();
            let headers: [&[u8]; 1] = [proof.as_bytes()];
            let request = ProofRequest {
                method: "GET",
                target: "/proxy/bench/hello",
                dpop_headers: &headers,
                access_token: Some(TOKEN),
                expected_jkt: Some(&jkt),
            };
            dpop::verify_proof(&config, &request, &replay, unix_now())
                .await
                .unwrap();
            // The same proof again is a replay.
            assert!(
                dpop::verify_proof(&config, &request, &replay, unix_now())
                    .await
                    .is_err()
            );
        }
    }
}
