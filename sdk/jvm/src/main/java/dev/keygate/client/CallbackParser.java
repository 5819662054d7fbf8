package dev.keygate.client;

import java.net.URI;
import java.net.URISyntaxException;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

/**
 * Checks the authorization response (the redirect to the app) and extracts the code
 * (RFC 6749 §4.1.2, RFC 9207). Internal.
 */
final class CallbackParser {
    private CallbackParser() {}

    /**
     * The code, after these checks in order: the callback is addressed to the registered
     * redirect URI; no parameter is repeated; {@code state} matches (constant time);
     * {@code iss}, when present, is {@code issuer}; no {@code error}; a code is present.
     */
    static String code(PendingAuthorization pending, String callbackUri, String issuer) throws KeygateException {
        URI callback;
        URI registered;
        try {
            callback = new URI(callbackUri);
            registered = new URI(pending.redirectUri());
        } catch (URISyntaxException e) {
            throw refused(AuthorizationCallbackException.Reason.MALFORMED);
        }
        if (!sameTarget(callback, registered)) {
            throw refused(AuthorizationCallbackException.Reason.REDIRECT_MISMATCH);
        }
        Map<String, String> params = query(callback.getRawQuery());
        if (!Base64Url.constantTimeEquals(pending.state(), params.get("state"))) {
            throw new StateMismatchException();
        }
        String iss = params.get("iss");
        if (iss != null && !stripSlash(iss).equals(stripSlash(issuer))) {
            throw refused(AuthorizationCallbackException.Reason.ISSUER_MISMATCH);
        }
        String error = params.get("error");
        if (error != null) {
            throw new AuthorizationDeniedException(OAuthErrors.sanitise(error, 64));
        }
        String code = params.get("code");
        if (code == null || code.isEmpty()) {
            throw refused(AuthorizationCallbackException.Reason.MISSING_CODE);
        }
        return code;
    }

    /** The query's parameters; a repeated one is ambiguous (RFC 6749 §3.1) and refused. */
    private static Map<String, String> query(String rawQuery) throws AuthorizationCallbackException {
        Map<String, String> params = new HashMap<>();
        if (rawQuery == null) {
            return params;
        }
        for (String pair : rawQuery.split("&")) {
            if (pair.isEmpty()) {
                continue;
            }
            int eq = pair.indexOf('=');
            try {
                String k = Forms.decode(eq < 0 ? pair : pair.substring(0, eq));
                String v = Forms.decode(eq < 0 ? "" : pair.substring(eq + 1));
                if (params.put(k, v) != null) {
                    throw refused(AuthorizationCallbackException.Reason.MALFORMED);
                }
            } catch (IllegalArgumentException e) {
                throw refused(AuthorizationCallbackException.Reason.MALFORMED);
            }
        }
        return params;
    }

    private static boolean sameTarget(URI a, URI b) {
        return Objects.equals(lower(a.getScheme()), lower(b.getScheme()))
                && Objects.equals(a.getRawAuthority(), b.getRawAuthority())
                && Objects.equals(a.getRawPath(), b.getRawPath());
    }

    private static AuthorizationCallbackException refused(AuthorizationCallbackException.Reason reason) {
        return new AuthorizationCallbackException(reason);
    }

    private static String lower(String s) {
        return s == null ? null : s.toLowerCase(Locale.ROOT);
    }

    static String stripSlash(String s) {
        return s.endsWith("/") ? s.substring(0, s.length() - 1) : s;
    }
}
