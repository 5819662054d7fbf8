package dev.keygate.client;

/** The server asked for a fresh DPoP nonce again right after the client sent one. */
public final class DpopNonceException extends KeygateException {
    private static final long serialVersionUID = 1L;

    /** A repeated nonce request. */
    public DpopNonceException() {
        super("server asked for a DPoP nonce twice in a row");
    }
}
