package dev.keygate.client.android;

import android.os.Build;
import android.security.keystore.KeyGenParameterSpec;
import android.security.keystore.KeyProperties;
import android.security.keystore.StrongBoxUnavailableException;
import dev.keygate.client.DpopKeyStore;
import dev.keygate.client.DpopKeyStoreException;
import dev.keygate.client.EcPublicJwk;
import dev.keygate.client.KeyCreationException;
import dev.keygate.client.KeystoreBackedDpopKeyStore;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.spec.ECGenParameterSpec;

/**
 * The DPoP key inside the Android Keystore: a non-exportable P-256 signing key generated in
 * StrongBox when the device has one, else in the TEE. Never falls back to a software key: if
 * the Keystore refuses to create the key, {@link Builder#build()} throws
 * {@link KeyCreationException}.
 *
 * <p>Not compiled by sdk/jvm/run.sh (no Android SDK there); the logic it relies on
 * ({@link KeystoreBackedDpopKeyStore}, DER→R‖S) is compiled and tested on the JVM.
 *
 * <pre>{@code
 * val keys = AndroidKeystoreDpopKeyStore.builder("keygate-dpop").build()
 * }</pre>
 */
public final class AndroidKeystoreDpopKeyStore implements DpopKeyStore {
    /** The JCA provider name of the Android Keystore. */
    public static final String PROVIDER = "AndroidKeyStore";

    private final KeystoreBackedDpopKeyStore delegate;
    private final boolean createdInStrongBox;

    private AndroidKeystoreDpopKeyStore(KeystoreBackedDpopKeyStore delegate, boolean createdInStrongBox) {
        this.delegate = delegate;
        this.createdInStrongBox = createdInStrongBox;
    }

    /** A builder for the key under {@code alias} (created on first use, then reused). */
    public static Builder builder(String alias) {
        return new Builder(alias);
    }

    /** Whether this call created the key in StrongBox (false if it was created in the TEE or earlier). */
    public boolean createdInStrongBox() {
        return createdInStrongBox;
    }

    /** Deletes the key (e.g. on account removal); tokens bound to it become useless. */
    public static void delete(String alias) throws DpopKeyStoreException {
        try {
            KeystoreBackedDpopKeyStore.loadKeyStore(PROVIDER).deleteEntry(alias);
        } catch (java.security.KeyStoreException e) {
            throw new DpopKeyStoreException("cannot delete the DPoP key", e);
        }
    }

    @Override
    public EcPublicJwk publicJwk() {
        return delegate.publicJwk();
    }

    @Override
    public byte[] sign(byte[] signingInput) throws DpopKeyStoreException {
        // SHA256withECDSA in the Keystore returns DER; the delegate converts it to R||S.
        return delegate.sign(signingInput);
    }

    @Override
    public String toString() {
        return "AndroidKeystoreDpopKeyStore{" + delegate + "}";
    }

    /** Configures the Keystore key. */
    public static final class Builder {
        private final String alias;
        private boolean preferStrongBox = true;
        private boolean userAuthenticationRequired;
        private int userAuthenticationTimeoutSeconds = 300;

        private Builder(String alias) {
            this.alias = alias;
        }

        /** Try StrongBox first (default true); falls back to the TEE when the device has none. */
        public Builder preferStrongBox(boolean prefer) {
            this.preferStrongBox = prefer;
            return this;
        }

        /**
         * Require the user to have authenticated (biometric or device credential) within
         * {@code timeoutSeconds} before each signature. Proofs are signed per request, so a
         * timeout of 0 (per-use prompt) is not supported here: signing would fail with
         * {@code UserNotAuthenticatedException} surfaced as {@link DpopKeyStoreException}.
         */
        public Builder userAuthenticationRequired(boolean required, int timeoutSeconds) {
            if (required && timeoutSeconds <= 0) {
                throw new IllegalArgumentException("timeoutSeconds must be positive");
            }
            this.userAuthenticationRequired = required;
            this.userAuthenticationTimeoutSeconds = timeoutSeconds;
            return this;
        }

        /**
         * Opens the key, creating it if missing.
         *
         * @throws KeyCreationException the Keystore refused to create the key
         */
        public AndroidKeystoreDpopKeyStore build() throws DpopKeyStoreException {
            KeyStore keyStore = KeystoreBackedDpopKeyStore.loadKeyStore(PROVIDER);
            boolean[] strongBox = {false};
            KeystoreBackedDpopKeyStore delegate = KeystoreBackedDpopKeyStore.open(keyStore, alias, a -> {
                if (preferStrongBox && Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
                    try {
                        KeyPair pair = generate(spec(a, true));
                        strongBox[0] = true;
                        return pair;
                    } catch (StrongBoxUnavailableException noStrongBox) {
                        // No StrongBox on this device: the TEE below, still hardware-backed.
                    }
                }
                return generate(spec(a, false));
            }, null);
            return new AndroidKeystoreDpopKeyStore(delegate, strongBox[0]);
        }

        private KeyGenParameterSpec spec(String a, boolean strongBox) {
            KeyGenParameterSpec.Builder b = new KeyGenParameterSpec.Builder(a, KeyProperties.PURPOSE_SIGN)
                    .setAlgorithmParameterSpec(new ECGenParameterSpec("secp256r1"))
                    .setDigests(KeyProperties.DIGEST_SHA256);
            if (strongBox) {
                b.setIsStrongBoxBacked(true);
            }
            if (userAuthenticationRequired) {
                b.setUserAuthenticationRequired(true);
                if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.R) {
                    b.setUserAuthenticationParameters(userAuthenticationTimeoutSeconds,
                            KeyProperties.AUTH_BIOMETRIC_STRONG | KeyProperties.AUTH_DEVICE_CREDENTIAL);
                } else {
                    b.setUserAuthenticationValidityDurationSeconds(userAuthenticationTimeoutSeconds);
                }
            }
            return b.build();
        }

        private static KeyPair generate(KeyGenParameterSpec spec) throws GeneralSecurityException {
            KeyPairGenerator generator = KeyPairGenerator.getInstance(KeyProperties.KEY_ALGORITHM_EC, PROVIDER);
            generator.initialize(spec);
            return generator.generateKeyPair();
        }
    }
}
