#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Stable smoke run of the fuzz target bodies, plus a mutation property: a mutated valid
//! object is refused unless it is byte-identical to the original (or, for attestations,
//! differs only inside the receipt, which the attestation does not cover).

use keygate_attest::apple::{verify_assertion, verify_attestation};
use keygate_attest::fuzzing;
use keygate_attest::google::verify_token;
use keygate_attest::testing::{AppAttestFixture, PlayIntegrityFixture};

const CLIENT_DATA: &[u8] = b"challenge=robustness;dpop_jkt=abc";
const ROUNDS: usize = 2_000;
/// Attestations cost two or three P-384/P-256 verifications each (about 4 ms in a debug
/// build), so they get fewer rounds to keep this test within a few seconds.
const ATTESTATION_ROUNDS: usize = 1_000;

/// xorshift64*: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const BOUNDARY: [u8; 12] = [
    0x00, 0x01, 0x17, 0x18, 0x19, 0x1f, 0x40, 0x7f, 0x80, 0x9f, 0xbf, 0xff,
];

/// One to three mutations: bit flips, truncation, splicing a chunk from elsewhere,
/// boundary bytes, random CBOR-ish headers, insertion, deletion.
fn mutate(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut data = original.to_vec();
    for _ in 0..=rng.below(3) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.truncate(rng.below(len + 1)),
            2 if len > 0 => {
                let from = rng.below(len);
                let to = rng.below(len);
                let n = rng.below(64).min(len - from).min(len - to);
                let chunk = data[from..from + n].to_vec();
                data[to..to + n].copy_from_slice(&chunk);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                data[i] = BOUNDARY[rng.below(BOUNDARY.len())];
            }
            4 => {
                // A random CBOR major type with a short or long length header.
                let i = rng.below(len + 1);
                let header =
                    [(rng.below(8) as u8) << 5 | BOUNDARY[rng.below(BOUNDARY.len())] & 0x1f];
                data.splice(i..i, header);
            }
            5 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            6 if len > 0 => {
                let i = rng.below(len);
                let n = (1 + rng.below(8)).min(len - i);
                data.drain(i..i + n);
            }
            _ => {}
        }
    }
    data
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn mutated_attestations_are_refused() {
    let fx = AppAttestFixture::new("ABCDE12345", "com.example.robust");
    let cfg = fx.config();
    let original = fx.attestation(CLIENT_DATA);
    let accepted =
        verify_attestation(&cfg, &original, &fx.key_id(), CLIENT_DATA, fx.now()).unwrap();
    let receipt_at = find(&original, &fx.receipt).unwrap();
    let receipt_range = receipt_at..receipt_at + fx.receipt.len();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut refused = 0;
    for round in 0..ATTESTATION_ROUNDS {
        let mutated = mutate(&mut rng, &original);
        fuzzing::app_attest(&mutated);
        match verify_attestation(&cfg, &mutated, &fx.key_id(), CLIENT_DATA, fx.now()) {
            Err(_) => refused += 1,
            Ok(key) => {
                // Only changes inside the receipt bytes may pass: same length, and every
                // differing byte within the receipt.
                assert_eq!(
                    mutated.len(),
                    original.len(),
                    "round {round}: accepted a resized object"
                );
                for (i, (a, b)) in original.iter().zip(&mutated).enumerate() {
                    assert!(
                        a == b || receipt_range.contains(&i),
                        "round {round}: accepted a change at {i}"
                    );
                }
                assert_eq!(key.public_key_sec1, accepted.public_key_sec1);
                assert_eq!(key.key_id, accepted.key_id);
            }
        }
    }
    // The mutator is not degenerate: nearly everything it makes is refused.
    assert!(
        refused > ATTESTATION_ROUNDS * 9 / 10,
        "only {refused} refused"
    );
}

#[test]
fn mutated_assertions_are_refused() {
    let fx = AppAttestFixture::new("ABCDE12345", "com.example.robust");
    let cfg = fx.config();
    let key = fx.public_key_sec1();
    let original = fx.assertion(CLIENT_DATA, 9);
    assert_eq!(
        verify_assertion(&cfg, &key, 8, &original, CLIENT_DATA),
        Ok(9)
    );
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for round in 0..ROUNDS {
        let mutated = mutate(&mut rng, &original);
        fuzzing::app_attest(&mutated);
        if mutated != original {
            assert!(
                verify_assertion(&cfg, &key, 8, &mutated, CLIENT_DATA).is_err(),
                "round {round}: accepted a mutated assertion"
            );
        }
    }
}

#[test]
fn mutated_tokens_are_refused() {
    let fx = PlayIntegrityFixture::new("com.example.robust");
    let cfg = fx.config();
    let now = 1_780_000_000;
    let original = fx.token(CLIENT_DATA, now);
    assert!(verify_token(&cfg, &original, CLIENT_DATA, now).is_ok());
    let mut rng = Rng(0x94D0_49BB_1331_11EB);
    for round in 0..ROUNDS {
        let mutated = mutate(&mut rng, original.as_bytes());
        let mutated = String::from_utf8_lossy(&mutated).into_owned();
        fuzzing::play_integrity(&mutated);
        if mutated != original {
            assert!(
                verify_token(&cfg, &mutated, CLIENT_DATA, now).is_err(),
                "round {round}: accepted a mutated token"
            );
        }
    }
}

#[test]
fn arbitrary_bytes_do_not_panic_the_fuzz_bodies() {
    let mut rng = Rng(0xBF58_476D_1CE4_E5B9);
    for _ in 0..ROUNDS {
        let len = rng.below(300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(!fuzzing::app_attest(&bytes));
        assert!(!fuzzing::play_integrity(&String::from_utf8_lossy(&bytes)));
    }
    // Structured but hostile: deep nesting and huge declared lengths.
    for bytes in [
        vec![0x81; 10_000],
        vec![0xa1; 10_000],
        vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ] {
        assert!(!fuzzing::app_attest(&bytes));
    }
    assert!(!fuzzing::play_integrity(&".".repeat(10_000)));
}
