package dev.keygate.client;

import com.google.gson.JsonObject;
import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A keygate client: signs the user in with the authorization code flow, PKCE (S256) and a
 * DPoP-bound key (RFC 9449), keeps the tokens fresh with the rotating refresh token, answers
 * server nonce requests, and sends requests through keygate's proxy with
 * {@code Authorization: DPoP <token>} and a fresh proof each time.
 *
 * <p>Thread-safe. Refreshes are single-flighted: however many threads find the access token
 * stale at once, one refresh request is sent (a refresh token is single-use, and presenting
 * a spent one revokes the whole session). Nothing here logs, and no exception message or
 * {@code toString} contains a token, code, verifier, proof or key.
 */
public final class KeygateClient {
    /** The RFC 8414 metadata path. */
    public static final String METADATA_PATH = "/.well-known/oauth-authorization-server";
    /** RFC 8693 token exchange grant type. */
    public static final String TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";
    /** RFC 8693 subject token type of an OpenID Connect ID token. */
    public static final String ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token";
    /** Where the client asks for a single-use attestation challenge (under the base URL). */
    public static final String ATTESTATION_CHALLENGE_PATH = "/oauth2/attestation/challenge";

    private static final int MAX_OAUTH_BODY = 64 * 1024;
    private static final long DEFAULT_EXPIRES_IN = 60;

    private final String base;
    private final String clientId;
    private final String redirectUri;
    private final URI authorizationEndpoint;
    private final URI tokenEndpoint;
    private final URI revocationEndpoint;
    private final URI attestationEndpoint;
    private final AttestationProvider attestationProvider;
    private final DpopKeyStore keyStore;
    private final TokenStore tokens;
    private final Transport transport;
    private final Clock clock;
    private final Duration refreshMargin;
    private final SessionListener listener;
    private final ServerClock serverClock;
    private final NonceCache nonces = new NonceCache();
    private final ReentrantLock refreshLock = new ReentrantLock();

    private KeygateClient(Builder b, URI authorizationEndpoint, URI tokenEndpoint, URI revocationEndpoint) {
        this.base = b.base;
        this.clientId = b.clientId;
        this.redirectUri = b.redirectUri;
        this.authorizationEndpoint = authorizationEndpoint;
        this.tokenEndpoint = tokenEndpoint;
        this.revocationEndpoint = revocationEndpoint;
        this.attestationEndpoint = URI.create(b.base + ATTESTATION_CHALLENGE_PATH);
        this.attestationProvider = b.attestationProvider;
        this.keyStore = b.keyStore;
        this.tokens = b.tokenStore;
        this.transport = b.transport;
        this.clock = b.clock;
        this.refreshMargin = b.refreshMargin;
        this.listener = b.listener;
        this.serverClock = new ServerClock(b.clock);
    }

    /**
     * Starts configuring a client for keygate at {@code baseUrl} (its issuer; {@code https},
     * or {@code http} to a loopback address), the public client {@code clientId} and its
     * registered {@code redirectUri}.
     */
    public static Builder builder(String baseUrl, String clientId, String redirectUri) {
        return new Builder(baseUrl, clientId, redirectUri);
    }

    // ---- sign-in ----------------------------------------------------------------------

    /**
     * The authorization request to open in the browser (Custom Tabs) with PKCE S256, a fresh
     * {@code state} and {@code dpop_jkt} binding the code to this device's key.
     */
    public AuthorizationRequest authorizationRequest(String... scopes) throws KeygateException {
        if (scopes.length == 0) {
            throw new IllegalArgumentException("at least one scope is required");
        }
        for (String s : scopes) {
            if (!validScopeToken(s)) {
                throw new IllegalArgumentException("invalid scope token");
            }
        }
        String scope = String.join(" ", scopes);
        String state = Base64Url.random(32);
        String verifier = Base64Url.random(32);
        String challenge = Base64Url.sha256(verifier);
        Map<String, String> q = new LinkedHashMap<>();
        q.put("response_type", "code");
        q.put("client_id", clientId);
        q.put("redirect_uri", redirectUri);
        q.put("scope", scope);
        q.put("state", state);
        q.put("code_challenge", challenge);
        q.put("code_challenge_method", "S256");
        q.put("dpop_jkt", keyStore.thumbprint());
        URI url = URI.create(authorizationEndpoint + (authorizationEndpoint.getRawQuery() == null ? "?" : "&") + Forms.encode(q));
        return new AuthorizationRequest(url, new PendingAuthorization(state, verifier, redirectUri, scope));
    }

    /**
     * Completes sign-in with the redirect the browser delivered ({@code callbackUri}, e.g.
     * {@code com.example.app:/oauth/callback?code=…&state=…}): checks it against
     * {@code pending}, redeems the code with the verifier and a DPoP proof, and stores the
     * tokens.
     *
     * @throws StateMismatchException the state is missing or wrong (nothing is sent)
     * @throws AuthorizationDeniedException the redirect carries an {@code error}
     * @throws AuthorizationCallbackException the redirect is otherwise unacceptable
     * @throws NotDpopBoundException the token is not DPoP-bound (nothing is stored)
     * @throws OAuthException the token endpoint refused the code
     */
    public SignedIn handleCallback(PendingAuthorization pending, String callbackUri) throws KeygateException {
        String code = CallbackParser.code(pending, callbackUri, base);
        Map<String, String> f = new LinkedHashMap<>();
        f.put("grant_type", "authorization_code");
        f.put("code", code);
        f.put("redirect_uri", pending.redirectUri());
        f.put("client_id", clientId);
        f.put("code_verifier", pending.codeVerifier());
        return storeGrant(f, AttestationRequest.AUTHORIZATION_CODE, null);
    }

    /**
     * Signs in by exchanging an ID token from an identity provider keygate trusts (RFC 8693),
     * e.g. from Google Sign-In / Credential Manager. The tokens issued are DPoP-bound to this
     * device's key.
     *
     * @param scope the scopes wanted, space-separated, or {@code null} for the default
     */
    public SignedIn exchangeIdToken(String idToken, String scope) throws KeygateException {
        Objects.requireNonNull(idToken, "idToken");
        Map<String, String> f = new LinkedHashMap<>();
        f.put("grant_type", TOKEN_EXCHANGE_GRANT);
        f.put("subject_token", idToken);
        f.put("subject_token_type", ID_TOKEN_TYPE);
        f.put("client_id", clientId);
        if (scope != null) {
            f.put("scope", scope);
        }
        return storeGrant(f, null, null);
    }

    private SignedIn storeGrant(Map<String, String> form, String attestedGrant, String previousRefresh)
            throws KeygateException {
        Instant requestedAt = clock.instant();
        TokenSet set = tokenSet(tokenRequest(form, attestedGrant), requestedAt, previousRefresh);
        tokens.save(set);
        return new SignedIn(set.scope(), set.expiresAt());
    }

    /** Whether tokens are stored (they may still need a refresh). */
    public boolean isSignedIn() {
        return tokens.load() != null;
    }

    /** The RFC 7638 thumbprint of the DPoP key. */
    public String jkt() throws DpopKeyStoreException {
        return keyStore.thumbprint();
    }

    // ---- resource requests -----------------------------------------------------------

    /** GETs {@code path} (under the base URL, e.g. {@code /proxy/openai/v1/models}). */
    public KeygateResponse get(String path) throws KeygateException {
        return execute(ResourceRequest.get(path));
    }

    /** POSTs {@code body} of {@code contentType} to {@code path}. */
    public KeygateResponse post(String path, String contentType, byte[] body) throws KeygateException {
        return execute(ResourceRequest.builder("POST", path).body(contentType, body).build());
    }

    /**
     * Sends a request to keygate with the access token and a fresh proof. Refreshes first if
     * the token is about to expire; on {@code 401 invalid_token} refreshes once and retries
     * once; on a {@code use_dpop_nonce} challenge retries once with the nonce; on a refused
     * proof whose {@code Date} shows the device clock off, retries once with the server's time.
     *
     * @throws RateLimitedException on 429, with {@code Retry-After}
     * @throws SessionEndedException the session was revoked or expired; tokens cleared
     * @throws DpopNonceException the server asked for a nonce twice in a row
     * @throws NotSignedInException no tokens
     */
    public KeygateResponse execute(ResourceRequest request) throws KeygateException {
        URI url = resolve(request.path());
        String token = validAccessToken();
        boolean nonceRetried = false;
        boolean clockCorrected = false;
        boolean refreshed = false;
        while (true) {
            HttpResponse response = sendWithProof(request, url, token);
            if (response.status() == 401) {
                String error = Challenges.dpopError(response.headers("WWW-Authenticate"));
                boolean freshNonce = nonces.observe(url, response) != null;
                if ("use_dpop_nonce".equals(error) && freshNonce) {
                    response.close();
                    if (nonceRetried) {
                        throw new DpopNonceException();
                    }
                    nonceRetried = true;
                    continue;
                }
                if ("invalid_dpop_proof".equals(error) && !clockCorrected && serverClock.correct(response)) {
                    response.close();
                    clockCorrected = true;
                    nonceRetried = false;
                    continue;
                }
                if ("invalid_token".equals(error) && !refreshed) {
                    response.close();
                    refreshed = true;
                    nonceRetried = false;
                    token = refresh(token, true);
                    continue;
                }
            }
            if (response.status() == 429) {
                long retryAfter = retryAfterSeconds(response.header("Retry-After"));
                response.close();
                throw new RateLimitedException(retryAfter);
            }
            return new KeygateResponse(response);
        }
    }

    private HttpResponse sendWithProof(ResourceRequest request, URI url, String token) throws KeygateException {
        String proof = DpopProof.create(keyStore, request.method(), url, serverClock.proofSeconds(), nonces.get(url), token);
        Map<String, String> headers = new LinkedHashMap<>(request.headers());
        headers.put("Authorization", "DPoP " + token);
        headers.put("DPoP", proof);
        HttpResponse response = send(new HttpRequest(request.method(), url, headers, request.body()));
        nonces.observe(url, response);
        return response;
    }

    /** A valid access token, refreshed first (single-flight) if it is about to expire. */
    private String validAccessToken() throws KeygateException {
        TokenSet current = tokens.load();
        if (current == null) {
            throw new NotSignedInException();
        }
        if (!current.needsRefresh(clock.instant(), refreshMargin)) {
            return current.accessToken();
        }
        return refresh(current.accessToken(), false);
    }

    /** Refreshes now, whatever the expiry (e.g. after the user's scopes changed). */
    public SignedIn refresh() throws KeygateException {
        TokenSet current = tokens.load();
        if (current == null) {
            throw new NotSignedInException();
        }
        refresh(current.accessToken(), true);
        TokenSet now = tokens.load();
        if (now == null) {
            throw new NotSignedInException();
        }
        return new SignedIn(now.scope(), now.expiresAt());
    }

    /**
     * Refreshes the access token {@code stale} unless another thread already replaced it.
     * Holding the lock across the request makes concurrent refreshes one request.
     */
    private String refresh(String stale, boolean force) throws KeygateException {
        refreshLock.lock();
        try {
            TokenSet current = tokens.load();
            if (current == null) {
                throw new NotSignedInException();
            }
            if (!current.accessToken().equals(stale)) {
                return current.accessToken(); // refreshed by another thread meanwhile
            }
            Instant now = clock.instant();
            if (!force && !current.needsRefresh(now, refreshMargin)) {
                return current.accessToken();
            }
            if (current.refreshToken() == null) {
                if (force || current.isExpired(now)) {
                    throw endSession("no refresh token");
                }
                return current.accessToken();
            }
            Map<String, String> f = new LinkedHashMap<>();
            f.put("grant_type", "refresh_token");
            f.put("refresh_token", current.refreshToken());
            f.put("client_id", clientId);
            JsonObject answer;
            try {
                answer = tokenRequest(f, AttestationRequest.REFRESH_TOKEN);
            } catch (OAuthException e) {
                if ("invalid_grant".equals(e.error()) || "invalid_client".equals(e.error())) {
                    throw endSession(e.description() != null && !e.description().isEmpty() ? e.description() : e.error());
                }
                if (!force && !current.isExpired(clock.instant())) {
                    return current.accessToken(); // transient failure of a proactive refresh
                }
                throw e;
            } catch (TransportException e) {
                if (!force && !current.isExpired(clock.instant())) {
                    return current.accessToken();
                }
                throw e;
            }
            TokenSet next = tokenSet(answer, now, current.refreshToken());
            tokens.save(next);
            return next.accessToken();
        } finally {
            refreshLock.unlock();
        }
    }

    private SessionEndedException endSession(String reason) {
        tokens.clear();
        if (listener != null) {
            try {
                listener.onSignedOut(reason);
            } catch (RuntimeException ignored) {
                // A failing listener must not hide the session end from the caller.
            }
        }
        return new SessionEndedException(reason);
    }

    // ---- sign-out ----------------------------------------------------------------------

    /**
     * Signs out: forgets the tokens and revokes the refresh token at keygate (RFC 7009), which
     * ends the session's access tokens too. The local tokens are gone even if keygate cannot
     * be reached (the exception then says so).
     */
    public void logout() throws KeygateException {
        refreshLock.lock();
        try {
            TokenSet current = tokens.load();
            if (current == null) {
                return;
            }
            tokens.clear();
            boolean refresh = current.refreshToken() != null;
            Map<String, String> f = new LinkedHashMap<>();
            f.put("token", refresh ? current.refreshToken() : current.accessToken());
            f.put("token_type_hint", refresh ? "refresh_token" : "access_token");
            f.put("client_id", clientId);
            Map<String, String> headers = new LinkedHashMap<>();
            headers.put("Content-Type", "application/x-www-form-urlencoded");
            headers.put("Accept", "application/json");
            try (HttpResponse response = send(new HttpRequest("POST", revocationEndpoint, headers, bytes(Forms.encode(f))))) {
                serverClock.observe(response);
                if (response.status() / 100 != 2) {
                    throw OAuthErrors.from(response.status(), readLimited(response));
                }
            }
        } finally {
            refreshLock.unlock();
        }
    }

    // ---- token endpoint ----------------------------------------------------------------

    /**
     * POSTs a form to the token endpoint with a proof; on {@code use_dpop_nonce} retries once
     * with the new nonce, on {@code invalid_dpop_proof} with a wrong device clock once with
     * the server's time. With an {@code attestedGrant} and an attestation provider, every
     * attempt (retries included: a challenge is single use) carries fresh attestation.
     */
    private JsonObject tokenRequest(Map<String, String> form, String attestedGrant) throws KeygateException {
        boolean nonceRetried = false;
        boolean clockCorrected = false;
        while (true) {
            byte[] body = bytes(Forms.encode(withAttestation(form, attestedGrant)));
            String proof = DpopProof.create(keyStore, "POST", tokenEndpoint, serverClock.proofSeconds(),
                    nonces.get(tokenEndpoint), null);
            Map<String, String> headers = new LinkedHashMap<>();
            headers.put("Content-Type", "application/x-www-form-urlencoded");
            headers.put("Accept", "application/json");
            headers.put("DPoP", proof);
            byte[] answer;
            int status;
            String freshNonce;
            boolean correctable;
            try (HttpResponse response = send(new HttpRequest("POST", tokenEndpoint, headers, body))) {
                // Only keygate's own answers set the clock: a proxied answer's Date may be
                // the upstream's.
                serverClock.observe(response);
                freshNonce = nonces.observe(tokenEndpoint, response);
                status = response.status();
                answer = readLimited(response);
                correctable = status == 400 && !clockCorrected
                        && "invalid_dpop_proof".equals(OAuthErrors.from(status, answer).error())
                        && serverClock.correct(response);
            }
            if (status / 100 == 2) {
                JsonObject json = Json.parseObjectOrNull(answer);
                if (json == null) {
                    throw new KeygateException("the token endpoint answered something other than a JSON object");
                }
                return json;
            }
            OAuthException error = OAuthErrors.from(status, answer);
            if (status == 400 && "use_dpop_nonce".equals(error.error()) && freshNonce != null) {
                if (nonceRetried) {
                    throw new DpopNonceException();
                }
                nonceRetried = true;
                continue;
            }
            if (correctable) {
                clockCorrected = true;
                nonceRetried = false;
                continue;
            }
            throw error;
        }
    }

    // ---- app attestation -------------------------------------------------------------

    /**
     * {@code form} plus the attestation fields for one token request: a fresh challenge, the
     * provider's evidence over it. Degrades rather than locks out: no challenge → the form
     * unchanged; the provider fails or returns {@code null} → {@code attestation_type=none}.
     */
    private Map<String, String> withAttestation(Map<String, String> form, String grant) throws KeygateException {
        if (attestationProvider == null || grant == null) {
            return form;
        }
        String challenge = attestationChallenge();
        if (challenge == null) {
            return form;
        }
        AttestationRequest request = new AttestationRequest(grant, challenge, keyStore.thumbprint());
        AttestationProvider.Evidence evidence;
        try {
            evidence = attestationProvider.attest(request);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            evidence = null;
        } catch (Exception e) {
            evidence = null; // never logged: the message may carry platform details
        }
        Map<String, String> f = new LinkedHashMap<>(form);
        f.put("attestation_challenge", challenge);
        if (evidence == null || AttestationProvider.Evidence.NONE.equals(evidence.type())) {
            f.put("attestation_type", AttestationProvider.Evidence.NONE);
            return f;
        }
        f.put("attestation_type", evidence.type());
        putIfPresent(f, "attestation", evidence.attestation());
        putIfPresent(f, "attestation_key_id", evidence.keyId());
        putIfPresent(f, "attestation_assertion", evidence.assertion());
        return f;
    }

    private static void putIfPresent(Map<String, String> form, String name, String value) {
        if (value != null) {
            form.put(name, value);
        }
    }

    /** A single-use challenge from keygate, or {@code null} if there is none to be had. */
    private String attestationChallenge() {
        Map<String, String> headers = new LinkedHashMap<>();
        headers.put("Content-Type", "application/x-www-form-urlencoded");
        headers.put("Accept", "application/json");
        byte[] body = bytes(Forms.encode(Collections.singletonMap("client_id", clientId)));
        try (HttpResponse response = transport.send(new HttpRequest("POST", attestationEndpoint, headers, body))) {
            serverClock.observe(response);
            if (response.status() / 100 != 2) {
                return null; // e.g. 400: no attestation configured for this client
            }
            JsonObject json = Json.parseObjectOrNull(response.readBody(MAX_OAUTH_BODY));
            String challenge = json == null ? null : Json.string(json, "challenge");
            return challenge == null || challenge.isEmpty() ? null : challenge;
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    private static TokenSet tokenSet(JsonObject answer, Instant requestedAt, String previousRefresh) throws KeygateException {
        String tokenType = Json.string(answer, "token_type");
        if (tokenType == null || !tokenType.equalsIgnoreCase("DPoP")) {
            throw new NotDpopBoundException(tokenType == null ? "" : tokenType);
        }
        String access = Json.string(answer, "access_token");
        if (access == null || access.isEmpty()) {
            throw new KeygateException("the token response has no access token");
        }
        Long expiresIn = Json.number(answer, "expires_in");
        long lifetime = Math.max(0, expiresIn == null ? DEFAULT_EXPIRES_IN : expiresIn);
        String refresh = Json.string(answer, "refresh_token");
        return new TokenSet(access, refresh != null ? refresh : previousRefresh, requestedAt,
                requestedAt.plusSeconds(lifetime), Json.string(answer, "scope"));
    }

    // ---- helpers -----------------------------------------------------------------------

    private HttpResponse send(HttpRequest request) throws TransportException {
        HttpResponse response;
        try {
            response = transport.send(request);
        } catch (IOException e) {
            throw new TransportException(e);
        }
        return response;
    }

    private static byte[] readLimited(HttpResponse response) throws TransportException {
        try {
            return response.readBody(MAX_OAUTH_BODY);
        } catch (IOException e) {
            throw new TransportException(e);
        }
    }

    /** Resolves a path under the base URL; absolute URLs must lie under it too. */
    URI resolve(String path) {
        String full;
        if (path.startsWith("/")) {
            full = base + path;
        } else if (path.startsWith(base + "/")) {
            full = path;
        } else {
            throw new IllegalArgumentException("request URL is not under the base URL");
        }
        URI uri;
        try {
            uri = new URI(full);
        } catch (URISyntaxException e) {
            throw new IllegalArgumentException("request path is not a valid URI");
        }
        if (!Htu.origin(uri).equals(Htu.origin(URI.create(base))) || uri.getRawUserInfo() != null) {
            throw new IllegalArgumentException("request URL is not under the base URL");
        }
        return uri;
    }

    static long retryAfterSeconds(String value) {
        if (value == null) {
            return -1;
        }
        try {
            return Math.max(0, Long.parseLong(value.trim()));
        } catch (NumberFormatException e) {
            try {
                Instant at = java.time.ZonedDateTime.parse(value.trim(),
                        java.time.format.DateTimeFormatter.RFC_1123_DATE_TIME).toInstant();
                return Math.max(0, Duration.between(Instant.now(), at).getSeconds());
            } catch (java.time.format.DateTimeParseException e2) {
                return -1;
            }
        }
    }

    private static boolean validScopeToken(String s) {
        if (s == null || s.isEmpty()) {
            return false;
        }
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') {
                return false;
            }
        }
        return true;
    }

    private static byte[] bytes(String s) {
        return s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
    }

    @Override
    public String toString() {
        return "KeygateClient{base=" + base + ", clientId=" + clientId + ", signedIn=" + isSignedIn() + "}";
    }

    /** Configures a {@link KeygateClient}. */
    public static final class Builder {
        private final String base;
        private final String clientId;
        private final String redirectUri;
        private DpopKeyStore keyStore;
        private TokenStore tokenStore = new MemoryTokenStore();
        private Transport transport;
        private Clock clock = Clock.systemUTC();
        private Duration refreshMargin = Duration.ofSeconds(30);
        private SessionListener listener;
        private AttestationProvider attestationProvider;

        private Builder(String baseUrl, String clientId, String redirectUri) {
            this.base = SecureUrls.check(CallbackParser.stripSlash(Objects.requireNonNull(baseUrl, "baseUrl")));
            this.clientId = Objects.requireNonNull(clientId, "clientId");
            this.redirectUri = Objects.requireNonNull(redirectUri, "redirectUri");
            if (clientId.isEmpty()) {
                throw new IllegalArgumentException("empty client id");
            }
            URI.create(redirectUri);
        }

        /** The DPoP key (required). */
        public Builder keyStore(DpopKeyStore keyStore) {
            this.keyStore = keyStore;
            return this;
        }

        /** Where tokens are kept (default: memory). */
        public Builder tokenStore(TokenStore tokenStore) {
            this.tokenStore = tokenStore;
            return this;
        }

        /** The HTTP stack (required; see {@link Transport}). */
        public Builder transport(Transport transport) {
            this.transport = transport;
            return this;
        }

        /** The device clock (tests). */
        public Builder clock(Clock clock) {
            this.clock = clock;
            return this;
        }

        /**
         * Refresh when the access token expires within this margin (default 30 s; capped at
         * half the token's lifetime).
         */
        public Builder refreshMargin(Duration margin) {
            if (margin.isNegative()) {
                throw new IllegalArgumentException("negative margin");
            }
            this.refreshMargin = margin;
            return this;
        }

        /** Told when keygate ends the session. */
        public Builder sessionListener(SessionListener listener) {
            this.listener = listener;
            return this;
        }

        /**
         * App attestation (optional): before each sign-in (code redemption) and each refresh,
         * the client fetches a single-use challenge and sends the provider's evidence with
         * the token request. See {@link AttestationProvider}; {@code null} turns it off.
         */
        public Builder attestationProvider(AttestationProvider provider) {
            this.attestationProvider = provider;
            return this;
        }

        /** Builds the client with keygate's standard endpoint paths, without a network call. */
        public KeygateClient build() {
            requireParts();
            return new KeygateClient(this, URI.create(base + "/oauth2/authorize"), URI.create(base + "/oauth2/token"),
                    URI.create(base + "/oauth2/revoke"));
        }

        /**
         * Fetches the RFC 8414 metadata and builds the client with its endpoints, after
         * checking that the issuer is the base URL, the endpoints are https (or loopback http),
         * and ES256 proofs are accepted.
         */
        public KeygateClient discover() throws KeygateException {
            requireParts();
            HttpRequest request = new HttpRequest("GET", URI.create(base + METADATA_PATH),
                    Collections.singletonMap("Accept", "application/json"), null);
            JsonObject doc;
            try (HttpResponse response = transport.send(request)) {
                if (response.status() != 200) {
                    throw new KeygateException("metadata endpoint answered HTTP " + response.status());
                }
                doc = Json.parseObjectOrNull(response.readBody(MAX_OAUTH_BODY));
            } catch (IOException e) {
                throw new TransportException(e);
            }
            if (doc == null) {
                throw new KeygateException("metadata is not a JSON object");
            }
            String issuer = Json.string(doc, "issuer");
            if (issuer == null || !CallbackParser.stripSlash(issuer).equals(base)) {
                throw new KeygateException("metadata issuer does not match the base URL");
            }
            List<String> algs = new ArrayList<>();
            if (doc.has("dpop_signing_alg_values_supported") && doc.get("dpop_signing_alg_values_supported").isJsonArray()) {
                doc.getAsJsonArray("dpop_signing_alg_values_supported").forEach(e -> {
                    if (e.isJsonPrimitive()) {
                        algs.add(e.getAsString());
                    }
                });
            }
            if (!algs.contains("ES256")) {
                throw new KeygateException("keygate does not accept ES256 DPoP proofs");
            }
            return new KeygateClient(this, endpoint(doc, "authorization_endpoint"), endpoint(doc, "token_endpoint"),
                    endpoint(doc, "revocation_endpoint"));
        }

        private static URI endpoint(JsonObject doc, String name) throws KeygateException {
            String value = Json.string(doc, name);
            if (value == null) {
                throw new KeygateException("metadata lacks " + name);
            }
            try {
                URI uri = URI.create(value);
                SecureUrls.check(value);
                return uri;
            } catch (IllegalArgumentException e) {
                throw new KeygateException("metadata " + name + " is not a secure URL");
            }
        }

        private void requireParts() {
            Objects.requireNonNull(keyStore, "keyStore");
            Objects.requireNonNull(transport, "transport");
            Objects.requireNonNull(tokenStore, "tokenStore");
        }
    }
}
