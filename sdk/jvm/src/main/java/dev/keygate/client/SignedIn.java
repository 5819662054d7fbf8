package dev.keygate.client;

import java.time.Instant;

/** The outcome of a sign-in, exchange or refresh, without the tokens themselves. */
public final class SignedIn {
    private final String scope;
    private final Instant expiresAt;

    SignedIn(String scope, Instant expiresAt) {
        this.scope = scope;
        this.expiresAt = expiresAt;
    }

    /** The granted scopes, or {@code null} if the server did not say. */
    public String scope() {
        return scope;
    }

    /** When the access token expires (device clock). */
    public Instant expiresAt() {
        return expiresAt;
    }

    @Override
    public String toString() {
        return "SignedIn{scope=" + scope + ", expiresAt=" + expiresAt + "}";
    }
}
