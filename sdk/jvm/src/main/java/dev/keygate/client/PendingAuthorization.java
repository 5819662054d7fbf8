package dev.keygate.client;

/**
 * What the app keeps between opening the authorization URL and receiving the redirect: the
 * {@code state} and the PKCE {@code code_verifier}, both secret. Keep it in memory (or in
 * the activity's saved state); {@link #toString()} shows neither.
 */
public final class PendingAuthorization {
    private final String state;
    private final String codeVerifier;
    private final String redirectUri;
    private final String scope;

    PendingAuthorization(String state, String codeVerifier, String redirectUri, String scope) {
        this.state = state;
        this.codeVerifier = codeVerifier;
        this.redirectUri = redirectUri;
        this.scope = scope;
    }

    /**
     * Restores a pending authorization the app persisted across process death with
     * {@link #state()} and {@link #codeVerifier()}.
     */
    public static PendingAuthorization restore(String state, String codeVerifier, String redirectUri, String scope) {
        return new PendingAuthorization(state, codeVerifier, redirectUri, scope);
    }

    /** The {@code state} sent (secret). */
    public String state() {
        return state;
    }

    /** The PKCE verifier (secret). */
    public String codeVerifier() {
        return codeVerifier;
    }

    /** The redirect URI the code will be sent to. */
    public String redirectUri() {
        return redirectUri;
    }

    /** The requested scopes, space-separated. */
    public String scope() {
        return scope;
    }

    @Override
    public String toString() {
        return "PendingAuthorization{state=[REDACTED], codeVerifier=[REDACTED], redirectUri=" + redirectUri
                + ", scope=" + scope + "}";
    }
}
