package dev.keygate.client.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.keygate.client.AttestationProvider;
import dev.keygate.client.AttestationProvider.Evidence;
import dev.keygate.client.AttestationRequest;
import dev.keygate.client.AuthorizationRequest;
import dev.keygate.client.HttpRequest;
import dev.keygate.client.HttpResponse;
import dev.keygate.client.KeygateClient;
import dev.keygate.client.KeygateResponse;
import dev.keygate.client.MemoryTokenStore;
import dev.keygate.client.SoftwareDpopKeyStore;
import dev.keygate.client.Transport;
import dev.keygate.client.jvm.JdkHttpTransport;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.List;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

/**
 * The attestation hook against a real keygate: the fixture's {@code attested_client_id} has
 * App Attest configured (Apple's real root), so evidence from a test can only be absent
 * ({@code att = unattested}) or fail to verify ({@code att = failed}).
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class AttestationIntegrationTest {
    private Fixture fx;

    @BeforeAll
    void start() throws Exception {
        fx = Fixture.start();
    }

    @AfterAll
    void stop() throws Exception {
        if (fx != null) {
            fx.close();
        }
    }

    /** Records the status of every attestation challenge answer. */
    private static final class ChallengeWatch implements Transport {
        private final Transport inner = new JdkHttpTransport();
        final List<Integer> challengeStatuses = Collections.synchronizedList(new ArrayList<>());

        @Override
        public HttpResponse send(HttpRequest request) throws IOException {
            HttpResponse response = inner.send(request);
            if (request.uri().getPath().equals(KeygateClient.ATTESTATION_CHALLENGE_PATH)) {
                challengeStatuses.add(response.status());
            }
            return response;
        }
    }

    private final class App {
        final MemoryTokenStore store = new MemoryTokenStore();
        final ChallengeWatch transport = new ChallengeWatch();
        final List<AttestationRequest> asked = Collections.synchronizedList(new ArrayList<>());
        final KeygateClient client;

        App(String clientId, AttestationProvider provider) throws Exception {
            client = KeygateClient.builder(fx.base(), clientId, fx.s("redirect_uri"))
                    .keyStore(SoftwareDpopKeyStore.generate())
                    .tokenStore(store)
                    .transport(transport)
                    .attestationProvider(r -> {
                        asked.add(r);
                        return provider.attest(r);
                    })
                    .discover();
        }

        void signIn() throws Exception {
            AuthorizationRequest request = client.authorizationRequest(fx.s("scope"));
            String callback = HeadlessLogin.signIn(request.url(), fx.s("user"), fx.s("password"));
            assertTrue(callback.startsWith(fx.s("redirect_uri") + "?"), "redirected to the app: " + callback);
            client.handleCallback(request.pending(), callback);
            assertTrue(client.isSignedIn());
        }

        /** The access token's payload (keygate's JWT), decoded without verification. */
        JsonObject claims() {
            String[] parts = store.load().accessToken().split("\\.");
            assertEquals(3, parts.length, "the access token is a JWT");
            return JsonParser.parseString(new String(Base64.getUrlDecoder().decode(parts[1]), StandardCharsets.UTF_8))
                    .getAsJsonObject();
        }

        List<String> grants() {
            synchronized (asked) {
                return asked.stream().map(AttestationRequest::grant).collect(Collectors.toList());
            }
        }

        String att() {
            JsonObject c = claims();
            return c.has("att") ? c.get("att").getAsString() : null;
        }

        void proxiedCallWorks() throws Exception {
            try (KeygateResponse r = client.get(fx.route("echo") + "/v1/attested")) {
                assertEquals(200, r.status());
            }
        }
    }

    @Test
    void noEvidenceIsUnattestedAndTheRefreshIsAskedToo() throws Exception {
        App app = new App(fx.s("attested_client_id"), r -> Evidence.none());
        app.signIn();
        assertEquals("unattested", app.att());
        // keygate asks for a DPoP nonce first (the fixture has server nonces on): the retry
        // is asked again, over a new challenge (each is single use).
        assertEquals(List.of("authorization_code", "authorization_code"), app.grants());
        assertFalse(app.asked.get(0).challenge().equals(app.asked.get(1).challenge()), "a fresh challenge");
        AttestationRequest in = app.asked.get(1);
        assertEquals(app.client.jkt(), in.jkt());
        assertEquals("keygate-attestation/v1\n" + in.challenge() + "\n" + app.client.jkt(),
                new String(in.clientData(), StandardCharsets.UTF_8));
        app.proxiedCallWorks();

        app.client.refresh();
        assertEquals(List.of("authorization_code", "authorization_code", "refresh_token"), app.grants());
        assertFalse(in.challenge().equals(app.asked.get(2).challenge()), "a fresh challenge");
        assertEquals("unattested", app.att());
        assertTrue(app.transport.challengeStatuses.stream().allMatch(s -> s == 200),
                app.transport.challengeStatuses.toString());
        app.proxiedCallWorks();
    }

    @Test
    void evidenceThatDoesNotVerifyIsFailed() throws Exception {
        App app = new App(fx.s("attested_client_id"), r -> r.grant().equals(AttestationRequest.AUTHORIZATION_CODE)
                ? Evidence.appAttest("AAAA", "AAAA") : Evidence.appAttestAssertion("AAAA"));
        app.signIn();
        assertEquals("failed", app.att());
        app.proxiedCallWorks(); // routes decide what a failed tier may do; echo has no rule
        app.client.refresh();
        assertEquals("refresh_token", app.grants().get(app.grants().size() - 1));
        assertEquals(1, app.grants().stream().filter("refresh_token"::equals).count());
        // keygate's rule: evidence that failed at sign-in marks the session for its
        // lifetime (reason failed_at_sign_in), whatever a refresh brings.
        assertEquals("failed", app.att());
    }

    @Test
    void aProviderThatThrowsStillSignsIn() throws Exception {
        App app = new App(fx.s("attested_client_id"), r -> {
            throw new IllegalStateException("no Google Play services");
        });
        app.signIn();
        assertEquals("unattested", app.att());
    }

    @Test
    void clientWithoutAttestationSignsInWithoutIt() throws Exception {
        App app = new App(fx.s("client_id"), r -> Evidence.playIntegrity("never-sent"));
        app.signIn();
        // One challenge request per token request (two: the first one met a DPoP nonce).
        assertEquals(List.of(400, 400), app.transport.challengeStatuses, "keygate has no attestation for this client");
        assertTrue(app.asked.isEmpty(), "the provider was not asked");
        assertFalse(app.claims().has("att"), app.claims().keySet().toString());
        app.proxiedCallWorks();
        app.client.refresh();
        assertEquals(List.of(400, 400, 400), app.transport.challengeStatuses);
        assertFalse(app.claims().has("att"));
    }
}
