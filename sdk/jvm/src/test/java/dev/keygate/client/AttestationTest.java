package dev.keygate.client;

import static dev.keygate.client.FakeTransport.oauthError;
import static dev.keygate.client.FakeTransport.status;
import static dev.keygate.client.FakeTransport.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.keygate.client.AttestationProvider.Evidence;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;

/** The attestation hook against a scripted transport. */
class AttestationTest {
    static final String BASE = ClientTest.BASE;
    static final String REDIRECT = ClientTest.REDIRECT;
    static final String TOKEN = ClientTest.TOKEN;
    static final String CHALLENGE = "/oauth2/attestation/challenge";
    static final List<String> FIELDS = List.of("attestation_type", "attestation_challenge", "attestation",
            "attestation_key_id", "attestation_assertion");

    final MutableClock clock = new MutableClock(Instant.parse("2026-03-01T10:00:00Z"));
    final MemoryTokenStore store = new MemoryTokenStore();
    final SoftwareDpopKeyStore keys;
    /** What the provider was asked, in order. */
    final List<AttestationRequest> asked = Collections.synchronizedList(new ArrayList<>());
    final AtomicInteger challenges = new AtomicInteger();

    AttestationTest() throws DpopKeyStoreException {
        keys = SoftwareDpopKeyStore.generate();
    }

    KeygateClient client(FakeTransport t, AttestationProvider provider) {
        return KeygateClient.builder(BASE, "android-app", REDIRECT)
                .keyStore(keys).tokenStore(store).transport(t).clock(clock)
                .refreshMargin(Duration.ofSeconds(30))
                .attestationProvider(provider == null ? null : r -> {
                    asked.add(r);
                    return provider.attest(r);
                })
                .build();
    }

    /** keygate with attestation for the client: challenges ch-1, ch-2, …; tokens from {@code token}. */
    FakeTransport keygate(FakeTransport.Handler token) {
        return new FakeTransport(r -> {
            if (r.uri().getPath().equals(CHALLENGE)) {
                return status(200).header("Cache-Control", "no-store")
                        .json("{\"challenge\":\"ch-" + challenges.incrementAndGet() + "\",\"expires_in\":300}").build();
            }
            if (r.uri().getPath().equals(TOKEN)) {
                return token.handle(r);
            }
            return status(200).json("{}").build();
        });
    }

    /** Signs in through the code flow; returns the dpop_jkt sent at authorize. */
    String signIn(KeygateClient c) throws Exception {
        AuthorizationRequest a = c.authorizationRequest("ai");
        c.handleCallback(a.pending(), REDIRECT + "?code=kgc_1&state=" + a.pending().state());
        return ClientTest.query(a.url()).get("dpop_jkt");
    }

    static List<Map<String, String>> tokenForms(FakeTransport t) {
        return t.requests().stream().filter(r -> r.uri().getPath().equals(TOKEN)).map(FakeTransport::form)
                .collect(Collectors.toList());
    }

    static byte[] sha256(byte[] b) throws Exception {
        return MessageDigest.getInstance("SHA-256").digest(b);
    }

    @Test
    void signInFetchesAChallengeAndSendsTheEvidence() throws Exception {
        FakeTransport t = keygate(r -> tokens("at-1", "rt-1", 300));
        KeygateClient c = client(t, r -> Evidence.playIntegrity("PI-TOKEN"));
        String jkt = signIn(c);

        // The challenge is fetched first, for this client, without a proof.
        assertEquals(2, t.requests().size());
        HttpRequest ch = t.requests().get(0);
        assertEquals("POST", ch.method());
        assertEquals(BASE + CHALLENGE, ch.uri().toString());
        assertEquals("application/x-www-form-urlencoded", ch.header("Content-Type"));
        assertEquals(Map.of("client_id", "android-app"), FakeTransport.form(ch));
        assertNull(ch.header("DPoP"));

        // The provider is asked over exactly keygate-attestation/v1 LF challenge LF jkt.
        assertEquals(1, asked.size());
        AttestationRequest r = asked.get(0);
        assertEquals("authorization_code", r.grant());
        assertEquals("ch-1", r.challenge());
        assertEquals(keys.thumbprint(), jkt);
        assertEquals(jkt, r.jkt());
        byte[] clientData = ("keygate-attestation/v1\nch-1\n" + jkt).getBytes(StandardCharsets.UTF_8);
        assertArrayEquals(clientData, r.clientData());
        assertArrayEquals(sha256(clientData), r.clientDataHash());
        assertEquals(Base64.getUrlEncoder().withoutPadding().encodeToString(sha256(clientData)), r.nonce());
        assertFalse(r.nonce().contains("="));
        assertEquals(43, r.nonce().length());
        // Copies: a provider cannot change what the client holds.
        r.clientData()[0] = 'X';
        r.clientDataHash()[0] ^= 1;
        assertArrayEquals(clientData, r.clientData());
        assertArrayEquals(sha256(clientData), r.clientDataHash());

        // The token request carries the fields next to the usual ones, with its proof.
        Map<String, String> f = tokenForms(t).get(0);
        assertEquals("authorization_code", f.get("grant_type"));
        assertEquals("kgc_1", f.get("code"));
        assertEquals("play-integrity", f.get("attestation_type"));
        assertEquals("ch-1", f.get("attestation_challenge"));
        assertEquals("PI-TOKEN", f.get("attestation"));
        assertFalse(f.containsKey("attestation_key_id"));
        assertFalse(f.containsKey("attestation_assertion"));
        Proofs.verify(t.requests().get(1).header("DPoP"));
        assertEquals("at-1", store.load().accessToken());
    }

    @Test
    void appAttestAtSignInAndAssertionAtRefresh() throws Exception {
        FakeTransport t = keygate(r -> {
            boolean refresh = "refresh_token".equals(FakeTransport.form(r).get("grant_type"));
            return refresh ? tokens("at-2", "rt-2", 300) : tokens("at-1", "rt-1", 300);
        });
        KeygateClient c = client(t, r -> r.grant().equals(AttestationRequest.AUTHORIZATION_CODE)
                ? Evidence.appAttest("KEY-ID", "ATT-OBJ") : Evidence.appAttestAssertion("ASSERTION"));
        String jkt = signIn(c);
        Map<String, String> in = tokenForms(t).get(0);
        assertEquals("apple-app-attest", in.get("attestation_type"));
        assertEquals("KEY-ID", in.get("attestation_key_id"));
        assertEquals("ATT-OBJ", in.get("attestation"));
        assertFalse(in.containsKey("attestation_assertion"));

        // A proactive refresh before a resource call: new challenge, grant refresh_token.
        clock.advance(Duration.ofSeconds(280));
        c.get("/proxy/echo/1").close();
        assertEquals(2, asked.size());
        AttestationRequest r = asked.get(1);
        assertEquals("refresh_token", r.grant());
        assertEquals("ch-2", r.challenge());
        assertEquals(jkt, r.jkt());
        assertArrayEquals(("keygate-attestation/v1\nch-2\n" + jkt).getBytes(StandardCharsets.UTF_8), r.clientData());
        Map<String, String> refresh = tokenForms(t).get(1);
        assertEquals("refresh_token", refresh.get("grant_type"));
        assertEquals("rt-1", refresh.get("refresh_token"));
        assertEquals("apple-app-attest", refresh.get("attestation_type"));
        assertEquals("ch-2", refresh.get("attestation_challenge"));
        assertEquals("ASSERTION", refresh.get("attestation_assertion"));
        assertFalse(refresh.containsKey("attestation"));
        assertFalse(refresh.containsKey("attestation_key_id"));
        assertEquals("DPoP at-2", t.requests().get(t.requests().size() - 1).header("Authorization"));

        // An explicit refresh too.
        c.refresh();
        assertEquals(3, asked.size());
        assertEquals("ch-3", tokenForms(t).get(2).get("attestation_challenge"));
    }

    @Test
    void failingProviderSendsTypeNoneWithTheChallenge() throws Exception {
        List<AttestationProvider> failing = List.of(
                r -> {
                    throw new IllegalStateException("Play Integrity: API not available");
                },
                r -> {
                    throw new java.io.IOException("checked");
                },
                r -> null,
                r -> Evidence.none());
        for (AttestationProvider p : failing) {
            store.clear();
            FakeTransport t = keygate(r -> tokens("at", "rt", 300));
            signIn(client(t, p));
            Map<String, String> f = tokenForms(t).get(0);
            assertEquals("none", f.get("attestation_type"));
            assertEquals("ch-" + challenges.get(), f.get("attestation_challenge"));
            assertFalse(f.containsKey("attestation"));
            assertFalse(f.containsKey("attestation_key_id"));
            assertFalse(f.containsKey("attestation_assertion"));
            assertEquals("at", store.load().accessToken());
        }
        assertEquals(4, asked.size());
    }

    @Test
    void noChallengeMeansNoAttestationFields() throws Exception {
        List<FakeTransport.Handler> noChallenge = List.of(
                r -> oauthError(400, "invalid_request", "This client has no app attestation configured"),
                r -> status(503).build(),
                r -> {
                    throw new java.io.IOException("connection reset");
                },
                r -> status(200).json("{\"expires_in\":300}").build(),
                r -> status(200).json("not json").build());
        for (FakeTransport.Handler h : noChallenge) {
            store.clear();
            FakeTransport t = new FakeTransport(r -> r.uri().getPath().equals(CHALLENGE) ? h.handle(r)
                    : tokens("at", "rt", 300));
            KeygateClient c = client(t, r -> Evidence.playIntegrity("PI"));
            signIn(c);
            assertEquals(1, t.count(CHALLENGE));
            Map<String, String> f = tokenForms(t).get(0);
            for (String field : FIELDS) {
                assertFalse(f.containsKey(field), field);
            }
            assertEquals("at", store.load().accessToken());
            // The refresh degrades the same way.
            c.refresh();
            assertEquals(2, t.count(CHALLENGE));
            assertEquals("refresh_token", tokenForms(t).get(1).get("grant_type"));
            assertFalse(tokenForms(t).get(1).containsKey("attestation_type"));
        }
        assertTrue(asked.isEmpty(), "the provider is not asked without a challenge");
    }

    @Test
    void aRetriedTokenRequestGetsAFreshChallenge() throws Exception {
        // Sign-in: keygate asks for a DPoP nonce first.
        FakeTransport t = keygate(r -> Proofs.claims(r.header("DPoP")).has("nonce") ? tokens("at-1", "rt-1", 300)
                : status(400).header("DPoP-Nonce", "n-1").json("{\"error\":\"use_dpop_nonce\"}").build());
        KeygateClient c = client(t, r -> Evidence.playIntegrity("PI-" + r.challenge()));
        signIn(c);
        List<Map<String, String>> forms = tokenForms(t);
        assertEquals(2, forms.size());
        assertEquals(2, t.count(CHALLENGE));
        assertEquals(2, asked.size());
        assertEquals("ch-1", forms.get(0).get("attestation_challenge"));
        assertEquals("PI-ch-1", forms.get(0).get("attestation"));
        assertEquals("ch-2", forms.get(1).get("attestation_challenge"));
        assertEquals("PI-ch-2", forms.get(1).get("attestation"));
        assertNotEquals(asked.get(0).nonce(), asked.get(1).nonce());
        // Order: challenge, token, challenge, token.
        assertEquals(List.of(CHALLENGE, TOKEN, CHALLENGE, TOKEN),
                t.requests().stream().map(r -> r.uri().getPath()).collect(Collectors.toList()));

        // A refresh refused for a wrong clock and retried with the server's time: fresh too.
        Instant server = clock.instant().plusSeconds(20);
        t.handler(r -> {
            if (r.uri().getPath().equals(CHALLENGE)) {
                return status(200).json("{\"challenge\":\"ch-" + challenges.incrementAndGet() + "\"}").build();
            }
            long iat = Proofs.claims(r.header("DPoP")).get("iat").getAsLong();
            if (Math.abs(iat - server.getEpochSecond()) > 5) {
                return status(400).header("Date", ClientTest.httpDate(server))
                        .json("{\"error\":\"invalid_dpop_proof\"}").build();
            }
            return tokens("at-2", "rt-2", 300);
        });
        c.refresh();
        forms = tokenForms(t);
        assertEquals(4, forms.size());
        assertEquals("ch-3", forms.get(2).get("attestation_challenge"));
        assertEquals("ch-4", forms.get(3).get("attestation_challenge"));
        assertEquals("refresh_token", asked.get(3).grant());
    }

    @Test
    void withoutAProviderOrForOtherGrantsNothingIsFetched() throws Exception {
        FakeTransport t = keygate(r -> tokens("at", "rt", 300));
        KeygateClient plain = client(t, null);
        signIn(plain);
        plain.refresh();
        assertEquals(0, t.count(CHALLENGE));
        for (Map<String, String> f : tokenForms(t)) {
            assertFalse(f.containsKey("attestation_type"));
        }
        // The ID token exchange is not an attested grant.
        KeygateClient attested = client(t, r -> Evidence.playIntegrity("PI"));
        attested.exchangeIdToken("id", null);
        assertEquals(0, t.count(CHALLENGE));
        assertTrue(asked.isEmpty());
    }

    @Test
    void evidenceIsValidatedAndNeverShown() throws Exception {
        assertEquals("none", Evidence.none().type());
        Evidence pi = Evidence.playIntegrity("PI-SECRET");
        assertEquals("play-integrity", pi.type());
        assertEquals("PI-SECRET", pi.attestation());
        Evidence aa = Evidence.appAttest("KEY-SECRET", "ATT-SECRET");
        assertEquals("apple-app-attest", aa.type());
        assertEquals("KEY-SECRET", aa.keyId());
        assertEquals("ATT-SECRET", aa.attestation());
        assertNull(aa.assertion());
        Evidence as = Evidence.appAttestAssertion("ASSERT-SECRET");
        assertEquals("ASSERT-SECRET", as.assertion());
        assertEquals(Evidence.playIntegrity("x"), Evidence.playIntegrity("x"));
        assertNotEquals(Evidence.playIntegrity("x"), Evidence.appAttestAssertion("x"));
        for (Evidence e : List.of(pi, aa, as)) {
            assertFalse(e.toString().contains("SECRET"), e.toString());
        }
        assertThrows(NullPointerException.class, () -> Evidence.playIntegrity(null));
        assertThrows(IllegalArgumentException.class, () -> Evidence.appAttest("", "a"));
        assertThrows(IllegalArgumentException.class, () -> Evidence.appAttestAssertion(""));
        AttestationRequest r = new AttestationRequest("refresh_token", "CHALLENGE-SECRET", "jkt");
        assertFalse(r.toString().contains("SECRET"));
    }
}
