package dev.keygate.client;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;

/** Turns error answers into exceptions whose text is safe to log. Internal. */
final class OAuthErrors {
    private OAuthErrors() {}

    /**
     * Keeps the characters RFC 6749 allows in an error code or description
     * ({@code %x20-21 / %x23-5B / %x5D-7E}), at most {@code max} of them.
     */
    static String sanitise(String text, int max) {
        if (text == null) {
            return "";
        }
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < text.length() && out.length() < max; i++) {
            char c = text.charAt(i);
            if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\') {
                out.append(c);
            }
        }
        return out.toString();
    }

    /** An OAuth error answer as an exception; a body that is not JSON gives an empty code. */
    static OAuthException from(int status, byte[] body) {
        JsonObject json = Json.parseObjectOrNull(body);
        String error = json == null ? "" : sanitise(string(json, "error"), 64);
        String description = json == null ? null : string(json, "error_description");
        return new OAuthException(status, error, description == null ? null : sanitise(description, 256));
    }

    private static String string(JsonObject json, String key) {
        JsonElement e = json.get(key);
        return e != null && e.isJsonPrimitive() ? e.getAsString() : null;
    }
}
