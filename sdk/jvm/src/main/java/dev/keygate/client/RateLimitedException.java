package dev.keygate.client;

import java.time.Duration;

/** keygate (or the upstream through it) answered 429 Too Many Requests. */
public final class RateLimitedException extends KeygateException {
    private static final long serialVersionUID = 1L;
    private final long retryAfterSeconds;

    /** A 429 with its {@code Retry-After} in seconds, or -1 if the header was absent. */
    public RateLimitedException(long retryAfterSeconds) {
        super("rate limited" + (retryAfterSeconds >= 0 ? "; retry after " + retryAfterSeconds + " s" : ""));
        this.retryAfterSeconds = retryAfterSeconds;
    }

    /** Seconds to wait before trying again, or -1 if the server did not say. */
    public long retryAfterSeconds() {
        return retryAfterSeconds;
    }

    /** {@link #retryAfterSeconds()} as a duration, zero when unknown. */
    public Duration retryAfter() {
        return Duration.ofSeconds(Math.max(0, retryAfterSeconds));
    }
}
