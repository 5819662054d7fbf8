package dev.keygate.client;

/** keygate issued a token whose {@code token_type} is not {@code DPoP}; it was not stored. */
public final class NotDpopBoundException extends KeygateException {
    private static final long serialVersionUID = 1L;

    /** The token type received (never the token). */
    public NotDpopBoundException(String tokenType) {
        super("server issued a token of type '" + OAuthErrors.sanitise(tokenType, 32) + "', not DPoP");
    }
}
