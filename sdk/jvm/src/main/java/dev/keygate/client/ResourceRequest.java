package dev.keygate.client;

import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

/**
 * A request to keygate (usually {@code /proxy/{route}/...}). The client adds
 * {@code Authorization} and {@code DPoP}; those two cannot be set here.
 */
public final class ResourceRequest {
    private final String method;
    private final String path;
    private final Map<String, String> headers;
    private final byte[] body;

    private ResourceRequest(Builder b) {
        this.method = b.method;
        this.path = b.path;
        this.headers = Collections.unmodifiableMap(new LinkedHashMap<>(b.headers));
        this.body = b.body;
    }

    /** A request builder for {@code method} and a path under the base URL (query allowed). */
    public static Builder builder(String method, String path) {
        return new Builder(method, path);
    }

    /** A GET of {@code path}. */
    public static ResourceRequest get(String path) {
        return builder("GET", path).build();
    }

    String method() {
        return method;
    }

    String path() {
        return path;
    }

    Map<String, String> headers() {
        return headers;
    }

    byte[] body() {
        return body;
    }

    @Override
    public String toString() {
        return "ResourceRequest{" + method + " " + path + "}";
    }

    /** Builds a {@link ResourceRequest}. */
    public static final class Builder {
        private final String method;
        private final String path;
        private final Map<String, String> headers = new LinkedHashMap<>();
        private byte[] body;

        private Builder(String method, String path) {
            this.method = Objects.requireNonNull(method, "method").toUpperCase(Locale.ROOT);
            this.path = Objects.requireNonNull(path, "path");
        }

        /** Sets a header; {@code Authorization}, {@code DPoP} and {@code Cookie} are refused. */
        public Builder header(String name, String value) {
            String lower = name.toLowerCase(Locale.ROOT);
            if (lower.equals("authorization") || lower.equals("dpop") || lower.equals("cookie")) {
                throw new IllegalArgumentException("header " + name + " is set by the client");
            }
            headers.put(name, Objects.requireNonNull(value, "value"));
            return this;
        }

        /** Sets the body and its content type. */
        public Builder body(String contentType, byte[] body) {
            headers.put("Content-Type", contentType);
            this.body = body.clone();
            return this;
        }

        /** Sets a JSON body ({@code application/json}). */
        public Builder json(String json) {
            return body("application/json", json.getBytes(StandardCharsets.UTF_8));
        }

        /** The request. */
        public ResourceRequest build() {
            return new ResourceRequest(this);
        }
    }
}
