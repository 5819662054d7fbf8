package dev.keygate.client.it;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

/**
 * The shared SDK test fixture (sdk/testkit/fixture.mjs) as a child process: a real
 * {@code keygate serve} with server nonces on, plus a fake upstream. It stops when its
 * stdin is closed.
 */
final class Fixture {
    final JsonObject info;
    private final Process process;
    private final HttpClient http = HttpClient.newHttpClient();

    private Fixture(Process process, JsonObject info) {
        this.process = process;
        this.info = info;
    }

    static Fixture start() throws Exception {
        Path repo = repoRoot();
        Path script = repo.resolve("sdk/testkit/fixture.mjs");
        if (!Files.exists(script)) {
            throw new IllegalStateException("fixture not found: " + script);
        }
        File log = Files.createTempFile("keygate-jvm-fixture", ".log").toFile();
        ProcessBuilder pb = new ProcessBuilder("node", script.toString())
                .directory(repo.toFile())
                .redirectError(ProcessBuilder.Redirect.appendTo(log));
        Process p = pb.start();
        BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        String line = out.readLine();
        if (line == null) {
            p.waitFor(10, TimeUnit.SECONDS);
            throw new IllegalStateException("fixture failed to start (exit " + (p.isAlive() ? "?" : p.exitValue())
                    + "): " + Files.readString(log.toPath()).trim());
        }
        return new Fixture(p, JsonParser.parseString(line).getAsJsonObject());
    }

    /** sdk/jvm/../.. from the working directory, or KEYGATE_REPO. */
    static Path repoRoot() {
        String env = System.getenv("KEYGATE_REPO");
        if (env != null) {
            return Path.of(env).toAbsolutePath();
        }
        Path dir = Path.of("").toAbsolutePath();
        while (dir != null && !Files.exists(dir.resolve("sdk/testkit"))) {
            dir = dir.getParent();
        }
        if (dir == null) {
            throw new IllegalStateException("cannot find the repository root (set KEYGATE_REPO)");
        }
        return dir;
    }

    String s(String key) {
        return info.get(key).getAsString();
    }

    String base() {
        return s("base");
    }

    String route(String name) {
        return info.getAsJsonObject("routes").get(name).getAsString();
    }

    JsonElement admin(String method, String path) throws IOException, InterruptedException {
        HttpRequest r = HttpRequest.newBuilder(URI.create(base() + path))
                .header("Authorization", "Bearer " + s("admin_token"))
                .method(method, HttpRequest.BodyPublishers.noBody()).build();
        HttpResponse<String> resp = http.send(r, HttpResponse.BodyHandlers.ofString());
        if (resp.statusCode() / 100 != 2) {
            throw new IOException(method + " " + path + " -> " + resp.statusCode());
        }
        return JsonParser.parseString(resp.body());
    }

    /** Every request the upstream received, unredacted (called directly, not via keygate). */
    JsonObject upstreamRequests() throws IOException, InterruptedException {
        HttpRequest r = HttpRequest.newBuilder(URI.create(s("upstream") + "/_fixture/requests")).build();
        return JsonParser.parseString(http.send(r, HttpResponse.BodyHandlers.ofString()).body()).getAsJsonObject();
    }

    /** Closes the fixture's stdin, which stops keygate and the upstream and cleans up. */
    void close() throws IOException, InterruptedException {
        process.getOutputStream().close();
        if (!process.waitFor(20, TimeUnit.SECONDS)) {
            process.destroy();
            process.waitFor(5, TimeUnit.SECONDS);
        }
    }
}
