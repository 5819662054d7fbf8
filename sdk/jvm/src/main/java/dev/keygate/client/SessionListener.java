package dev.keygate.client;

/** Told when keygate ends the session (not on {@link KeygateClient#logout()}). */
@FunctionalInterface
public interface SessionListener {
    /**
     * The refresh token was refused and the tokens were cleared; the app should show its
     * sign-in screen. Called on the thread that attempted the refresh.
     *
     * @param reason the server's sanitised reason, safe to log
     */
    void onSignedOut(String reason);
}
