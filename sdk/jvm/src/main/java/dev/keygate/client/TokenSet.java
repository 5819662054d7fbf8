package dev.keygate.client;

import java.time.Duration;
import java.time.Instant;
import java.util.Objects;

/**
 * The DPoP-bound access token, its rotating refresh token, and when the access token was
 * issued and expires (device clock). {@link #toString()} never shows a token.
 */
public final class TokenSet {
    private final String accessToken;
    private final String refreshToken;
    private final Instant issuedAt;
    private final Instant expiresAt;
    private final String scope;

    /** A token set; {@code refreshToken} and {@code scope} may be {@code null}. */
    public TokenSet(String accessToken, String refreshToken, Instant issuedAt, Instant expiresAt, String scope) {
        this.accessToken = Objects.requireNonNull(accessToken, "accessToken");
        this.refreshToken = refreshToken;
        this.issuedAt = Objects.requireNonNull(issuedAt, "issuedAt");
        this.expiresAt = Objects.requireNonNull(expiresAt, "expiresAt");
        this.scope = scope;
    }

    /** The access token (secret). */
    public String accessToken() {
        return accessToken;
    }

    /** The refresh token (secret), or {@code null}. Replaced on every refresh. */
    public String refreshToken() {
        return refreshToken;
    }

    /** When the token was requested (device clock). */
    public Instant issuedAt() {
        return issuedAt;
    }

    /** When the access token expires (device clock). */
    public Instant expiresAt() {
        return expiresAt;
    }

    /** The granted scopes, space-separated, or {@code null}. */
    public String scope() {
        return scope;
    }

    /**
     * Whether to refresh now: the token expires within {@code margin}, capped at half its
     * lifetime so that short-lived tokens are not refreshed on every call.
     */
    public boolean needsRefresh(Instant now, Duration margin) {
        Duration lifetime = Duration.between(issuedAt, expiresAt);
        Duration effective = margin.compareTo(lifetime.dividedBy(2)) > 0 ? lifetime.dividedBy(2) : margin;
        return !now.isBefore(expiresAt.minus(effective));
    }

    /** Whether the access token has expired. */
    public boolean isExpired(Instant now) {
        return !now.isBefore(expiresAt);
    }

    @Override
    public String toString() {
        return "TokenSet{accessToken=[REDACTED], refreshToken=" + (refreshToken == null ? "null" : "[REDACTED]")
                + ", expiresAt=" + expiresAt + ", scope=" + scope + "}";
    }
}
