package dev.keygate.client;

import java.net.URI;
import java.util.concurrent.ConcurrentHashMap;

/** The latest {@code DPoP-Nonce} each origin sent (RFC 9449 §8, §9). Internal. */
final class NonceCache {
    static final int MAX_NONCE_LENGTH = 512;
    private final ConcurrentHashMap<String, String> byOrigin = new ConcurrentHashMap<>();

    String get(URI uri) {
        return byOrigin.get(Htu.origin(uri));
    }

    /** Remembers the response's nonce, if it has a well-formed one; returns it or null. */
    String observe(URI uri, HttpResponse response) {
        String nonce = response.header("DPoP-Nonce");
        if (nonce == null || !valid(nonce)) {
            return null;
        }
        byOrigin.put(Htu.origin(uri), nonce);
        return nonce;
    }

    /** NQCHAR+ ({@code %x21 / %x23-5B / %x5D-7E}), bounded. */
    static boolean valid(String nonce) {
        if (nonce.isEmpty() || nonce.length() > MAX_NONCE_LENGTH) {
            return false;
        }
        for (int i = 0; i < nonce.length(); i++) {
            char c = nonce.charAt(i);
            if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') {
                return false;
            }
        }
        return true;
    }
}
