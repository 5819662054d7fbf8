package dev.keygate.client.jvm;

import dev.keygate.client.HttpRequest;
import dev.keygate.client.HttpResponse;
import dev.keygate.client.Transport;
import java.io.IOException;
import java.io.InputStream;
import java.io.InterruptedIOException;
import java.net.http.HttpClient;
import java.time.Duration;
import java.util.Map;

/**
 * A {@link Transport} over {@code java.net.http.HttpClient} for JVM servers and tools (not
 * available on Android). Redirects are never followed; bodies are streamed.
 */
public final class JdkHttpTransport implements Transport {
    private final HttpClient client;
    private final Duration requestTimeout;

    /** Connect timeout 10 s; no overall timeout, so long streams (SSE) are not cut. */
    public JdkHttpTransport() {
        this(HttpClient.newBuilder()
                .connectTimeout(Duration.ofSeconds(10))
                .followRedirects(HttpClient.Redirect.NEVER)
                .build(), null);
    }

    /**
     * Uses {@code client}, which must not follow redirects; {@code requestTimeout} (time to
     * the response headers) may be {@code null}.
     */
    public JdkHttpTransport(HttpClient client, Duration requestTimeout) {
        if (client.followRedirects() != HttpClient.Redirect.NEVER) {
            throw new IllegalArgumentException("the HttpClient must not follow redirects");
        }
        this.client = client;
        this.requestTimeout = requestTimeout;
    }

    @Override
    public HttpResponse send(HttpRequest request) throws IOException {
        java.net.http.HttpRequest.Builder b = java.net.http.HttpRequest.newBuilder(request.uri());
        if (requestTimeout != null) {
            b.timeout(requestTimeout);
        }
        for (Map.Entry<String, String> h : request.headers().entrySet()) {
            b.header(h.getKey(), h.getValue());
        }
        byte[] body = request.body();
        b.method(request.method(), body == null
                ? java.net.http.HttpRequest.BodyPublishers.noBody()
                : java.net.http.HttpRequest.BodyPublishers.ofByteArray(body));
        try {
            java.net.http.HttpResponse<InputStream> r =
                    client.send(b.build(), java.net.http.HttpResponse.BodyHandlers.ofInputStream());
            return new HttpResponse(r.statusCode(), r.headers().map(), r.body());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException("interrupted while waiting for keygate");
        }
    }

    @Override
    public String toString() {
        return "JdkHttpTransport";
    }
}
