//! The tokens a signed-in client holds, and where it keeps them.

use std::fmt;
use std::sync::Mutex;

use keygate_auth::UnixTime;
use secrecy::SecretString;

/// An access token, its rotating refresh token and when the access token expires.
///
/// Tokens are `secrecy` types; `Debug` shows neither.
#[derive(Clone)]
pub struct TokenSet {
    /// The DPoP-bound access token.
    pub access_token: SecretString,
    /// The DPoP-bound refresh token; replaced on every refresh (rotation).
    pub refresh_token: Option<SecretString>,
    /// When the access token expires (issue time + `expires_in`).
    pub expires_at: UnixTime,
    /// The scopes granted, space-separated, as the server reported them.
    pub scope: Option<String>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

impl TokenSet {
    /// Whether the access token should be refreshed now: it expires within `margin_secs`
    /// (or has expired).
    pub fn needs_refresh(&self, now: UnixTime, margin_secs: i64) -> bool {
        now.plus(margin_secs.max(0)) >= self.expires_at
    }

    /// Whether the access token has expired.
    pub fn is_expired(&self, now: UnixTime) -> bool {
        now >= self.expires_at
    }
}

/// Where a client keeps its tokens (memory, the platform keychain, an encrypted file…).
///
/// Contract: [`store`](Self::store) replaces the whole set in one step, so a reader never
/// sees a new access token with an old refresh token or the other way round; after a
/// refresh the previous refresh token must be gone (it is spent: presenting it again
/// revokes the whole session at keygate).
pub trait TokenCache: Send + Sync {
    /// The current tokens, if signed in.
    fn load(&self) -> Option<TokenSet>;
    /// Replaces the tokens atomically.
    fn store(&self, tokens: TokenSet);
    /// Forgets the tokens (sign-out, or the session was revoked).
    fn clear(&self);
}

/// A [`TokenCache`] in process memory.
#[derive(Default)]
pub struct MemoryTokenCache {
    tokens: Mutex<Option<TokenSet>>,
}

impl MemoryTokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tokens = self.tokens.lock().ok().and_then(|t| t.clone());
        f.debug_struct("MemoryTokenCache")
            .field("tokens", &tokens)
            .finish()
    }
}

impl TokenCache for MemoryTokenCache {
    fn load(&self) -> Option<TokenSet> {
        match self.tokens.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, tokens: TokenSet) {
        match self.tokens.lock() {
            Ok(mut guard) => *guard = Some(tokens),
            Err(poisoned) => *poisoned.into_inner() = Some(tokens),
        }
    }

    fn clear(&self) {
        match self.tokens.lock() {
            Ok(mut guard) => *guard = None,
            Err(poisoned) => *poisoned.into_inner() = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn set(expires_at: i64) -> TokenSet {
        TokenSet {
            access_token: SecretString::from("at-secret-value"),
            refresh_token: Some(SecretString::from("kgr_refresh-secret-value")),
            expires_at: UnixTime(expires_at),
            scope: Some("ai".into()),
        }
    }

    #[test]
    fn refresh_margin_boundaries() {
        let t = set(1_000);
        assert!(!t.needs_refresh(UnixTime(969), 30));
        assert!(t.needs_refresh(UnixTime(970), 30));
        assert!(t.needs_refresh(UnixTime(1_000), 30));
        assert!(!t.needs_refresh(UnixTime(999), 0));
        assert!(t.needs_refresh(UnixTime(1_000), 0));
        // A negative margin is treated as zero.
        assert!(!t.needs_refresh(UnixTime(999), -100));
        assert!(!t.is_expired(UnixTime(999)));
        assert!(t.is_expired(UnixTime(1_000)));
    }

    #[test]
    fn memory_cache_replaces_whole_set() {
        let cache = MemoryTokenCache::new();
        assert!(cache.load().is_none());
        cache.store(set(1));
        let mut next = set(2);
        next.refresh_token = Some(SecretString::from("kgr_next"));
        cache.store(next);
        let loaded = cache.load().unwrap();
        assert_eq!(loaded.expires_at, UnixTime(2));
        assert_eq!(loaded.refresh_token.unwrap().expose_secret(), "kgr_next");
        cache.clear();
        assert!(cache.load().is_none());
    }

    #[test]
    fn debug_hides_tokens() {
        let cache = MemoryTokenCache::new();
        cache.store(set(5));
        for debug in [format!("{:?}", set(5)), format!("{cache:?}")] {
            assert!(!debug.contains("at-secret-value"), "{debug}");
            assert!(!debug.contains("refresh-secret-value"), "{debug}");
            assert!(debug.contains("REDACTED"));
        }
    }
}
