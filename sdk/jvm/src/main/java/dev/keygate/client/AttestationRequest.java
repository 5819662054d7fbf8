package dev.keygate.client;

import java.nio.charset.StandardCharsets;

/**
 * What an {@link AttestationProvider} is asked to attest: one token request's single-use
 * challenge and the DPoP key it binds.
 *
 * <p>The platform evidence must cover the <em>client data</em>, the UTF-8 bytes of
 * {@code "keygate-attestation/v1\n" + challenge + "\n" + jkt}, where {@code jkt} is the
 * RFC 7638 thumbprint (base64url) of this app's DPoP public key. App Attest takes
 * {@link #clientDataHash()} as its {@code clientDataHash}; Play Integrity takes
 * {@link #nonce()} as the {@code IntegrityTokenRequest} nonce.
 *
 * <p>{@link #toString()} shows the grant only.
 */
public final class AttestationRequest {
    /** {@link #grant()} at sign-in (the authorization code is redeemed). */
    public static final String AUTHORIZATION_CODE = "authorization_code";
    /** {@link #grant()} at a refresh. */
    public static final String REFRESH_TOKEN = "refresh_token";
    /** The client data's first line. */
    public static final String CLIENT_DATA_PREFIX = "keygate-attestation/v1";

    private final String grant;
    private final String challenge;
    private final String jkt;
    private final byte[] clientData;
    private final byte[] clientDataHash;

    AttestationRequest(String grant, String challenge, String jkt) {
        this.grant = grant;
        this.challenge = challenge;
        this.jkt = jkt;
        this.clientData = clientData(challenge, jkt);
        this.clientDataHash = Base64Url.sha256(clientData);
    }

    /** The client data for {@code challenge} and {@code jkt} (UTF-8). */
    static byte[] clientData(String challenge, String jkt) {
        return (CLIENT_DATA_PREFIX + "\n" + challenge + "\n" + jkt).getBytes(StandardCharsets.UTF_8);
    }

    /** {@link #AUTHORIZATION_CODE} (sign-in) or {@link #REFRESH_TOKEN}. */
    public String grant() {
        return grant;
    }

    /** The single-use challenge keygate issued for this token request. */
    public String challenge() {
        return challenge;
    }

    /** The RFC 7638 thumbprint (base64url) of the DPoP public key, as sent in {@code dpop_jkt}. */
    public String jkt() {
        return jkt;
    }

    /** The client data, {@code keygate-attestation/v1\n<challenge>\n<jkt>} in UTF-8 (a copy). */
    public byte[] clientData() {
        return clientData.clone();
    }

    /** SHA-256 of the client data: App Attest's {@code clientDataHash} (a copy). */
    public byte[] clientDataHash() {
        return clientDataHash.clone();
    }

    /**
     * base64url without padding of SHA-256 of the client data: the Play Integrity nonce
     * ({@code IntegrityTokenRequest.builder().setNonce(request.nonce())}).
     */
    public String nonce() {
        return Base64Url.encode(clientDataHash);
    }

    @Override
    public String toString() {
        return "AttestationRequest{grant=" + grant + "}";
    }
}
