//! HOTP (RFC 4226) and TOTP (RFC 6238) with HMAC-SHA-1, 30-second steps and ±1 step of
//! tolerance (S17).
//!
//! Each code is accepted once: [`Totp::verify`] returns the matched time step, the caller
//! stores it as the user's "last used step" (in the same transaction as the login), and
//! passes it back next time; codes for that step or earlier are refused.

use std::fmt;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use subtle::ConstantTimeEq;

use crate::clock::UnixTime;

/// A TOTP seed. Stored encrypted by the vault; `Debug` is redacted.
pub struct TotpSeed(SecretSlice<u8>);

impl fmt::Debug for TotpSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSeed([REDACTED])")
    }
}

impl TotpSeed {
    /// A fresh 160-bit seed from the OS CSPRNG (RFC 4226 §4 recommends 160 bits).
    pub fn generate() -> Self {
        Self(SecretSlice::from(
            crate::opaque::random_bytes::<20>().to_vec(),
        ))
    }

    /// A seed from stored bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(SecretSlice::from(bytes))
    }

    /// The seed bytes, for encrypted storage.
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The seed in unpadded RFC 4648 base32, as authenticator apps take it.
    pub fn to_base32(&self) -> SecretString {
        SecretString::from(base32(self.0.expose_secret()))
    }
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let idx = ((buffer >> bits) & 31) as usize;
            out.extend(ALPHABET.get(idx).map(|c| char::from(*c)));
        }
    }
    if bits > 0 {
        let idx = ((buffer << (5 - bits)) & 31) as usize;
        out.extend(ALPHABET.get(idx).map(|c| char::from(*c)));
    }
    out
}

/// RFC 4226 HOTP value of `counter` with `digits` digits (6–9).
pub fn hotp(seed: &[u8], counter: u64, digits: u32) -> u32 {
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(seed) else {
        return u32::MAX;
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest.last().copied().unwrap_or(0) & 0x0f);
    let mut word = [0u8; 4];
    for (i, w) in word.iter_mut().enumerate() {
        *w = digest.get(offset + i).copied().unwrap_or(0);
    }
    let binary = u32::from_be_bytes(word) & 0x7fff_ffff;
    binary % 10u32.pow(digits.clamp(6, 9))
}

/// TOTP settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totp {
    /// Step length in seconds (30).
    pub step_secs: u64,
    /// Code length (6).
    pub digits: u32,
    /// Steps accepted either side of now (1).
    pub window: u64,
}

impl Default for Totp {
    fn default() -> Self {
        Self {
            step_secs: 30,
            digits: 6,
            window: 1,
        }
    }
}

impl Totp {
    /// The time step at `now`.
    pub fn step_at(&self, now: UnixTime) -> u64 {
        u64::try_from(now.0).unwrap_or(0) / self.step_secs.max(1)
    }

    /// The code for `step`, zero-padded.
    pub fn code_at_step(&self, seed: &TotpSeed, step: u64) -> String {
        let digits = self.digits.clamp(6, 9);
        format!(
            "{:0width$}",
            hotp(seed.expose_bytes(), step, digits),
            width = digits as usize
        )
    }

    /// Checks `code` at `now` within ±`window` steps, refusing steps at or before
    /// `last_used_step`. Returns the matched step, which the caller must store.
    pub fn verify(
        &self,
        seed: &TotpSeed,
        code: &str,
        now: UnixTime,
        last_used_step: Option<u64>,
    ) -> Option<u64> {
        let digits = self.digits.clamp(6, 9) as usize;
        if code.len() != digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = self.step_at(now);
        let first = current.saturating_sub(self.window);
        let last = current.saturating_add(self.window);
        let mut matched = None;
        // Check every candidate so timing does not reveal which step matched.
        for step in first..=last {
            let expected = self.code_at_step(seed, step);
            let fresh = last_used_step.is_none_or(|used| step > used);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && fresh && matched.is_none()
            {
                matched = Some(step);
            }
        }
        matched
    }

    /// The `otpauth://` enrolment URI (shown once, as a QR code or text).
    pub fn otpauth_uri(&self, seed: &TotpSeed, issuer: &str, account: &str) -> SecretString {
        let issuer_enc = percent_encode(issuer);
        SecretString::from(format!(
            "otpauth://totp/{issuer_enc}:{}?secret={}&issuer={issuer_enc}&algorithm=SHA1&digits={}&period={}",
            percent_encode(account),
            seed.to_base32().expose_secret(),
            self.digits.clamp(6, 9),
            self.step_secs
        ))
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_rfc4648_vectors() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"fo"), "MZXQ");
        assert_eq!(base32(b"foo"), "MZXW6");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }
}
