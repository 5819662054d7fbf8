package dev.keygate.client;

/** There are no tokens: the app must sign in first. */
public final class NotSignedInException extends KeygateException {
    private static final long serialVersionUID = 1L;

    /** Not signed in. */
    public NotSignedInException() {
        super("not signed in");
    }
}
