package dev.keygate.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.math.BigInteger;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.Signature;
import java.security.interfaces.ECPublicKey;
import java.security.spec.ECGenParameterSpec;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.Set;
import org.junit.jupiter.api.Test;

class CryptoTest {
    private static KeyPair p256() throws Exception {
        KeyPairGenerator g = KeyPairGenerator.getInstance("EC");
        g.initialize(new ECGenParameterSpec("secp256r1"));
        return g.generateKeyPair();
    }

    @Test
    void derToRawMatchesJcaP1363AndRoundTrips() throws Exception {
        KeyPair pair = p256();
        Signature p1363 = Signature.getInstance("SHA256withECDSAinP1363Format");
        p1363.initVerify(pair.getPublic());
        boolean sawPaddedInteger = false;
        for (int i = 0; i < 300; i++) {
            byte[] msg = ("message " + i).getBytes(StandardCharsets.UTF_8);
            Signature s = Signature.getInstance("SHA256withECDSA");
            s.initSign(pair.getPrivate());
            s.update(msg);
            byte[] der = s.sign();
            sawPaddedInteger |= der[3] == 33;
            byte[] raw = EcSignatures.derToRaw(der);
            assertEquals(64, raw.length);
            p1363.update(msg);
            assertTrue(p1363.verify(raw), "raw signature verifies as P1363");
            assertArrayEquals(der, EcSignatures.rawToDer(raw), "minimal DER round trip");
        }
        assertTrue(sawPaddedInteger, "300 signatures include an r with the high bit set");
    }

    @Test
    void derEdgeCases() {
        // r = 1 (one byte), s = 2^255 (needs a 0x00 pad byte).
        byte[] raw = new byte[64];
        raw[31] = 1;
        raw[32] = (byte) 0x80;
        byte[] der = EcSignatures.rawToDer(raw);
        assertEquals("3026020101022100" + "80" + "00".repeat(31), HexFormat.of().formatHex(der));
        assertArrayEquals(raw, EcSignatures.derToRaw(der));
        assertThrows(IllegalArgumentException.class, () -> EcSignatures.derToRaw(new byte[0]));
        assertThrows(IllegalArgumentException.class, () -> EcSignatures.derToRaw(HexFormat.of().parseHex("3006020101020102ff")));
        // Negative INTEGER, trailing garbage, wrong outer tag, oversize INTEGER.
        assertThrows(IllegalArgumentException.class, () -> EcSignatures.derToRaw(HexFormat.of().parseHex("30060201ff020101")));
        assertThrows(IllegalArgumentException.class, () -> EcSignatures.derToRaw(HexFormat.of().parseHex("3106020101020101")));
        byte[] big = new byte[2 + 2 + 34 + 3];
        big[0] = 0x30;
        big[1] = (byte) (big.length - 2);
        big[2] = 0x02;
        big[3] = 34;
        big[4] = 0x01;
        big[38] = 0x02;
        big[39] = 1;
        big[40] = 1;
        assertThrows(IllegalArgumentException.class, () -> EcSignatures.derToRaw(big));
        assertThrows(IllegalArgumentException.class, () -> EcSignatures.rawToDer(new byte[63]));
    }

    @Test
    void rfc9449ThumbprintAndAth() {
        EcPublicJwk jwk = new EcPublicJwk("l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
                "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA");
        // The same vector keygate-auth's tests check (RFC 9449's example key).
        assertEquals("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", jwk.thumbprint());
        assertEquals("fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo",
                DpopProof.ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"));
    }

    @Test
    void rfc7638ThumbprintConstructionMatchesTheRsaExample() {
        // RFC 7638 §3.1: the method (required members, lexicographic, no spaces, SHA-256,
        // base64url) applied to the RFC's RSA example gives the published value.
        String n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
                + "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMi"
                + "cAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XP"
                + "ksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        String canonical = "{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"" + n + "\"}";
        assertEquals("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
                Base64Url.encode(Base64Url.sha256(canonical.getBytes(StandardCharsets.UTF_8))));
    }

    @Test
    void jwkOfJcaKeyPadsCoordinates() throws Exception {
        for (int i = 0; i < 50; i++) {
            ECPublicKey pub = (ECPublicKey) p256().getPublic();
            EcPublicJwk jwk = EcPublicJwk.of(pub);
            assertEquals(pub.getW().getAffineX(), new BigInteger(1, Base64Url.decode(jwk.x())));
            assertEquals(pub.getW().getAffineY(), new BigInteger(1, Base64Url.decode(jwk.y())));
            assertEquals(43, jwk.x().length());
        }
    }

    @Test
    void htuNormalisation() {
        assertEquals("https://gate.example.com/proxy/b",
                Htu.of(URI.create("HTTPS://Gate.Example.COM:443/proxy/a/../b?x=1&y=2#frag")));
        assertEquals("http://127.0.0.1:8080/oauth2/token", Htu.of(URI.create("http://127.0.0.1:8080/oauth2/token?")));
        assertEquals("http://example.com/", Htu.of(URI.create("http://EXAMPLE.com:80")));
        assertEquals("https://example.com:8443/a%20b", Htu.of(URI.create("https://example.com:8443/a%20b?q")));
        assertEquals("http://[::1]:9/x", Htu.of(URI.create("http://[::1]:9/x#f")));
        assertEquals(Htu.origin(URI.create("https://gate.example.com/x")),
                Htu.origin(URI.create("https://GATE.example.com:443/y?z")));
    }

    @Test
    void proofVerifiesWithJcaAndHasClaims() throws Exception {
        SoftwareDpopKeyStore keys = SoftwareDpopKeyStore.generate();
        String proof = DpopProof.create(keys, "POST",
                URI.create("https://gate.example.com/proxy/openai/v1/chat?stream=1#x"), 1_800_000_000L, "n-1", "tok");
        JsonObject claims = Proofs.verify(proof);
        assertEquals("POST", claims.get("htm").getAsString());
        assertEquals("https://gate.example.com/proxy/openai/v1/chat", claims.get("htu").getAsString());
        assertEquals(1_800_000_000L, claims.get("iat").getAsLong());
        assertEquals("n-1", claims.get("nonce").getAsString());
        assertEquals(DpopProof.ath("tok"), claims.get("ath").getAsString());
        assertEquals(22, claims.get("jti").getAsString().length());
        assertEquals(keys.thumbprint(),
                EcPublicJwk.of((ECPublicKey) Proofs.publicKey(Proofs.header(proof).getAsJsonObject("jwk"))).thumbprint());

        String bare = DpopProof.create(keys, "POST", URI.create("https://gate.example.com/oauth2/token"), 1, null, null);
        JsonObject c = Proofs.verify(bare);
        assertFalse(c.has("ath"));
        assertFalse(c.has("nonce"));

        Set<String> jtis = new HashSet<>();
        for (int i = 0; i < 200; i++) {
            jtis.add(Proofs.claims(DpopProof.create(keys, "GET", URI.create("https://g.example/x"), 1, null, null))
                    .get("jti").getAsString());
        }
        assertEquals(200, jtis.size());
        assertNotEquals(-1, keys.toString().indexOf("REDACTED"));
    }

    @Test
    void proofFromADerSigningStoreVerifies() throws Exception {
        // A store that signs like Android Keystore (DER), converting with derToRaw.
        KeyPair pair = p256();
        DpopKeyStore derStore = new DpopKeyStore() {
            @Override
            public EcPublicJwk publicJwk() {
                return EcPublicJwk.of((ECPublicKey) pair.getPublic());
            }

            @Override
            public byte[] sign(byte[] input) throws DpopKeyStoreException {
                try {
                    Signature s = Signature.getInstance("SHA256withECDSA");
                    s.initSign(pair.getPrivate());
                    s.update(input);
                    return EcSignatures.derToRaw(s.sign());
                } catch (Exception e) {
                    throw new DpopKeyStoreException("sign", e);
                }
            }
        };
        Proofs.verify(DpopProof.create(derStore, "GET", URI.create("https://g.example/x"), 1, null, "t"));
    }

    @Test
    void challengeParsing() {
        assertEquals("use_dpop_nonce", Challenges.dpopError(
                "DPoP error=\"use_dpop_nonce\", error_description=\"A DPoP nonce is required\", algs=\"EdDSA ES256\""));
        assertEquals("use_dpop_nonce", Challenges.dpopError("Bearer realm=\"x\", dpop error=use_dpop_nonce"));
        assertEquals("invalid_token", Challenges.dpopError(java.util.List.of("Basic realm=\"r\"",
                "DPoP algs=\"ES256\", error=\"invalid_token\"")));
        assertEquals(null, Challenges.dpopError("Bearer error=\"use_dpop_nonce\""));
        assertEquals(null, Challenges.dpopError("DPoP error_description=\"use_dpop_nonce\""));
        assertEquals(null, Challenges.dpopError("Negotiate abc=="));
        assertEquals(null, Challenges.dpopError("\"\"=,,= \\"));
    }
}
