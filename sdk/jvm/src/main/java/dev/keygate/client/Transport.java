package dev.keygate.client;

import java.io.IOException;

/**
 * The HTTP stack the client sends through. Implementations must not follow redirects, must
 * not add credentials of their own, must return every status (4xx and 5xx included) as a
 * response, and must return the body as a stream that can be read while it arrives.
 *
 * <p>The JVM build ships {@code dev.keygate.client.jvm.JdkHttpTransport}
 * ({@code java.net.http}); Android apps pass one over OkHttp (see the README).
 */
public interface Transport {
    /** Sends one request and returns the response with its body not yet read. */
    HttpResponse send(HttpRequest request) throws IOException;
}
