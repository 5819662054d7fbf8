package dev.keygate.client;

/** The callback's {@code state} does not match the pending request: possible CSRF. */
public final class StateMismatchException extends AuthorizationCallbackException {
    private static final long serialVersionUID = 1L;

    /** A state mismatch. */
    public StateMismatchException() {
        super(Reason.STATE_MISMATCH);
    }
}
