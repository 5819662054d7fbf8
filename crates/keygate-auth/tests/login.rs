//! PKCE, passwords, TOTP/HOTP, opaque tokens and redirect URIs: RFC vectors and S09,
//! S10, S17.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use keygate_auth::UnixTime;
use keygate_auth::opaque::{OpaqueToken, TokenHash, TokenKind};
use keygate_auth::password::{PasswordCheck, PasswordError, PasswordHasher, StoredPasswordHash};
use keygate_auth::pkce::{self, CodeChallenge, PkceError};
use keygate_auth::redirect::{RedirectError, RedirectUri, find_match};
use keygate_auth::totp::{Totp, TotpSeed, hotp};
use secrecy::{ExposeSecret, SecretString};

// ---------------------------------------------------------------- PKCE (S10)

#[test]
fn rfc7636_appendix_b_s256_vector() {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = CodeChallenge::for_verifier(verifier);
    assert_eq!(
        challenge.as_str(),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    let parsed = CodeChallenge::parse(Some(challenge.as_str()), Some("S256")).unwrap();
    assert!(parsed.verify(verifier));
    assert!(!parsed.verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"));
}

#[test]
fn s10_pkce_is_s256_only() {
    let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    assert_eq!(
        CodeChallenge::parse(Some(c), Some("plain")),
        Err(PkceError::UnsupportedMethod)
    );
    assert_eq!(
        CodeChallenge::parse(Some(c), None),
        Err(PkceError::UnsupportedMethod)
    );
    assert_eq!(
        CodeChallenge::parse(Some(c), Some("s256")),
        Err(PkceError::UnsupportedMethod)
    );
    assert_eq!(
        CodeChallenge::parse(None, Some("S256")),
        Err(PkceError::MissingChallenge)
    );
    assert_eq!(
        CodeChallenge::parse(Some("short"), Some("S256")),
        Err(PkceError::MalformedChallenge)
    );
    // A "plain" client sending the verifier as the challenge gets nowhere either.
    let verifier = "a".repeat(43);
    let challenge = CodeChallenge::parse(Some(&verifier), Some("S256"));
    assert!(challenge.is_err() || !challenge.unwrap().verify(&verifier));
    // Verifiers outside 43–128 unreserved characters are refused.
    for bad in [
        "a".repeat(42),
        "a".repeat(129),
        format!("{}!", "a".repeat(43)),
    ] {
        assert!(!CodeChallenge::for_verifier(&bad).verify(&bad));
    }
    let v = pkce::generate_verifier();
    assert!(pkce::challenge_for(&v).verify(v.expose_secret()));
}

// ---------------------------------------------------------------- Argon2id (S17)

#[test]
fn rfc9106_argon2id_vector() {
    use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};
    let params = ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .output_len(32)
        .data(AssociatedData::new(&[4u8; 12]).unwrap())
        .build()
        .unwrap();
    let secret = [3u8; 8];
    let argon =
        Argon2::new_with_secret(&secret, Algorithm::Argon2id, Version::V0x13, params).unwrap();
    let mut out = [0u8; 32];
    argon
        .hash_password_into(&[1u8; 32], &[2u8; 16], &mut out)
        .unwrap();
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
    );
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

#[test]
fn s17_argon2id_with_at_least_19_mib_and_two_passes() {
    assert!(PasswordHasher::new(19 * 1024 - 1, 2, 1).is_err());
    assert!(PasswordHasher::new(19 * 1024, 1, 1).is_err());
    let hasher = PasswordHasher::recommended().unwrap();
    let stored = hasher.hash(&secret("correct horse battery")).unwrap();
    assert!(
        stored
            .as_str()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        stored.as_str()
    );
    assert_eq!(
        hasher.verify(&secret("correct horse battery"), &stored),
        PasswordCheck::Valid {
            needs_rehash: false
        }
    );
    assert_eq!(
        hasher.verify(&secret("correct horse battery!"), &stored),
        PasswordCheck::Invalid
    );
    // Each hash has its own salt.
    assert_ne!(
        hasher.hash(&secret("correct horse battery")).unwrap(),
        stored
    );
    // A stored hash with weaker parameters than the floor (or another algorithm) is refused.
    let weak = StoredPasswordHash::from_phc(
        "$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHQ$ZmFrZWZha2VmYWtlZmFrZWZha2VmYWtlZmFrZWZha2U",
    );
    assert_eq!(hasher.verify(&secret("x"), &weak), PasswordCheck::Invalid);
    assert_eq!(
        hasher.verify(&secret("x"), &StoredPasswordHash::from_phc("garbage")),
        PasswordCheck::Invalid
    );
    assert_eq!(
        hasher.verify_dummy(&secret("anything")),
        PasswordCheck::Invalid
    );
}

#[test]
fn s17_length_rules_without_composition_rules() {
    assert_eq!(
        PasswordHasher::check_policy(&secret("1234567")),
        Err(PasswordError::TooShort)
    );
    // Eight characters, even multi-byte ones, and no composition rules.
    PasswordHasher::check_policy(&secret("aaaaaaaa")).unwrap();
    PasswordHasher::check_policy(&secret("ääääääää")).unwrap();
    assert_eq!(
        PasswordHasher::check_policy(&secret("äääääää")),
        Err(PasswordError::TooShort)
    );
    // Well past 128 characters is accepted.
    PasswordHasher::check_policy(&secret(&"x".repeat(512))).unwrap();
    assert_eq!(
        PasswordHasher::check_policy(&secret(&"x".repeat(1025))),
        Err(PasswordError::TooLong)
    );
}

#[test]
fn s17_no_truncation() {
    let hasher = PasswordHasher::recommended().unwrap();
    let prefix = "p".repeat(200);
    let long = format!("{prefix}A");
    let stored = hasher.hash(&secret(&long)).unwrap();
    assert!(matches!(
        hasher.verify(&secret(&long), &stored),
        PasswordCheck::Valid { .. }
    ));
    // Same first 200 bytes (past 72, bcrypt's limit, and 128), different tail.
    assert_eq!(
        hasher.verify(&secret(&format!("{prefix}B")), &stored),
        PasswordCheck::Invalid
    );
    assert_eq!(
        hasher.verify(&secret(&prefix), &stored),
        PasswordCheck::Invalid
    );
}

// ---------------------------------------------------------------- HOTP / TOTP (S17)

const SEED: &[u8] = b"12345678901234567890";

#[test]
fn rfc4226_appendix_d_hotp_vectors() {
    let expected = [755224, 287082, 359152, 969429, 338314];
    for (counter, code) in expected.iter().enumerate() {
        assert_eq!(hotp(SEED, counter as u64, 6), *code);
    }
}

#[test]
fn rfc6238_appendix_b_sha1_vectors() {
    let totp = Totp {
        step_secs: 30,
        digits: 8,
        window: 1,
    };
    let seed = TotpSeed::from_bytes(SEED.to_vec());
    for (t, code) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_234_567_890, "89005924"),
        (20_000_000_000, "65353130"),
    ] {
        let step = totp.step_at(UnixTime(t));
        assert_eq!(totp.code_at_step(&seed, step), code, "T={t}");
        assert_eq!(totp.verify(&seed, code, UnixTime(t), None), Some(step));
    }
}

#[test]
fn s17_totp_window_is_one_step_and_each_code_is_used_once() {
    let totp = Totp::default();
    let seed = TotpSeed::generate();
    let now = UnixTime(1_800_000_015);
    let step = totp.step_at(now);
    for (offset, ok) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
        let s = (step as i64 + offset) as u64;
        let code = totp.code_at_step(&seed, s);
        assert_eq!(
            totp.verify(&seed, &code, now, None).is_some(),
            ok,
            "offset {offset}"
        );
    }
    let code = totp.code_at_step(&seed, step);
    let used = totp.verify(&seed, &code, now, None).unwrap();
    assert_eq!(used, step);
    // The same code again, or an older one, is refused once the step is stored.
    assert_eq!(totp.verify(&seed, &code, now, Some(used)), None);
    let older = totp.code_at_step(&seed, step - 1);
    assert_eq!(totp.verify(&seed, &older, now, Some(used)), None);
    let newer = totp.code_at_step(&seed, step + 1);
    assert_eq!(totp.verify(&seed, &newer, now, Some(used)), Some(step + 1));
    // Malformed codes.
    for bad in ["", "12345", "1234567", "12345a", " 123456"] {
        assert_eq!(totp.verify(&seed, bad, now, None), None);
    }
}

#[test]
fn totp_seed_is_redacted_and_enrolment_uri_is_well_formed() {
    let seed = TotpSeed::from_bytes(SEED.to_vec());
    assert_eq!(format!("{seed:?}"), "TotpSeed([REDACTED])");
    assert_eq!(
        seed.to_base32().expose_secret(),
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    );
    let uri = Totp::default().otpauth_uri(&seed, "keygate", "ada@example.com");
    assert_eq!(
        uri.expose_secret(),
        "otpauth://totp/keygate:ada%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=keygate&algorithm=SHA1&digits=6&period=30"
    );
    assert_eq!(TotpSeed::generate().expose_bytes().len(), 20);
}

// ---------------------------------------------------------------- opaque tokens (S09)

#[test]
fn s09_opaque_tokens_are_random_256_bit_and_stored_as_hashes() {
    let a = OpaqueToken::generate(TokenKind::Refresh);
    let b = OpaqueToken::generate(TokenKind::Refresh);
    let va = a.value().expose_secret();
    assert!(va.starts_with("kgr_"));
    let body = keygate_auth::b64::decode(&va[4..]).unwrap();
    assert_eq!(body.len(), 32, "256 bits");
    assert_ne!(va, b.value().expose_secret());
    assert_ne!(a.hash(), b.hash());
    // The stored hash is what a lookup computes, and it does not contain the token.
    assert_eq!(*a.hash(), TokenHash::of(va));
    assert!(a.hash().ct_eq(&TokenHash::of_secret(a.value())));
    assert!(!a.hash().to_hex().contains(&va[4..]));
    assert!(!format!("{a:?}").contains(&va[4..]));
    assert_eq!(a.hash().to_hex().len(), 64);
    assert_eq!(
        OpaqueToken::generate(TokenKind::AuthorizationCode)
            .value()
            .expose_secret()[..4],
        *"kgc_"
    );
}

// ---------------------------------------------------------------- redirect URIs

#[test]
fn redirect_uris_match_exactly() {
    let https = RedirectUri::register("https://app.example.com/cb").unwrap();
    assert!(https.matches("https://app.example.com/cb"));
    for other in [
        "https://app.example.com/cb/",
        "https://app.example.com/cb?x=1",
        "https://APP.example.com/cb",
        "https://app.example.com:443/cb",
        "https://app.example.com/cb#f",
        "https://app.example.com.evil.com/cb",
        "https://app.example.com/CB",
    ] {
        assert!(!https.matches(other), "{other}");
    }
    let custom = RedirectUri::register("com.example.app:/oauth2redirect").unwrap();
    assert!(custom.matches("com.example.app:/oauth2redirect"));
    assert!(!custom.matches("com.example.app:/oauth2redirect/x"));
    assert!(!custom.matches("com.example.evil:/oauth2redirect"));
}

#[test]
fn rfc8252_loopback_redirects_match_any_port() {
    let v4 = RedirectUri::register("http://127.0.0.1/callback").unwrap();
    assert!(v4.matches("http://127.0.0.1/callback"));
    assert!(v4.matches("http://127.0.0.1:51004/callback"));
    for other in [
        "http://127.0.0.1:51004/callback/x",
        "http://127.0.0.1:0/callback",
        "http://127.0.0.1:99999/callback",
        "http://127.0.0.1:51004/callback#x",
        "http://localhost:51004/callback",
        "https://127.0.0.1:51004/callback",
        "http://127.0.0.1.evil.com/callback",
        "http://127.0.0.1:80@evil.com/callback",
    ] {
        assert!(!v4.matches(other), "{other}");
    }
    let v6 = RedirectUri::register("http://[::1]:8080/cb").unwrap();
    assert!(v6.matches("http://[::1]:3000/cb"));
    assert!(v6.matches("http://[::1]/cb"));
    assert!(!v6.matches("http://127.0.0.1:3000/cb"));
    let list = [https_cb(), v4.clone()];
    assert_eq!(find_match(&list, "http://127.0.0.1:9/callback"), Some(&v4));
    assert_eq!(find_match(&list, "http://127.0.0.1:9/other"), None);
}

fn https_cb() -> RedirectUri {
    RedirectUri::register("https://app.example.com/cb").unwrap()
}

#[test]
fn redirect_registration_rules() {
    assert_eq!(
        RedirectUri::register("http://app.example.com/cb"),
        Err(RedirectError::InsecureHttp)
    );
    assert_eq!(
        RedirectUri::register("http://localhost/cb"),
        Err(RedirectError::InsecureHttp)
    );
    assert_eq!(
        RedirectUri::register("https://app.example.com/cb#frag"),
        Err(RedirectError::Malformed)
    );
    assert_eq!(
        RedirectUri::register("https://user:pw@app.example.com/cb"),
        Err(RedirectError::Malformed)
    );
    assert_eq!(
        RedirectUri::register("/relative"),
        Err(RedirectError::Malformed)
    );
    assert_eq!(
        RedirectUri::register("myapp:/cb"),
        Err(RedirectError::BadScheme)
    );
    assert_eq!(
        RedirectUri::register("javascript:alert(1)"),
        Err(RedirectError::BadScheme)
    );
    assert_eq!(
        RedirectUri::register("data:text/html,x"),
        Err(RedirectError::BadScheme)
    );
    assert_eq!(
        RedirectUri::register("https://app.example.com/c b"),
        Err(RedirectError::Malformed)
    );
}

// ---------------------------------------------------------------- throttling (S18)

#[test]
fn s18_throttling_slows_guessing_without_lockout() {
    use keygate_auth::throttle::{FailureRecord, ThrottlePolicy};
    let policy = ThrottlePolicy::default();
    let t0 = UnixTime(1_800_000_000);
    let mut record = FailureRecord::default();
    let mut now = t0;
    for _ in 0..5 {
        assert_eq!(policy.retry_after(&record, now), None, "free attempts");
        record = policy.after_failure(&record, now);
    }
    // Sixth failure onwards: 1 s, 2 s, 4 s, … doubling.
    assert_eq!(policy.retry_after(&record, now), None);
    record = policy.after_failure(&record, now);
    assert_eq!(policy.retry_after(&record, now), Some(1));
    record = policy.after_failure(&record, now);
    assert_eq!(policy.retry_after(&record, now), Some(2));
    // Never more than the cap: no lock-out, however many failures.
    for _ in 0..100 {
        record = policy.after_failure(&record, now);
    }
    assert_eq!(policy.retry_after(&record, now), Some(15 * 60));
    now = now.plus(15 * 60);
    assert_eq!(policy.retry_after(&record, now), None);
    // A quiet day resets; a success resets.
    assert_eq!(
        policy.after_failure(&record, t0.plus(2 * 86_400)).failures,
        1
    );
    assert_eq!(policy.after_success(), FailureRecord::default());
}

#[test]
fn server_metadata_advertises_s256_only_and_dpop_algs() {
    let base = keygate_auth::dpop::PublicBaseUrl::parse("https://gate.example.com").unwrap();
    let doc =
        keygate_auth::metadata::authorization_server_metadata(&base, "https://gate.example.com");
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        doc["token_endpoint"],
        "https://gate.example.com/oauth2/token"
    );
    assert_eq!(
        doc["dpop_signing_alg_values_supported"],
        serde_json::json!(["EdDSA", "Ed25519", "ES256"])
    );
    assert!(
        !doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "password")
    );
}
