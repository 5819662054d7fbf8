package dev.keygate.client.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.keygate.client.AuthorizationRequest;
import dev.keygate.client.Concurrency;
import dev.keygate.client.KeygateClient;
import dev.keygate.client.KeygateResponse;
import dev.keygate.client.MemoryTokenStore;
import dev.keygate.client.RateLimitedException;
import dev.keygate.client.ResourceRequest;
import dev.keygate.client.ServerSentEvent;
import dev.keygate.client.SessionEndedException;
import dev.keygate.client.SoftwareDpopKeyStore;
import dev.keygate.client.SseReader;
import dev.keygate.client.TokenSet;
import dev.keygate.client.jvm.JdkHttpTransport;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;

/** The SDK against a real keygate (sdk/testkit/fixture.mjs: server nonces on, 30 s tokens). */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class KeygateIntegrationTest {
    private Fixture fx;

    /** Signed in at the start; used by the last test once keygate itself refuses its token. */
    private App reactive;
    private long reactiveSignedInNanos;

    @BeforeAll
    void start() throws Exception {
        fx = Fixture.start();
        // The client believes its token valid for an hour; keygate will answer 401
        // invalid_token once the token is past its expiry plus keygate's 60 s skew allowance.
        reactive = new App(Duration.ZERO);
        reactiveSignedInNanos = System.nanoTime();
        reactive.signIn();
        TokenSet t = reactive.store.load();
        reactive.store.save(new TokenSet(t.accessToken(), t.refreshToken(), t.issuedAt(),
                t.issuedAt().plus(Duration.ofHours(1)), t.scope()));
    }

    @AfterAll
    void stop() throws Exception {
        if (fx != null) {
            fx.close();
        }
    }

    /** A client with its own key, token store and counting transport. */
    private final class App {
        final MemoryTokenStore store = new MemoryTokenStore();
        final CountingTransport transport = new CountingTransport(new JdkHttpTransport());
        final AtomicReference<String> signedOutReason = new AtomicReference<>();
        final KeygateClient client;

        App(Duration refreshMargin) throws Exception {
            client = KeygateClient.builder(fx.base(), fx.s("client_id"), fx.s("redirect_uri"))
                    .keyStore(SoftwareDpopKeyStore.generate())
                    .tokenStore(store)
                    .transport(transport)
                    .refreshMargin(refreshMargin)
                    .sessionListener(signedOutReason::set)
                    .discover();
        }

        void signIn() throws Exception {
            AuthorizationRequest request = client.authorizationRequest(fx.s("scope"));
            String callback = HeadlessLogin.signIn(request.url(), fx.s("user"), fx.s("password"));
            assertTrue(callback.startsWith(fx.s("redirect_uri") + "?"), "redirected to the app");
            client.handleCallback(request.pending(), callback);
            assertTrue(client.isSignedIn());
        }

        JsonObject getJson(String path) throws Exception {
            try (KeygateResponse r = client.get(path)) {
                assertEquals(200, r.status());
                return JsonParser.parseString(r.string()).getAsJsonObject();
            }
        }
    }

    private Set<String> sessionIds(boolean all) throws Exception {
        Set<String> ids = new HashSet<>();
        JsonArray sessions = fx.admin("GET", "/admin/v1/sessions" + (all ? "?all=true" : ""))
                .getAsJsonObject().getAsJsonArray("sessions");
        for (JsonElement s : sessions) {
            if (!all || s.getAsJsonObject().get("revoked").getAsBoolean()) {
                ids.add(s.getAsJsonObject().get("id").getAsString());
            }
        }
        return ids;
    }

    /** Signs in and returns the id of the session keygate created for it. */
    private String signInNewSession(App app) throws Exception {
        Set<String> before = sessionIds(false);
        app.signIn();
        Set<String> after = sessionIds(false);
        after.removeAll(before);
        assertEquals(1, after.size(), "one new session");
        return after.iterator().next();
    }

    private static String sha256Hex(String s) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
    }

    @Test
    void signInThenProxiedPostGetsTheSecretInjectedUpstream() throws Exception {
        App app = new App(Duration.ofSeconds(5));
        app.signIn();
        assertTrue(app.transport.nonceChallenges.get() >= 1, "keygate asked for a nonce and the client retried");
        String body = "{\"model\":\"m\",\"messages\":[]}";
        JsonObject echo;
        try (KeygateResponse r = app.client.execute(ResourceRequest.builder("POST", fx.route("echo") + "/v1/chat?x=1")
                .json(body).build())) {
            assertEquals(200, r.status());
            echo = JsonParser.parseString(r.string()).getAsJsonObject();
        }
        assertEquals("POST", echo.get("method").getAsString());
        assertTrue(echo.get("path").getAsString().endsWith("/v1/chat"), echo.toString());
        assertEquals(body, echo.get("body").getAsString());
        assertTrue(echo.get("dpop").isJsonNull(), "no DPoP header upstream");
        String expected = "Bearer " + fx.s("secret");
        assertEquals(sha256Hex(expected), echo.get("authorization_sha256").getAsString());
        // The upstream's own record, unredacted.
        JsonArray seen = fx.upstreamRequests().getAsJsonArray("requests");
        JsonObject last = seen.get(seen.size() - 1).getAsJsonObject();
        assertEquals(expected, last.get("authorization").getAsString());
        assertTrue(last.get("dpop").isJsonNull());
        assertEquals(0, app.transport.refreshes.get());
    }

    @Test
    void serverSentEventsArriveIncrementally() throws Exception {
        App app = new App(Duration.ofSeconds(5));
        app.signIn();
        List<Long> arrivals = new ArrayList<>();
        List<String> data = new ArrayList<>();
        try (KeygateResponse r = app.client.get(fx.route("echo") + "/v1/stream")) {
            assertEquals(200, r.status());
            assertTrue(r.header("Content-Type").startsWith("text/event-stream"));
            SseReader events = r.events();
            ServerSentEvent e;
            while ((e = events.next()) != null) {
                arrivals.add(System.nanoTime());
                data.add(e.data());
            }
        }
        assertEquals(List.of("1", "2", "3"), data);
        long spreadMs = TimeUnit.NANOSECONDS.toMillis(arrivals.get(2) - arrivals.get(0));
        assertTrue(spreadMs >= 100, "events were read as they arrived, " + spreadMs + " ms apart");
    }

    @Test
    void limitedRouteAnswers429WithRetryAfter() throws Exception {
        App app = new App(Duration.ofSeconds(5));
        app.signIn();
        RateLimitedException limited = null;
        for (int i = 0; i < 6 && limited == null; i++) {
            try (KeygateResponse r = app.client.get(fx.route("limited") + "/v1/x")) {
                assertEquals(200, r.status());
            } catch (RateLimitedException e) {
                limited = e;
                assertTrue(i >= 3, "three calls per minute are allowed, refused at call " + (i + 1));
            }
        }
        assertNotNull(limited, "the fourth call is refused");
        assertTrue(limited.retryAfterSeconds() > 0, "Retry-After given: " + limited.retryAfterSeconds());
    }

    @Test
    void twentyConcurrentCallsAcrossExpiryRefreshOnce() throws Exception {
        // Proactive: margin zero, the client refreshes once its token has expired.
        App proactive = new App(Duration.ZERO);
        proactive.signIn();
        proactive.getJson(fx.route("echo") + "/v1/warm");
        Thread.sleep(TimeUnit.SECONDS.toMillis(fx.info.get("access_ttl_secs").getAsLong() + 2));
        assertConcurrentCallsRefreshOnce(proactive);
    }

    /** Last: by now keygate refuses the reactive app's token, which the app thinks valid. */
    @Test
    @Order(Integer.MAX_VALUE)
    void twentyConcurrentCallsRefusedAsExpiredRefreshOnce() throws Exception {
        long deadSecs = fx.info.get("access_ttl_secs").getAsLong() + 60 + 3;
        long waitMs = TimeUnit.SECONDS.toMillis(deadSecs)
                - TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - reactiveSignedInNanos);
        if (waitMs > 0) {
            Thread.sleep(waitMs);
        }
        int before = reactive.transport.requests.get();
        assertConcurrentCallsRefreshOnce(reactive);
        // The calls sent before the refresh were refused (401 invalid_token) and retried with
        // the new token; calls that started after it went out with the new token at once. At
        // least the first was refused, since the app still thought its token good.
        assertTrue(reactive.transport.requests.get() - before >= 22,
                "20 calls, 1 refresh, and at least one refusal retried");
    }

    private void assertConcurrentCallsRefreshOnce(App app) throws Exception {
        assertEquals(0, app.transport.refreshes.get());
        List<Integer> statuses = Concurrency.run(20, i -> {
            try (KeygateResponse r = app.client.get(fx.route("echo") + "/v1/concurrent")) {
                r.bytes();
                return r.status();
            }
        });
        assertEquals(20, statuses.stream().filter(s -> s == 200).count(), statuses.toString());
        assertEquals(1, app.transport.refreshes.get(), "exactly one refresh request");
        assertTrue(app.client.isSignedIn());
    }

    @Test
    void adminRevocationSignsTheAppOut() throws Exception {
        App app = new App(Duration.ofSeconds(5));
        String session = signInNewSession(app);
        app.getJson(fx.route("echo") + "/v1/before");
        fx.admin("DELETE", "/admin/v1/sessions/" + session);
        SessionEndedException ended = assertThrows(SessionEndedException.class,
                () -> app.client.get(fx.route("echo") + "/v1/after"));
        assertFalse(ended.reason().isEmpty());
        assertEquals(ended.reason(), app.signedOutReason.get(), "listener told");
        assertFalse(app.client.isSignedIn());
        assertNull(app.store.load());
        assertEquals(1, app.transport.refreshes.get());
    }

    @Test
    void logoutRevokesTheSession() throws Exception {
        App app = new App(Duration.ofSeconds(5));
        String session = signInNewSession(app);
        app.getJson(fx.route("echo") + "/v1/before");
        TokenSet old = app.store.load();
        app.client.logout();
        assertFalse(app.client.isSignedIn());
        assertTrue(sessionIds(true).contains(session), "keygate shows the session revoked");
        assertNull(app.signedOutReason.get(), "logout is not reported as a server sign-out");
        // The old tokens are dead at keygate: a client holding them is signed out.
        app.store.save(old);
        assertThrows(SessionEndedException.class, () -> app.client.get(fx.route("echo") + "/v1/after"));
    }
}
