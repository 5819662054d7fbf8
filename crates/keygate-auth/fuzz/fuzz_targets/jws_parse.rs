//! Fuzzes the compact JWS parser and the access-token verifier with arbitrary bytes.
#![no_main]

use std::sync::OnceLock;

use keygate_auth::UnixTime;
use keygate_auth::access::{self, AccessTokenConfig};
use keygate_auth::jws::{self, Algorithm};
use keygate_auth::keys::{RotationPolicy, SigningKey, SigningKeySet};
use libfuzzer_sys::fuzz_target;

const NOW: UnixTime = UnixTime(1_800_000_000);

fn keys() -> &'static SigningKeySet {
    static KEYS: OnceLock<SigningKeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        SigningKeySet::bootstrap(
            RotationPolicy::default(),
            SigningKey::generate(Algorithm::Es256),
            NOW,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let (Ok(parsed), Some(entry)) = (jws::parse_compact(text), keys().active()) {
        let _ = parsed.claims();
        let _ = parsed.verify(entry.key.verification_key());
    }
    let config =
        AccessTokenConfig::new("https://gate.example.com", "https://gate.example.com/proxy");
    let _ = access::verify(&config, keys(), text, NOW);
});
