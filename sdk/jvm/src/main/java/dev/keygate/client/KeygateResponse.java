package dev.keygate.client;

import java.io.Closeable;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * A response from keygate (usually the upstream's answer through the proxy). The body is a
 * stream: read it incrementally (e.g. with {@link #events()}) or whole; always close.
 */
public final class KeygateResponse implements Closeable {
    private static final int DEFAULT_LIMIT = 16 * 1024 * 1024;
    private final HttpResponse response;

    KeygateResponse(HttpResponse response) {
        this.response = response;
    }

    /** The HTTP status. */
    public int status() {
        return response.status();
    }

    /** The first value of a header, or {@code null}. */
    public String header(String name) {
        return response.header(name);
    }

    /** All values of a header. */
    public List<String> headers(String name) {
        return response.headers(name);
    }

    /** The body as it arrives. */
    public InputStream body() {
        return response.body();
    }

    /** The body as server-sent events, read one at a time. */
    public SseReader events() {
        return new SseReader(response.body());
    }

    /** Reads the whole body (at most 16 MiB). */
    public byte[] bytes() throws IOException {
        return response.readBody(DEFAULT_LIMIT);
    }

    /** Reads the whole body as UTF-8 text (at most 16 MiB). */
    public String string() throws IOException {
        return new String(bytes(), StandardCharsets.UTF_8);
    }

    @Override
    public void close() {
        response.close();
    }

    @Override
    public String toString() {
        return "KeygateResponse{status=" + status() + "}";
    }
}
