package dev.keygate.client;

/**
 * keygate answered with an OAuth error (RFC 6749 §5.2). The code and description are
 * reduced to printable characters, so they are safe to show and log.
 */
public class OAuthException extends KeygateException {
    private static final long serialVersionUID = 1L;
    private final int status;
    private final String error;
    private final String description;

    /** An OAuth error answer: HTTP status, error code and optional description. */
    public OAuthException(int status, String error, String description) {
        super("keygate refused the request: " + (error.isEmpty() ? "(no error code)" : error)
                + " (HTTP " + status + ")");
        this.status = status;
        this.error = error;
        this.description = description;
    }

    /** The HTTP status of the answer. */
    public int status() {
        return status;
    }

    /** The OAuth error code, e.g. {@code invalid_grant}; empty if the body had none. */
    public String error() {
        return error;
    }

    /** The server's {@code error_description}, or {@code null}. */
    public String description() {
        return description;
    }
}
