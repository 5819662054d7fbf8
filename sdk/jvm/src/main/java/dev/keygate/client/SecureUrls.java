package dev.keygate.client;

import java.io.IOException;
import java.net.InetAddress;
import java.net.URI;
import java.util.Locale;

/** Where tokens may be sent: https, or http to a loopback address (development). Internal. */
final class SecureUrls {
    private SecureUrls() {}

    /** https, or http to a loopback host; no user info, query or fragment. */
    static String check(String url) {
        URI uri = URI.create(url);
        if (uri.getHost() == null || uri.getRawUserInfo() != null || uri.getRawQuery() != null
                || uri.getRawFragment() != null) {
            throw new IllegalArgumentException("invalid base URL");
        }
        String scheme = uri.getScheme() == null ? null : uri.getScheme().toLowerCase(Locale.ROOT);
        if ("https".equals(scheme)) {
            return url;
        }
        if ("http".equals(scheme) && isLoopback(uri.getHost())) {
            return url;
        }
        throw new IllegalArgumentException("base URL must be https (http only for loopback)");
    }

    static boolean isLoopback(String host) {
        if (host.equalsIgnoreCase("localhost")) {
            return true;
        }
        String h = host.startsWith("[") ? host.substring(1, host.length() - 1) : host;
        if (!h.matches("[0-9.]+") && !h.contains(":")) {
            return false; // never resolve names here
        }
        try {
            return InetAddress.getByName(h).isLoopbackAddress();
        } catch (IOException e) {
            return false;
        }
    }
}
