package dev.keygate.client.it;

import dev.keygate.client.HttpRequest;
import dev.keygate.client.HttpResponse;
import dev.keygate.client.Transport;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicInteger;

/** Wraps a transport and counts refresh requests and nonce challenges. */
final class CountingTransport implements Transport {
    private final Transport inner;
    final AtomicInteger refreshes = new AtomicInteger();
    final AtomicInteger nonceChallenges = new AtomicInteger();
    final AtomicInteger requests = new AtomicInteger();

    CountingTransport(Transport inner) {
        this.inner = inner;
    }

    @Override
    public HttpResponse send(HttpRequest request) throws IOException {
        requests.incrementAndGet();
        if (request.uri().getPath().equals("/oauth2/token") && request.body() != null
                && new String(request.body(), StandardCharsets.UTF_8).contains("grant_type=refresh_token")) {
            refreshes.incrementAndGet();
        }
        HttpResponse response = inner.send(request);
        String challenge = String.join(",", response.headers("WWW-Authenticate"));
        if (response.header("DPoP-Nonce") != null
                && (response.status() == 400 || (response.status() == 401 && challenge.contains("use_dpop_nonce")))) {
            nonceChallenges.incrementAndGet();
        }
        return response;
    }
}
