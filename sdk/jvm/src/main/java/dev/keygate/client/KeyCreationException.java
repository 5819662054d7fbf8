package dev.keygate.client;

/** The platform key store refused to create the DPoP key. No software key was made instead. */
public final class KeyCreationException extends DpopKeyStoreException {
    private static final long serialVersionUID = 1L;

    /** A refused key creation and its platform cause. */
    public KeyCreationException(String message, Throwable cause) {
        super(message, cause);
    }
}
