package dev.keygate.client;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.Base64;

/** base64url without padding (RFC 7515 §2), SHA-256 and random strings. Internal. */
final class Base64Url {
    private static final SecureRandom RANDOM = new SecureRandom();

    private Base64Url() {}

    static String encode(byte[] bytes) {
        return Base64.getUrlEncoder().withoutPadding().encodeToString(bytes);
    }

    static String encode(String text) {
        return encode(text.getBytes(StandardCharsets.UTF_8));
    }

    static byte[] decode(String text) {
        return Base64.getUrlDecoder().decode(text);
    }

    static byte[] sha256(byte[] input) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(input);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is unavailable", e);
        }
    }

    static String sha256(String input) {
        return encode(sha256(input.getBytes(StandardCharsets.UTF_8)));
    }

    /** {@code bytes} random bytes from a CSPRNG, base64url. */
    static String random(int bytes) {
        byte[] b = new byte[bytes];
        RANDOM.nextBytes(b);
        return encode(b);
    }

    /** Compares two secrets in time independent of where they differ. */
    static boolean constantTimeEquals(String a, String b) {
        if (a == null || b == null) {
            return false;
        }
        return MessageDigest.isEqual(a.getBytes(StandardCharsets.UTF_8), b.getBytes(StandardCharsets.UTF_8));
    }
}
