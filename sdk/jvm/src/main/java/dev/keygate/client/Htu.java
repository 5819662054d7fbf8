package dev.keygate.client;

import java.net.URI;
import java.util.Locale;

/**
 * The {@code htu} claim of a proof (RFC 9449 §4.2): scheme, host, port and path of the
 * request URI, without query and fragment; scheme and host lower-cased, the scheme's
 * default port dropped, dot segments removed.
 */
public final class Htu {
    private Htu() {}

    /** The {@code htu} for {@code uri}. */
    public static String of(URI uri) {
        if (uri.getScheme() == null || uri.getHost() == null) {
            throw new IllegalArgumentException("not an absolute http(s) URI");
        }
        String scheme = uri.getScheme().toLowerCase(Locale.ROOT);
        String host = uri.getHost().toLowerCase(Locale.ROOT);
        int port = uri.getPort();
        if (("https".equals(scheme) && port == 443) || ("http".equals(scheme) && port == 80)) {
            port = -1;
        }
        String path = uri.normalize().getRawPath();
        if (path == null || path.isEmpty()) {
            path = "/";
        }
        return scheme + "://" + host + (port == -1 ? "" : ":" + port) + path;
    }

    /** The origin ({@code scheme://host[:port]}) of {@code uri}, the key of nonce caching. */
    static String origin(URI uri) {
        String htu = of(uri);
        int slash = htu.indexOf('/', htu.indexOf("://") + 3);
        return slash < 0 ? htu : htu.substring(0, slash);
    }
}
