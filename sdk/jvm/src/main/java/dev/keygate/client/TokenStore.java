package dev.keygate.client;

/**
 * Where the client keeps its tokens. On Android, persist them encrypted: e.g.
 * EncryptedSharedPreferences, or an AES-GCM key in the Android Keystore wrapping the
 * serialized set in ordinary SharedPreferences (see the README).
 *
 * <p>Contract: {@link #save} replaces the whole set atomically (a reader never sees a new
 * access token with an old refresh token); after a refresh the previous refresh token must
 * be gone, since presenting it again revokes the whole session at keygate. Implementations
 * must be thread-safe.
 */
public interface TokenStore {
    /** The current tokens, or {@code null} when signed out. */
    TokenSet load();

    /** Replaces the tokens atomically. */
    void save(TokenSet tokens);

    /** Forgets the tokens. */
    void clear();
}
