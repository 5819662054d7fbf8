package dev.keygate.client;

/** The redirect that came back from the browser is not acceptable. */
public class AuthorizationCallbackException extends KeygateException {
    private static final long serialVersionUID = 1L;

    /** Why a callback was refused. */
    public enum Reason {
        /** The callback's {@code state} is missing or differs from the one sent (possible CSRF). */
        STATE_MISMATCH,
        /** The callback is not addressed to the registered redirect URI. */
        REDIRECT_MISMATCH,
        /** The callback's {@code iss} (RFC 9207) is not this keygate. */
        ISSUER_MISMATCH,
        /** A parameter is repeated, or the URI does not parse. */
        MALFORMED,
        /** The callback carries no authorization code. */
        MISSING_CODE
    }

    private final Reason reason;

    /** A refused callback. */
    public AuthorizationCallbackException(Reason reason) {
        super("authorization callback refused: " + reason);
        this.reason = reason;
    }

    /** Why the callback was refused. */
    public Reason reason() {
        return reason;
    }
}
