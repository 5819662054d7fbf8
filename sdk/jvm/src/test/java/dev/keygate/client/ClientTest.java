package dev.keygate.client;

import static dev.keygate.client.FakeTransport.oauthError;
import static dev.keygate.client.FakeTransport.status;
import static dev.keygate.client.FakeTransport.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/** The client's flows against a scripted transport. */
class ClientTest {
    static final String BASE = "https://gate.example.com";
    static final String REDIRECT = "com.example.app:/oauth/callback";
    static final String TOKEN = "/oauth2/token";

    final MutableClock clock = new MutableClock(Instant.parse("2026-03-01T10:00:00Z"));
    final MemoryTokenStore store = new MemoryTokenStore();
    final SoftwareDpopKeyStore keys;

    ClientTest() throws DpopKeyStoreException {
        keys = SoftwareDpopKeyStore.generate();
    }

    KeygateClient client(FakeTransport t) {
        return client(t, null);
    }

    KeygateClient client(FakeTransport t, SessionListener listener) {
        return KeygateClient.builder(BASE, "android-app", REDIRECT)
                .keyStore(keys).tokenStore(store).transport(t).clock(clock).sessionListener(listener)
                .refreshMargin(Duration.ofSeconds(30)).build();
    }

    void signedIn(String access, String refresh, long expiresIn) {
        store.save(new TokenSet(access, refresh, clock.instant(), clock.instant().plusSeconds(expiresIn), "ai"));
    }

    static Map<String, String> query(URI uri) {
        Map<String, String> q = new HashMap<>();
        for (String p : uri.getRawQuery().split("&")) {
            String[] kv = p.split("=", 2);
            q.put(kv[0], URLDecoder.decode(kv[1], StandardCharsets.UTF_8));
        }
        return q;
    }

    static String httpDate(Instant at) {
        return DateTimeFormatter.RFC_1123_DATE_TIME.format(at.atZone(ZoneOffset.UTC));
    }

    // ---- authorization ----

    @Test
    void authorizationRequestHasPkceStateAndJkt() throws Exception {
        KeygateClient c = client(new FakeTransport(r -> status(500).build()));
        AuthorizationRequest a = c.authorizationRequest("ai", "maps");
        Map<String, String> q = query(a.url());
        assertEquals("/oauth2/authorize", a.url().getPath());
        assertEquals("code", q.get("response_type"));
        assertEquals("android-app", q.get("client_id"));
        assertEquals(REDIRECT, q.get("redirect_uri"));
        assertEquals("ai maps", q.get("scope"));
        assertEquals("S256", q.get("code_challenge_method"));
        assertEquals(a.pending().state(), q.get("state"));
        assertEquals(Base64Url.sha256(a.pending().codeVerifier()), q.get("code_challenge"));
        assertEquals(keys.thumbprint(), q.get("dpop_jkt"));
        assertEquals(43, a.pending().codeVerifier().length());
        assertFalse(a.url().toString().contains(a.pending().codeVerifier()));
        AuthorizationRequest b = c.authorizationRequest("ai");
        assertFalse(a.pending().state().equals(b.pending().state()));
        assertThrows(IllegalArgumentException.class, () -> c.authorizationRequest("a b"));
        assertThrows(IllegalArgumentException.class, () -> c.authorizationRequest());
        assertFalse(a.pending().toString().contains(a.pending().state()));
        assertFalse(a.pending().toString().contains(a.pending().codeVerifier()));
    }

    @Test
    void wrongStateIsRefusedAndNothingIsSent() throws Exception {
        FakeTransport t = new FakeTransport(r -> tokens("at", "rt", 300));
        KeygateClient c = client(t);
        PendingAuthorization p = c.authorizationRequest("ai").pending();
        assertThrows(StateMismatchException.class, () -> c.handleCallback(p, REDIRECT + "?code=kgc_1&state=forged"));
        assertThrows(StateMismatchException.class, () -> c.handleCallback(p, REDIRECT + "?code=kgc_1"));
        assertEquals(0, t.requests().size());
        assertFalse(c.isSignedIn());
    }

    @Test
    void errorParameterIsTypedWithItsCode() throws Exception {
        FakeTransport t = new FakeTransport(r -> tokens("at", "rt", 300));
        KeygateClient c = client(t);
        PendingAuthorization p = c.authorizationRequest("ai").pending();
        AuthorizationDeniedException e = assertThrows(AuthorizationDeniedException.class, () -> c.handleCallback(p,
                REDIRECT + "?error=access_denied&error_description=nope&state=" + p.state()));
        assertEquals("access_denied", e.error());
        assertEquals(0, t.requests().size());
    }

    @Test
    void malformedCallbacksAreRefused() throws Exception {
        KeygateClient c = client(new FakeTransport(r -> tokens("at", "rt", 300)));
        PendingAuthorization p = c.authorizationRequest("ai").pending();
        String s = "&state=" + p.state();
        assertEquals(AuthorizationCallbackException.Reason.REDIRECT_MISMATCH, assertThrows(
                AuthorizationCallbackException.class,
                () -> c.handleCallback(p, "https://evil.example/cb?code=x" + s)).reason());
        assertEquals(AuthorizationCallbackException.Reason.MALFORMED, assertThrows(AuthorizationCallbackException.class,
                () -> c.handleCallback(p, REDIRECT + "?code=a&code=b" + s)).reason());
        assertEquals(AuthorizationCallbackException.Reason.ISSUER_MISMATCH, assertThrows(
                AuthorizationCallbackException.class,
                () -> c.handleCallback(p, REDIRECT + "?code=a&iss=https%3A%2F%2Fevil.example" + s)).reason());
        assertEquals(AuthorizationCallbackException.Reason.MISSING_CODE, assertThrows(
                AuthorizationCallbackException.class, () -> c.handleCallback(p, REDIRECT + "?x=1" + s)).reason());
    }

    @Test
    void codeIsRedeemedWithVerifierAndProof() throws Exception {
        FakeTransport t = new FakeTransport(r -> tokens("at-1", "rt-1", 300));
        KeygateClient c = client(t);
        PendingAuthorization p = c.authorizationRequest("ai").pending();
        SignedIn in = c.handleCallback(p, REDIRECT + "?code=kgc_abc&state=" + p.state()
                + "&iss=https%3A%2F%2Fgate.example.com");
        assertEquals("ai", in.scope());
        assertEquals(clock.instant().plusSeconds(300), in.expiresAt());
        HttpRequest r = t.requests().get(0);
        assertEquals(BASE + TOKEN, r.uri().toString());
        Map<String, String> f = FakeTransport.form(r);
        assertEquals("authorization_code", f.get("grant_type"));
        assertEquals("kgc_abc", f.get("code"));
        assertEquals(p.codeVerifier(), f.get("code_verifier"));
        assertEquals(REDIRECT, f.get("redirect_uri"));
        assertEquals("android-app", f.get("client_id"));
        JsonObject claims = Proofs.verify(r.header("DPoP"));
        assertEquals(BASE + TOKEN, claims.get("htu").getAsString());
        assertFalse(claims.has("ath"));
        assertEquals("at-1", store.load().accessToken());
        assertEquals("rt-1", store.load().refreshToken());
    }

    @Test
    void nonDpopTokenIsRefusedAndNotStored() throws Exception {
        FakeTransport t = new FakeTransport(r -> status(200)
                .json("{\"access_token\":\"at\",\"token_type\":\"Bearer\",\"expires_in\":300,\"refresh_token\":\"rt\"}")
                .build());
        KeygateClient c = client(t);
        PendingAuthorization p = c.authorizationRequest("ai").pending();
        NotDpopBoundException e = assertThrows(NotDpopBoundException.class,
                () -> c.handleCallback(p, REDIRECT + "?code=k&state=" + p.state()));
        assertTrue(e.getMessage().contains("Bearer"));
        assertNull(store.load());
    }

    @Test
    void tokenExchangeOfAnIdToken() throws Exception {
        FakeTransport t = new FakeTransport(r -> tokens("at-x", "rt-x", 600));
        KeygateClient c = client(t);
        SignedIn in = c.exchangeIdToken("eyJhbGciOiJSUzI1NiJ9.e30.sig", "ai");
        Map<String, String> f = FakeTransport.form(t.requests().get(0));
        assertEquals("urn:ietf:params:oauth:grant-type:token-exchange", f.get("grant_type"));
        assertEquals("eyJhbGciOiJSUzI1NiJ9.e30.sig", f.get("subject_token"));
        assertEquals("urn:ietf:params:oauth:token-type:id_token", f.get("subject_token_type"));
        assertEquals("android-app", f.get("client_id"));
        assertEquals("ai", f.get("scope"));
        Proofs.verify(t.requests().get(0).header("DPoP"));
        assertEquals("at-x", store.load().accessToken());
        assertEquals(clock.instant().plusSeconds(600), in.expiresAt());
        // A refused subject token is an OAuthException with the code, nothing stored.
        store.clear();
        t.handler(r -> oauthError(400, "invalid_request", "The subject token is not acceptable"));
        OAuthException e = assertThrows(OAuthException.class, () -> c.exchangeIdToken("bad", null));
        assertEquals("invalid_request", e.error());
        assertFalse(FakeTransport.form(t.requests().get(1)).containsKey("scope"));
        assertNull(store.load());
    }

    // ---- nonces ----

    @Test
    void tokenEndpointNonceIsRetriedOnceAndCachedPerOrigin() throws Exception {
        FakeTransport t = new FakeTransport(r -> {
            String nonce = Proofs.claims(r.header("DPoP")).has("nonce")
                    ? Proofs.claims(r.header("DPoP")).get("nonce").getAsString() : null;
            if (!"n-1".equals(nonce)) {
                return status(400).header("DPoP-Nonce", "n-1")
                        .json("{\"error\":\"use_dpop_nonce\",\"error_description\":\"nonce\"}").build();
            }
            return tokens("at", "rt", 300);
        });
        KeygateClient c = client(t);
        c.exchangeIdToken("id", null);
        assertEquals(2, t.requests().size());
        assertFalse(Proofs.claims(t.requests().get(0).header("DPoP")).has("nonce"));
        // The nonce is remembered for the origin: the resource call carries it at once.
        t.handler(r -> status(200).json("{}").build());
        c.get("/proxy/echo/x").close();
        assertEquals(3, t.requests().size());
        assertEquals("n-1", Proofs.claims(t.requests().get(2).header("DPoP")).get("nonce").getAsString());
    }

    @Test
    void tokenEndpointNonceTwiceInARowIsTyped() throws Exception {
        int[] n = {0};
        FakeTransport t = new FakeTransport(r -> status(400).header("DPoP-Nonce", "n-" + n[0]++)
                .json("{\"error\":\"use_dpop_nonce\"}").build());
        assertThrows(DpopNonceException.class, () -> client(t).exchangeIdToken("id", null));
        assertEquals(2, t.requests().size());
        assertNull(store.load());
    }

    @Test
    void resourceNonceIsRetriedOnceAndTwiceIsTyped() throws Exception {
        signedIn("at", "rt", 300);
        FakeTransport t = new FakeTransport(r -> {
            JsonObject claims = Proofs.claims(r.header("DPoP"));
            if (claims.has("nonce") && claims.get("nonce").getAsString().equals("rn-1")) {
                return status(200).json("{\"ok\":true}").build();
            }
            return status(401).header("WWW-Authenticate", "DPoP error=\"use_dpop_nonce\", algs=\"ES256\"")
                    .header("DPoP-Nonce", "rn-1").build();
        });
        KeygateClient c = client(t);
        try (KeygateResponse r = c.get("/proxy/echo/a")) {
            assertEquals(200, r.status());
        }
        assertEquals(2, t.requests().size());
        int[] n = {0};
        t.handler(r -> status(401).header("WWW-Authenticate", "DPoP error=\"use_dpop_nonce\"")
                .header("DPoP-Nonce", "fresh-" + n[0]++).build());
        assertThrows(DpopNonceException.class, () -> c.get("/proxy/echo/b"));
        assertEquals(4, t.requests().size());
    }

    // ---- clock skew ----

    @Test
    void deviceClockFarOffUsesServerTimeForIat() throws Exception {
        Instant server = clock.instant().plus(Duration.ofHours(2));
        FakeTransport t = new FakeTransport(r -> r.uri().getPath().equals(TOKEN)
                ? FakeTransport.status(200).header("Date", httpDate(server))
                        .json("{\"access_token\":\"at\",\"token_type\":\"DPoP\",\"expires_in\":3600}").build()
                : status(200).header("Date", httpDate(clock.instant().minus(Duration.ofHours(5)))).json("{}").build());
        KeygateClient c = client(t);
        c.exchangeIdToken("id", null);
        assertEquals(clock.instant().getEpochSecond(),
                Proofs.claims(t.requests().get(0).header("DPoP")).get("iat").getAsLong());
        c.get("/proxy/echo/1").close();
        c.get("/proxy/echo/2").close();
        // keygate's Date set the offset; a proxied answer's Date (the upstream's) did not.
        for (int i = 1; i <= 2; i++) {
            assertEquals(server.getEpochSecond(),
                    Proofs.claims(t.requests().get(i).header("DPoP")).get("iat").getAsLong());
        }
        // Token expiry stays on the device clock: no refresh was attempted.
        assertEquals(1, t.count(TOKEN));
        assertEquals(clock.instant().plusSeconds(3600), store.load().expiresAt());
    }

    @Test
    void smallSkewIsCorrectedAfterARefusedProof() throws Exception {
        signedIn("at", "rt", 3600);
        Instant server = clock.instant().minusSeconds(20);
        FakeTransport t = new FakeTransport(r -> {
            long iat = Proofs.claims(r.header("DPoP")).get("iat").getAsLong();
            if (Math.abs(iat - server.getEpochSecond()) > 5) {
                return status(401).header("Date", httpDate(server))
                        .header("WWW-Authenticate", "DPoP error=\"invalid_dpop_proof\"").build();
            }
            return status(200).header("Date", httpDate(server)).json("{}").build();
        });
        try (KeygateResponse r = client(t).get("/proxy/echo/1")) {
            assertEquals(200, r.status());
        }
        assertEquals(2, t.requests().size());
    }

    // ---- resource calls and refresh ----

    @Test
    void resourceCallCarriesTokenAndBoundProof() throws Exception {
        signedIn("at-live", "rt", 300);
        FakeTransport t = new FakeTransport(r -> status(200).json("{\"hello\":1}").build());
        try (KeygateResponse r = client(t).execute(ResourceRequest.builder("POST", "/proxy/echo/v1/chat?x=1")
                .header("X-Trace", "t1").json("{\"q\":1}").build())) {
            assertEquals("{\"hello\":1}", r.string());
        }
        HttpRequest sent = t.requests().get(0);
        assertEquals(BASE + "/proxy/echo/v1/chat?x=1", sent.uri().toString());
        assertEquals("DPoP at-live", sent.header("Authorization"));
        assertEquals("t1", sent.header("X-Trace"));
        assertEquals("application/json", sent.header("Content-Type"));
        JsonObject claims = Proofs.verify(sent.header("DPoP"));
        assertEquals("POST", claims.get("htm").getAsString());
        assertEquals(BASE + "/proxy/echo/v1/chat", claims.get("htu").getAsString());
        assertEquals(DpopProof.ath("at-live"), claims.get("ath").getAsString());
        assertEquals(keys.thumbprint(), EcPublicJwk.of((java.security.interfaces.ECPublicKey)
                Proofs.publicKey(Proofs.header(sent.header("DPoP")).getAsJsonObject("jwk"))).thumbprint());
        assertThrows(IllegalArgumentException.class,
                () -> ResourceRequest.builder("GET", "/x").header("authorization", "Bearer x"));
    }

    @Test
    void tokensOnlyGoToKeygate() {
        KeygateClient c = client(new FakeTransport(r -> status(200).build()));
        assertEquals(BASE + "/proxy/a?b=1", c.resolve("/proxy/a?b=1").toString());
        assertEquals(BASE + "/proxy/a", c.resolve(BASE + "/proxy/a").toString());
        for (String bad : List.of("https://evil.example/proxy/a", "http://gate.example.com/proxy/a",
                "https://gate.example.com:444/proxy/a", "proxy/a", "https://gate.example.com.evil.example/x",
                "https://user@gate.example.com/x")) {
            assertThrows(IllegalArgumentException.class, () -> c.resolve(bad), bad);
        }
        // A scheme-relative-looking path is still a path on keygate.
        assertEquals("gate.example.com", c.resolve("//evil.example/x").getHost());
        assertThrows(IllegalArgumentException.class, () -> KeygateClient.builder("http://gate.example.com", "c", REDIRECT));
        KeygateClient.builder("http://127.0.0.1:8080", "c", REDIRECT);
        KeygateClient.builder("http://[::1]:8080", "c", REDIRECT);
    }

    @Test
    void refreshesProactivelyBeforeExpiry() throws Exception {
        signedIn("at-1", "rt-1", 300);
        FakeTransport t = new FakeTransport(r -> r.uri().getPath().equals(TOKEN)
                ? tokens("at-2", "rt-2", 300) : status(200).json("{}").build());
        KeygateClient c = client(t);
        c.get("/proxy/echo/1").close();
        assertEquals(0, t.count(TOKEN));
        clock.advance(Duration.ofSeconds(275)); // 25 s left < 30 s margin
        c.get("/proxy/echo/2").close();
        assertEquals(1, t.count(TOKEN));
        Map<String, String> f = FakeTransport.form(t.requests().get(1));
        assertEquals("refresh_token", f.get("grant_type"));
        assertEquals("rt-1", f.get("refresh_token"));
        assertEquals("DPoP at-2", t.requests().get(2).header("Authorization"));
        assertEquals("rt-2", store.load().refreshToken());
    }

    @Test
    void invalidTokenRefreshesOnceAndRetriesOnce() throws Exception {
        signedIn("at-1", "rt-1", 300);
        FakeTransport t = new FakeTransport(r -> {
            if (r.uri().getPath().equals(TOKEN)) {
                return tokens("at-2", "rt-2", 300);
            }
            if (r.header("Authorization").equals("DPoP at-1")) {
                return status(401).header("WWW-Authenticate", "DPoP error=\"invalid_token\"").build();
            }
            return status(200).json("{}").build();
        });
        try (KeygateResponse r = client(t).get("/proxy/echo/1")) {
            assertEquals(200, r.status());
        }
        assertEquals(3, t.requests().size());
        assertEquals(1, t.count(TOKEN));
        // Still refused after the refresh: returned as is, no second refresh.
        t.handler(r -> r.uri().getPath().equals(TOKEN) ? tokens("at-3", "rt-3", 300)
                : status(401).header("WWW-Authenticate", "DPoP error=\"invalid_token\"").build());
        try (KeygateResponse r = client(t).get("/proxy/echo/2")) {
            assertEquals(401, r.status());
        }
        assertEquals(2, t.count(TOKEN));
    }

    @Test
    void twentyConcurrentCallsShareOneRefresh() throws Exception {
        signedIn("at-1", "rt-1", 300);
        clock.advance(Duration.ofSeconds(301)); // expired
        FakeTransport t = new FakeTransport(r -> {
            if (r.uri().getPath().equals(TOKEN)) {
                sleep(200); // a slow refresh: every caller arrives while it is in flight
                return tokens("at-2", "rt-2", 300);
            }
            return r.header("Authorization").equals("DPoP at-2") ? status(200).json("{}").build()
                    : status(401).header("WWW-Authenticate", "DPoP error=\"invalid_token\"").build();
        });
        KeygateClient c = client(t);
        assertEquals(20, Concurrency.run(20, i -> {
            try (KeygateResponse r = c.get("/proxy/echo/" + i)) {
                return r.status();
            }
        }).stream().filter(s -> s == 200).count());
        assertEquals(1, t.count(TOKEN));

        // The same through the 401 path: the client believes its token valid.
        store.save(new TokenSet("at-2", "rt-2", clock.instant(), clock.instant().plusSeconds(3600), "ai"));
        t.handler(r -> {
            if (r.uri().getPath().equals(TOKEN)) {
                sleep(200);
                return tokens("at-3", "rt-3", 300);
            }
            return r.header("Authorization").equals("DPoP at-3") ? status(200).json("{}").build()
                    : status(401).header("WWW-Authenticate", "DPoP error=\"invalid_token\"").build();
        });
        assertEquals(20, Concurrency.run(20, i -> {
            try (KeygateResponse r = c.get("/proxy/echo/" + i)) {
                return r.status();
            }
        }).stream().filter(s -> s == 200).count());
        assertEquals(2, t.count(TOKEN));
    }

    @Test
    void rateLimitIsTypedWithRetryAfter() throws Exception {
        signedIn("at", "rt", 300);
        FakeTransport t = new FakeTransport(r -> status(429).header("Retry-After", "42")
                .json("{\"error\":\"rate_limited\"}").build());
        RateLimitedException e = assertThrows(RateLimitedException.class, () -> client(t).get("/proxy/limited/x"));
        assertEquals(42, e.retryAfterSeconds());
        assertEquals(Duration.ofSeconds(42), e.retryAfter());
        t.handler(r -> status(429).build());
        assertEquals(-1, assertThrows(RateLimitedException.class, () -> client(t).get("/proxy/limited/x"))
                .retryAfterSeconds());
        assertEquals(0, KeygateClient.retryAfterSeconds("-3"));
        assertEquals(-1, KeygateClient.retryAfterSeconds("soon"));
    }

    @Test
    void refusedRefreshEndsTheSession() throws Exception {
        signedIn("at-1", "rt-1", 300);
        clock.advance(Duration.ofSeconds(400));
        FakeTransport t = new FakeTransport(r -> oauthError(400, "invalid_grant", "The refresh token is revoked"));
        AtomicReference<String> told = new AtomicReference<>();
        KeygateClient c = client(t, told::set);
        SessionEndedException e = assertThrows(SessionEndedException.class, () -> c.get("/proxy/echo/1"));
        assertEquals("The refresh token is revoked", e.reason());
        assertEquals("The refresh token is revoked", told.get());
        assertNull(store.load());
        assertFalse(c.isSignedIn());
        assertThrows(NotSignedInException.class, () -> c.get("/proxy/echo/1"));
        assertEquals(1, t.requests().size());
    }

    @Test
    void transientRefreshFailureKeepsAStillValidToken() throws Exception {
        signedIn("at-1", "rt-1", 300);
        clock.advance(Duration.ofSeconds(280));
        FakeTransport t = new FakeTransport(r -> {
            if (r.uri().getPath().equals(TOKEN)) {
                throw new java.io.IOException("connection reset");
            }
            return status(200).json("{}").build();
        });
        client(t).get("/proxy/echo/1").close();
        assertEquals("DPoP at-1", t.requests().get(1).header("Authorization"));
        assertNotNull(store.load());
        clock.advance(Duration.ofSeconds(30)); // now expired: the failure surfaces
        assertThrows(TransportException.class, () -> client(t).get("/proxy/echo/1"));
    }

    @Test
    void logoutRevokesTheRefreshTokenAndForgets() throws Exception {
        signedIn("at-1", "rt-1", 300);
        FakeTransport t = new FakeTransport(r -> status(200).build());
        KeygateClient c = client(t);
        c.logout();
        assertNull(store.load());
        HttpRequest r = t.requests().get(0);
        assertEquals(BASE + "/oauth2/revoke", r.uri().toString());
        Map<String, String> f = FakeTransport.form(r);
        assertEquals("rt-1", f.get("token"));
        assertEquals("refresh_token", f.get("token_type_hint"));
        assertEquals("android-app", f.get("client_id"));
        c.logout(); // signed out already: nothing sent
        assertEquals(1, t.requests().size());
        // Unreachable server: still signed out locally, and told.
        signedIn("at-2", "rt-2", 300);
        t.handler(x -> {
            throw new java.io.IOException("down");
        });
        assertThrows(TransportException.class, c::logout);
        assertNull(store.load());
    }

    @Test
    void discoveryChecksIssuerAndAlgorithms() throws Exception {
        String doc = "{\"issuer\":\"" + BASE + "\",\"authorization_endpoint\":\"" + BASE + "/oauth2/authorize\","
                + "\"token_endpoint\":\"" + BASE + "/oauth2/token\",\"revocation_endpoint\":\"" + BASE
                + "/oauth2/revoke\",\"dpop_signing_alg_values_supported\":[\"EdDSA\",\"ES256\"]}";
        FakeTransport t = new FakeTransport(r -> status(200).json(doc).build());
        KeygateClient.Builder b = KeygateClient.builder(BASE, "c", REDIRECT).keyStore(keys).transport(t);
        assertNotNull(b.discover());
        assertEquals(BASE + KeygateClient.METADATA_PATH, t.requests().get(0).uri().toString());
        t.handler(r -> status(200).json(doc.replace("\"issuer\":\"" + BASE, "\"issuer\":\"https://evil.example")).build());
        assertThrows(KeygateException.class, b::discover);
        t.handler(r -> status(200).json(doc.replace("\"EdDSA\",\"ES256\"", "\"EdDSA\"")).build());
        assertThrows(KeygateException.class, b::discover);
        t.handler(r -> status(200).json(doc.replace(BASE + "/oauth2/token", "http://gate.example.com/oauth2/token")).build());
        assertThrows(KeygateException.class, b::discover);
    }

    @Test
    void secretsStayOutOfMessagesAndToString() throws Exception {
        signedIn("AT-SECRET-1", "RT-SECRET-1", 300);
        clock.advance(Duration.ofSeconds(400));
        FakeTransport t = new FakeTransport(r -> oauthError(400, "invalid_grant", null));
        KeygateClient c = client(t);
        SessionEndedException ended = assertThrows(SessionEndedException.class, () -> c.get("/proxy/echo/1"));
        signedIn("AT-SECRET-2", "RT-SECRET-2", 300);
        AuthorizationRequest a = c.authorizationRequest("ai");
        HttpRequest withSecrets = new HttpRequest("GET", URI.create(BASE + "/x?q=AT-SECRET-2"),
                Map.of("Authorization", "DPoP AT-SECRET-2", "DPoP", "PROOF-SECRET"), null);
        List<String> texts = List.of(ended.getMessage(), ended.toString(), store.load().toString(), store.toString(),
                c.toString(), a.toString(), a.pending().toString(), keys.toString(), withSecrets.toString(),
                new TransportException(new java.io.IOException("x")).getMessage());
        for (String text : texts) {
            for (String secret : List.of("SECRET", a.pending().state(), a.pending().codeVerifier())) {
                assertFalse(text.contains(secret), text);
            }
        }
        assertEquals("invalid_grant", ended.reason());
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
