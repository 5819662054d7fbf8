package dev.keygate.client;

/**
 * The callback carried an {@code error} parameter: the user or keygate denied the
 * authorization request.
 */
public final class AuthorizationDeniedException extends KeygateException {
    private static final long serialVersionUID = 1L;
    private final String error;

    /** A denial with its (sanitised) OAuth error code. */
    public AuthorizationDeniedException(String error) {
        super("authorization denied: " + error);
        this.error = error;
    }

    /** The OAuth error code, e.g. {@code access_denied}. */
    public String error() {
        return error;
    }
}
