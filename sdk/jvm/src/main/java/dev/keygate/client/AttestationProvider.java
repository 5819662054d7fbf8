package dev.keygate.client;

import java.util.Objects;

/**
 * Produces the platform's app attestation for a token request (set with
 * {@link KeygateClient.Builder#attestationProvider(AttestationProvider)}).
 *
 * <p>Before each authorization code redemption and each refresh the client fetches a
 * single-use challenge from keygate ({@code POST /oauth2/attestation/challenge}), calls
 * {@link #attest(AttestationRequest)} and sends the evidence with the token request. A
 * request the client retries (a server nonce, a clock correction) gets a new challenge and
 * a new call. Attestation never locks the user out: if the challenge cannot be had (keygate
 * has no attestation for this client, network failure) the token request goes without it,
 * and if the provider throws or returns {@code null} it goes as {@code attestation_type=none};
 * keygate then issues an {@code unattested} token.
 *
 * <p>Called on the thread making the token request; refreshes hold the client's refresh
 * lock meanwhile, so a slow provider delays other callers waiting for the new token. The
 * client never logs or shows the evidence.
 */
@FunctionalInterface
public interface AttestationProvider {
    /**
     * Returns evidence over {@link AttestationRequest#clientData()} ({@code clientDataHash}
     * for App Attest, {@code nonce} for Play Integrity), or {@link Evidence#none()} when this
     * device cannot attest.
     */
    Evidence attest(AttestationRequest request) throws Exception;

    /** The evidence sent with a token request. Immutable; {@link #toString()} shows the type only. */
    final class Evidence {
        /** {@code attestation_type} without evidence. */
        public static final String NONE = "none";
        /** {@code attestation_type} of Apple App Attest. */
        public static final String APPLE_APP_ATTEST = "apple-app-attest";
        /** {@code attestation_type} of Google Play Integrity. */
        public static final String PLAY_INTEGRITY = "play-integrity";

        private static final Evidence NO_EVIDENCE = new Evidence(NONE, null, null, null);

        private final String type;
        private final String attestation;
        private final String keyId;
        private final String assertion;

        private Evidence(String type, String attestation, String keyId, String assertion) {
            this.type = type;
            this.attestation = attestation;
            this.keyId = keyId;
            this.assertion = assertion;
        }

        /** No evidence (the platform cannot attest): the token is {@code unattested}. */
        public static Evidence none() {
            return NO_EVIDENCE;
        }

        /** A Play Integrity token (standard or classic request) over {@link AttestationRequest#nonce()}. */
        public static Evidence playIntegrity(String token) {
            return new Evidence(PLAY_INTEGRITY, nonEmpty(token, "token"), null, null);
        }

        /**
         * App Attest at sign-in: the key id and the attestation object from
         * {@code attestKey(keyId, clientDataHash)}, both base64url.
         */
        public static Evidence appAttest(String keyId, String attestation) {
            return new Evidence(APPLE_APP_ATTEST, nonEmpty(attestation, "attestation"), nonEmpty(keyId, "keyId"), null);
        }

        /**
         * App Attest at a refresh: the assertion from
         * {@code generateAssertion(keyId, clientDataHash)}, base64url.
         */
        public static Evidence appAttestAssertion(String assertion) {
            return new Evidence(APPLE_APP_ATTEST, null, null, nonEmpty(assertion, "assertion"));
        }

        private static String nonEmpty(String value, String name) {
            Objects.requireNonNull(value, name);
            if (value.isEmpty()) {
                throw new IllegalArgumentException("empty " + name);
            }
            return value;
        }

        /** {@code attestation_type}: {@link #NONE}, {@link #APPLE_APP_ATTEST} or {@link #PLAY_INTEGRITY}. */
        public String type() {
            return type;
        }

        /** {@code attestation}: the App Attest attestation object or the Play Integrity token; or {@code null}. */
        public String attestation() {
            return attestation;
        }

        /** {@code attestation_key_id}: the App Attest key id, or {@code null}. */
        public String keyId() {
            return keyId;
        }

        /** {@code attestation_assertion}: the App Attest assertion, or {@code null}. */
        public String assertion() {
            return assertion;
        }

        @Override
        public boolean equals(Object o) {
            if (!(o instanceof Evidence)) {
                return false;
            }
            Evidence e = (Evidence) o;
            return type.equals(e.type) && Objects.equals(attestation, e.attestation) && Objects.equals(keyId, e.keyId)
                    && Objects.equals(assertion, e.assertion);
        }

        @Override
        public int hashCode() {
            return Objects.hash(type, attestation, keyId, assertion);
        }

        @Override
        public String toString() {
            return "Evidence{type=" + type + "}";
        }
    }
}
