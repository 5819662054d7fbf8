//! Password hashing with Argon2id (S17): at least 19 MiB and two passes, lengths 8 to
//! 1024 bytes (well beyond 128 characters), no composition rules, no truncation — the
//! whole password goes into the hash.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

/// The fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The most bytes a password may have (a bound on hashing work, not a truncation).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Minimum memory in KiB (19 MiB, OWASP's Argon2id floor).
pub const MIN_MEMORY_KIB: u32 = 19 * 1024;
/// Minimum passes.
pub const MIN_PASSES: u32 = 2;

/// Why a password could not be set or checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("password too short")]
    TooShort,
    /// More than [`MAX_PASSWORD_BYTES`] bytes.
    #[error("password too long")]
    TooLong,
    /// Parameters below the minimum, or the hasher failed.
    #[error("password hashing failed")]
    Hashing,
}

/// A stored PHC-format Argon2id hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPasswordHash(String);

impl StoredPasswordHash {
    /// Wraps a PHC string read from the store.
    pub fn from_phc(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The PHC string for the store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The outcome of a password check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordCheck {
    /// Correct. When `needs_rehash`, store a new hash made with current parameters.
    Valid {
        /// The stored hash uses weaker parameters than the current ones.
        needs_rehash: bool,
    },
    /// Wrong password, or an unusable stored hash.
    Invalid,
}

/// Hashes and verifies passwords with fixed Argon2id parameters.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    params: Params,
    dummy: StoredPasswordHash,
}

impl PasswordHasher {
    /// Argon2id with `memory_kib`, `passes` and `lanes`; refuses parameters below
    /// 19 MiB and two passes.
    pub fn new(memory_kib: u32, passes: u32, lanes: u32) -> Result<Self, PasswordError> {
        if memory_kib < MIN_MEMORY_KIB || passes < MIN_PASSES {
            return Err(PasswordError::Hashing);
        }
        let params =
            Params::new(memory_kib, passes, lanes, Some(32)).map_err(|_| PasswordError::Hashing)?;
        let mut hasher = Self {
            params,
            dummy: StoredPasswordHash(String::new()),
        };
        // A real hash of a random password: verifying against it costs what a real
        // check costs, so unknown users cannot be told apart by timing (S18).
        let random = SecretString::from(crate::b64::encode(crate::opaque::random_bytes::<16>()));
        hasher.dummy = hasher.hash_unchecked(&random)?;
        Ok(hasher)
    }

    /// OWASP's recommended minimum: 19 MiB, 2 passes, 1 lane.
    pub fn recommended() -> Result<Self, PasswordError> {
        Self::new(MIN_MEMORY_KIB, MIN_PASSES, 1)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Checks a new password against the length rules only (no composition rules).
    pub fn check_policy(password: &SecretString) -> Result<(), PasswordError> {
        let text = password.expose_secret();
        if text.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        if text.chars().count() < MIN_PASSWORD_CHARS {
            return Err(PasswordError::TooShort);
        }
        Ok(())
    }

    /// Hashes a new password after checking the length rules.
    pub fn hash(&self, password: &SecretString) -> Result<StoredPasswordHash, PasswordError> {
        Self::check_policy(password)?;
        self.hash_unchecked(password)
    }

    fn hash_unchecked(&self, password: &SecretString) -> Result<StoredPasswordHash, PasswordError> {
        let salt = SaltString::encode_b64(&crate::opaque::random_bytes::<16>())
            .map_err(|_| PasswordError::Hashing)?;
        let hash = self
            .argon2()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map_err(|_| PasswordError::Hashing)?;
        Ok(StoredPasswordHash(hash.to_string()))
    }

    /// Verifies `password` against `stored`. Over-long passwords are refused without
    /// hashing them; the check never truncates.
    pub fn verify(&self, password: &SecretString, stored: &StoredPasswordHash) -> PasswordCheck {
        let text = password.expose_secret();
        if text.len() > MAX_PASSWORD_BYTES {
            return PasswordCheck::Invalid;
        }
        let Ok(parsed) = PasswordHash::new(&stored.0) else {
            return PasswordCheck::Invalid;
        };
        if parsed.algorithm.as_str() != "argon2id" {
            return PasswordCheck::Invalid;
        }
        let Ok(stored_params) = Params::try_from(&parsed) else {
            return PasswordCheck::Invalid;
        };
        // Verifying uses the stored parameters; refuse absurd ones (a tampered row must
        // not make login a memory bomb) and weak ones below the floor.
        if stored_params.m_cost() > 4 * 1024 * 1024 || stored_params.t_cost() > 64 {
            return PasswordCheck::Invalid;
        }
        if stored_params.m_cost() < MIN_MEMORY_KIB || stored_params.t_cost() < MIN_PASSES {
            return PasswordCheck::Invalid;
        }
        match self.argon2().verify_password(text.as_bytes(), &parsed) {
            Ok(()) => PasswordCheck::Valid {
                needs_rehash: stored_params.m_cost() < self.params.m_cost()
                    || stored_params.t_cost() < self.params.t_cost()
                    || stored_params.p_cost() != self.params.p_cost(),
            },
            Err(_) => PasswordCheck::Invalid,
        }
    }

    /// Spends the time of a real verification and answers `Invalid`: call it for unknown
    /// or disabled users so the response time does not reveal which (S18).
    pub fn verify_dummy(&self, password: &SecretString) -> PasswordCheck {
        let _ = self.verify(password, &self.dummy);
        PasswordCheck::Invalid
    }
}
