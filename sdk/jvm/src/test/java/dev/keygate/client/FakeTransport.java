package dev.keygate.client;

import com.google.gson.JsonObject;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** A scripted Transport: a handler answers each request; every request is recorded. */
final class FakeTransport implements Transport {
    @FunctionalInterface
    interface Handler {
        HttpResponse handle(HttpRequest request) throws IOException;
    }

    private final List<HttpRequest> requests = new ArrayList<>();
    private volatile Handler handler;

    FakeTransport(Handler handler) {
        this.handler = handler;
    }

    void handler(Handler handler) {
        this.handler = handler;
    }

    @Override
    public HttpResponse send(HttpRequest request) throws IOException {
        synchronized (requests) {
            requests.add(request);
        }
        return handler.handle(request);
    }

    List<HttpRequest> requests() {
        synchronized (requests) {
            return new ArrayList<>(requests);
        }
    }

    long count(String path) {
        return requests().stream().filter(r -> r.uri().getPath().equals(path)).count();
    }

    /** A response builder. */
    static Resp status(int status) {
        return new Resp(status);
    }

    static HttpResponse tokens(String access, String refresh, long expiresIn) {
        JsonObject o = new JsonObject();
        o.addProperty("access_token", access);
        o.addProperty("token_type", "DPoP");
        o.addProperty("expires_in", expiresIn);
        if (refresh != null) {
            o.addProperty("refresh_token", refresh);
        }
        o.addProperty("scope", "ai");
        return status(200).json(o.toString()).build();
    }

    static HttpResponse oauthError(int status, String error, String description) {
        JsonObject o = new JsonObject();
        o.addProperty("error", error);
        if (description != null) {
            o.addProperty("error_description", description);
        }
        return status(status).json(o.toString()).build();
    }

    static Map<String, String> form(HttpRequest r) {
        Map<String, String> out = new LinkedHashMap<>();
        for (String pair : new String(r.body(), StandardCharsets.UTF_8).split("&")) {
            int eq = pair.indexOf('=');
            out.put(java.net.URLDecoder.decode(pair.substring(0, eq), StandardCharsets.UTF_8),
                    java.net.URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8));
        }
        return out;
    }

    static final class Resp {
        private final int status;
        private final Map<String, List<String>> headers = new LinkedHashMap<>();
        private InputStream body = new ByteArrayInputStream(new byte[0]);

        Resp(int status) {
            this.status = status;
        }

        Resp header(String k, String v) {
            headers.computeIfAbsent(k, x -> new ArrayList<>()).add(v);
            return this;
        }

        Resp json(String json) {
            header("Content-Type", "application/json");
            body = new ByteArrayInputStream(json.getBytes(StandardCharsets.UTF_8));
            return this;
        }

        Resp body(InputStream in) {
            body = in;
            return this;
        }

        HttpResponse build() {
            return new HttpResponse(status, headers, body);
        }
    }
}
