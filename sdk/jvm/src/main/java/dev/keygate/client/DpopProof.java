package dev.keygate.client;

import com.google.gson.JsonObject;
import java.net.URI;
import java.nio.charset.StandardCharsets;

/** Builds DPoP proofs (RFC 9449 §4) signed through a {@link DpopKeyStore}. */
public final class DpopProof {
    private DpopProof() {}

    /**
     * A signed proof for one request, with a fresh 128-bit {@code jti}.
     *
     * @param method the HTTP method, e.g. {@code POST}
     * @param uri the request URI; {@code htu} drops its query and fragment
     * @param iat the issue time in seconds since the epoch
     * @param nonce the server's nonce for this origin, or {@code null}
     * @param accessToken at a resource, the access token whose hash becomes {@code ath}; else {@code null}
     */
    public static String create(DpopKeyStore keyStore, String method, URI uri, long iat, String nonce, String accessToken)
            throws DpopKeyStoreException {
        JsonObject header = new JsonObject();
        header.addProperty("typ", "dpop+jwt");
        header.addProperty("alg", "ES256");
        header.add("jwk", keyStore.publicJwk().toJson());
        JsonObject claims = new JsonObject();
        claims.addProperty("jti", Base64Url.random(16));
        claims.addProperty("htm", method);
        claims.addProperty("htu", Htu.of(uri));
        claims.addProperty("iat", iat);
        if (nonce != null) {
            claims.addProperty("nonce", nonce);
        }
        if (accessToken != null) {
            claims.addProperty("ath", ath(accessToken));
        }
        String signingInput = Base64Url.encode(header.toString()) + "." + Base64Url.encode(claims.toString());
        byte[] signature = keyStore.sign(signingInput.getBytes(StandardCharsets.US_ASCII));
        if (signature == null || signature.length != 2 * EcSignatures.COORDINATE_BYTES) {
            throw new DpopKeyStoreException("the key store returned a signature that is not 64-byte R||S");
        }
        return signingInput + "." + Base64Url.encode(signature);
    }

    /** {@code ath}: base64url(SHA-256(access token)). */
    public static String ath(String accessToken) {
        return Base64Url.encode(Base64Url.sha256(accessToken.getBytes(StandardCharsets.US_ASCII)));
    }
}
