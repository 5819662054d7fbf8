package dev.keygate.client;

/**
 * The DPoP key store failed: it could not create or load the key, or refused to sign
 * (user cancelled, key invalidated). Never carries key material. There is no fallback to
 * a software key.
 */
public class DpopKeyStoreException extends KeygateException {
    private static final long serialVersionUID = 1L;

    /** A key store failure described without key material. */
    public DpopKeyStoreException(String message) {
        super(message);
    }

    /** A key store failure described without key material, and its cause. */
    public DpopKeyStoreException(String message, Throwable cause) {
        super(message, cause);
    }
}
