package dev.keygate.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.security.AlgorithmParameters;
import java.security.KeyFactory;
import java.security.PublicKey;
import java.security.Signature;
import java.security.spec.ECGenParameterSpec;
import java.security.spec.ECParameterSpec;
import java.security.spec.ECPoint;
import java.security.spec.ECPublicKeySpec;
import java.util.Base64;

/** Verifies a DPoP proof with JCA only (independently of the SDK's signing path). */
final class Proofs {
    private Proofs() {}

    static JsonObject header(String proof) {
        return part(proof, 0);
    }

    static JsonObject claims(String proof) {
        return part(proof, 1);
    }

    private static JsonObject part(String proof, int i) {
        String[] parts = proof.split("\\.");
        return JsonParser.parseString(new String(Base64.getUrlDecoder().decode(parts[i]), StandardCharsets.UTF_8))
                .getAsJsonObject();
    }

    static PublicKey publicKey(JsonObject jwk) throws Exception {
        AlgorithmParameters params = AlgorithmParameters.getInstance("EC");
        params.init(new ECGenParameterSpec("secp256r1"));
        ECParameterSpec spec = params.getParameterSpec(ECParameterSpec.class);
        BigInteger x = new BigInteger(1, Base64.getUrlDecoder().decode(jwk.get("x").getAsString()));
        BigInteger y = new BigInteger(1, Base64.getUrlDecoder().decode(jwk.get("y").getAsString()));
        return KeyFactory.getInstance("EC").generatePublic(new ECPublicKeySpec(new ECPoint(x, y), spec));
    }

    /** Checks typ, alg, a public-only jwk and the ES256 signature; returns the claims. */
    static JsonObject verify(String proof) throws Exception {
        String[] parts = proof.split("\\.");
        assertEquals(3, parts.length);
        JsonObject header = header(proof);
        assertEquals("dpop+jwt", header.get("typ").getAsString());
        assertEquals("ES256", header.get("alg").getAsString());
        JsonObject jwk = header.getAsJsonObject("jwk");
        assertEquals("EC", jwk.get("kty").getAsString());
        assertEquals("P-256", jwk.get("crv").getAsString());
        assertTrue(!jwk.has("d"), "private part in the header");
        Signature v = Signature.getInstance("SHA256withECDSAinP1363Format");
        v.initVerify(publicKey(jwk));
        v.update((parts[0] + "." + parts[1]).getBytes(StandardCharsets.US_ASCII));
        assertTrue(v.verify(Base64.getUrlDecoder().decode(parts[2])), "proof signature does not verify");
        return claims(proof);
    }
}
