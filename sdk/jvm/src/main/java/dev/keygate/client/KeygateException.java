package dev.keygate.client;

/**
 * The base of every error this SDK throws. Messages never contain a token, code, verifier,
 * proof or key; they are safe to log.
 */
public class KeygateException extends Exception {
    private static final long serialVersionUID = 1L;

    /** An error with a message free of secrets. */
    public KeygateException(String message) {
        super(message);
    }

    /** An error with a message free of secrets and its cause. */
    public KeygateException(String message, Throwable cause) {
        super(message, cause);
    }
}
