package dev.keygate.client;

/**
 * The session is over (refresh token refused: revoked by an administrator, expired, or
 * reused). The tokens were cleared; the app must sign in again.
 */
public final class SessionEndedException extends KeygateException {
    private static final long serialVersionUID = 1L;
    private final String reason;

    /** A session end with its sanitised reason (the server's description or error code). */
    public SessionEndedException(String reason) {
        super("session ended; sign in again: " + reason);
        this.reason = reason;
    }

    /** The server's reason, e.g. "The refresh token is invalid". */
    public String reason() {
        return reason;
    }
}
