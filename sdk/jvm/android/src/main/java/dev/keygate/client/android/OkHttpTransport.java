package dev.keygate.client.android;

import dev.keygate.client.HttpRequest;
import dev.keygate.client.HttpResponse;
import dev.keygate.client.Transport;
import java.io.IOException;
import java.util.Map;
import okhttp3.MediaType;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.RequestBody;
import okhttp3.Response;
import okhttp3.ResponseBody;

/**
 * A {@link Transport} over OkHttp 4 for Android apps (java.net.http does not exist there).
 * Redirects are switched off; the body is handed over as a stream, so SSE can be read as it
 * arrives. Not compiled by sdk/jvm/run.sh.
 */
public final class OkHttpTransport implements Transport {
    private final OkHttpClient client;

    /** Uses a copy of {@code client} (share your app's to share its pool) with redirects off. */
    public OkHttpTransport(OkHttpClient client) {
        this.client = client.newBuilder().followRedirects(false).followSslRedirects(false).build();
    }

    @Override
    public HttpResponse send(HttpRequest request) throws IOException {
        Request.Builder b = new Request.Builder().url(request.uri().toString());
        for (Map.Entry<String, String> h : request.headers().entrySet()) {
            b.header(h.getKey(), h.getValue());
        }
        RequestBody body = null;
        if (request.body() != null) {
            String type = request.header("Content-Type");
            body = RequestBody.create(request.body(), type == null ? null : MediaType.parse(type));
        } else if (requiresBody(request.method())) {
            body = RequestBody.create(new byte[0], null);
        }
        b.method(request.method(), body);
        Response response = client.newCall(b.build()).execute();
        ResponseBody responseBody = response.body();
        return new HttpResponse(response.code(), response.headers().toMultimap(),
                responseBody == null ? null : responseBody.byteStream());
    }

    /** OkHttp refuses a null body for these. */
    private static boolean requiresBody(String method) {
        return switch (method) {
            case "POST", "PUT", "PATCH", "PROPPATCH", "REPORT" -> true;
            default -> false;
        };
    }
}
