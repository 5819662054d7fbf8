package dev.keygate.client;

import java.net.URI;

/** The URL to open in the browser (Custom Tabs) and what to keep until the redirect arrives. */
public final class AuthorizationRequest {
    private final URI url;
    private final PendingAuthorization pending;

    AuthorizationRequest(URI url, PendingAuthorization pending) {
        this.url = url;
        this.pending = pending;
    }

    /** The authorization URL (carries the PKCE challenge and state, not the verifier). */
    public URI url() {
        return url;
    }

    /** The secrets to keep for {@link KeygateClient#handleCallback}. */
    public PendingAuthorization pending() {
        return pending;
    }

    @Override
    public String toString() {
        return "AuthorizationRequest{pending=" + pending + "}";
    }
}
