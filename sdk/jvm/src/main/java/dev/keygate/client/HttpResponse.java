package dev.keygate.client;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.Closeable;
import java.io.IOException;
import java.io.InputStream;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** One HTTP response from a {@link Transport}; the body is a stream. Close it when done. */
public final class HttpResponse implements Closeable {
    private final int status;
    private final Map<String, List<String>> headers;
    private final InputStream body;

    /** A response; header names are matched case-insensitively. */
    public HttpResponse(int status, Map<String, List<String>> headers, InputStream body) {
        this.status = status;
        TreeMap<String, List<String>> map = new TreeMap<>(String.CASE_INSENSITIVE_ORDER);
        headers.forEach((k, v) -> {
            if (k != null) {
                map.computeIfAbsent(k, x -> new java.util.ArrayList<>()).addAll(v);
            }
        });
        this.headers = Collections.unmodifiableMap(map);
        this.body = body == null ? new ByteArrayInputStream(new byte[0]) : body;
    }

    /** The HTTP status. */
    public int status() {
        return status;
    }

    /** All values of a header (case-insensitive), possibly empty. */
    public List<String> headers(String name) {
        return headers.getOrDefault(name, Collections.<String>emptyList());
    }

    /** All headers, names case-insensitive. */
    public Map<String, List<String>> headers() {
        return headers;
    }

    /** The first value of a header, or {@code null}. */
    public String header(String name) {
        List<String> values = headers(name);
        return values.isEmpty() ? null : values.get(0);
    }

    /** The body stream. */
    public InputStream body() {
        return body;
    }

    /** Reads the whole body, refusing more than {@code limit} bytes. */
    public byte[] readBody(int limit) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buf = new byte[8192];
        int n;
        while ((n = body.read(buf)) != -1) {
            if (out.size() + n > limit) {
                throw new IOException("response body larger than " + limit + " bytes");
            }
            out.write(buf, 0, n);
        }
        return out.toByteArray();
    }

    @Override
    public void close() {
        try {
            body.close();
        } catch (IOException ignored) {
            // Nothing to do: the connection is released either way.
        }
    }

    @Override
    public String toString() {
        return "HttpResponse{status=" + status + "}";
    }

}
