package dev.keygate.client;

import java.net.URI;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.stream.Collectors;

/** One HTTP request handed to a {@link Transport}. {@link #toString()} hides header values. */
public final class HttpRequest {
    private final String method;
    private final URI uri;
    private final Map<String, String> headers;
    private final byte[] body;

    /** A request; {@code body} may be {@code null}. Header names are kept as given. */
    public HttpRequest(String method, URI uri, Map<String, String> headers, byte[] body) {
        this.method = Objects.requireNonNull(method, "method");
        this.uri = Objects.requireNonNull(uri, "uri");
        this.headers = Collections.unmodifiableMap(new LinkedHashMap<>(headers));
        this.body = body;
    }

    /** The method, e.g. {@code POST}. */
    public String method() {
        return method;
    }

    /** The full URI, query included. */
    public URI uri() {
        return uri;
    }

    /** The headers to send (may hold secrets: Authorization, DPoP). */
    public Map<String, String> headers() {
        return headers;
    }

    /** A header value by case-insensitive name, or {@code null}. */
    public String header(String name) {
        for (Map.Entry<String, String> e : headers.entrySet()) {
            if (e.getKey().equalsIgnoreCase(name)) {
                return e.getValue();
            }
        }
        return null;
    }

    /** The body, or {@code null}. */
    public byte[] body() {
        return body;
    }

    @Override
    public String toString() {
        return "HttpRequest{" + method + " " + Htu.of(uri) + ", headers="
                + headers.keySet().stream().map(k -> k.toLowerCase(Locale.ROOT)).collect(Collectors.toList()) + "}";
    }
}
