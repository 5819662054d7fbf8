package dev.keygate.client;

import java.io.IOException;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.ProviderException;
import java.security.Signature;
import java.security.cert.Certificate;
import java.security.interfaces.ECPublicKey;
import java.util.Objects;

/**
 * A DPoP key that lives inside a JCA {@link KeyStore} provider which creates and keeps
 * non-exportable keys (Android's {@code AndroidKeyStore}, a PKCS#11 HSM). The key is looked
 * up by alias; if absent it is created by the given {@link KeyFactory}, inside the provider.
 *
 * <p>If the provider refuses to create the key, {@link #open} throws
 * {@link KeyCreationException}: there is deliberately no fallback to a software key.
 * Signatures come from {@code SHA256withECDSA} as DER and are converted to R‖S.
 */
public final class KeystoreBackedDpopKeyStore implements DpopKeyStore {
    /** Creates the key inside the provider under {@code alias} (e.g. with a KeyGenParameterSpec). */
    @FunctionalInterface
    public interface KeyFactory {
        /** Generates the key pair inside the key store; throws if the platform refuses. */
        KeyPair generate(String alias) throws GeneralSecurityException;
    }

    private final PrivateKey privateKey;
    private final EcPublicJwk jwk;
    private final String signatureProvider;

    private KeystoreBackedDpopKeyStore(PrivateKey privateKey, ECPublicKey publicKey, String signatureProvider) {
        this.privateKey = privateKey;
        this.jwk = EcPublicJwk.of(publicKey);
        this.signatureProvider = signatureProvider;
    }

    /**
     * Opens the key under {@code alias} in the loaded {@code keyStore}, creating it with
     * {@code factory} if missing.
     *
     * @param signatureProvider the JCA provider for {@code Signature}, or {@code null} for the
     *     default selection (which picks the key's own provider on Android)
     * @throws KeyCreationException if the key did not exist and could not be created
     * @throws DpopKeyStoreException if the key store could not be read
     */
    public static KeystoreBackedDpopKeyStore open(KeyStore keyStore, String alias, KeyFactory factory, String signatureProvider)
            throws DpopKeyStoreException {
        Objects.requireNonNull(keyStore, "keyStore");
        Objects.requireNonNull(alias, "alias");
        Objects.requireNonNull(factory, "factory");
        try {
            if (keyStore.containsAlias(alias)) {
                Certificate cert = keyStore.getCertificate(alias);
                if (keyStore.getKey(alias, null) instanceof PrivateKey key
                        && cert != null && cert.getPublicKey() instanceof ECPublicKey pub) {
                    return new KeystoreBackedDpopKeyStore(key, pub, signatureProvider);
                }
                throw new DpopKeyStoreException("the key store entry is not an EC key pair");
            }
        } catch (GeneralSecurityException e) {
            throw new DpopKeyStoreException("cannot read the key store (" + e.getClass().getSimpleName() + ")", e);
        }
        KeyPair pair;
        try {
            pair = factory.generate(alias);
        } catch (GeneralSecurityException | ProviderException e) {
            throw new KeyCreationException("the key store refused to create the DPoP key ("
                    + e.getClass().getSimpleName() + ")", e);
        }
        if (pair == null || !(pair.getPublic() instanceof ECPublicKey pub) || pair.getPrivate() == null) {
            throw new KeyCreationException("the key store did not return an EC key pair", null);
        }
        return new KeystoreBackedDpopKeyStore(pair.getPrivate(), pub, signatureProvider);
    }

    /** Loads a key store type (e.g. {@code "AndroidKeyStore"}) with no stream or password. */
    public static KeyStore loadKeyStore(String type) throws DpopKeyStoreException {
        try {
            KeyStore ks = KeyStore.getInstance(type);
            ks.load(null);
            return ks;
        } catch (GeneralSecurityException | IOException e) {
            throw new DpopKeyStoreException("key store " + type + " is unavailable", e);
        }
    }

    @Override
    public EcPublicJwk publicJwk() {
        return jwk;
    }

    @Override
    public byte[] sign(byte[] signingInput) throws DpopKeyStoreException {
        try {
            Signature s = signatureProvider == null
                    ? Signature.getInstance("SHA256withECDSA")
                    : Signature.getInstance("SHA256withECDSA", signatureProvider);
            s.initSign(privateKey);
            s.update(signingInput);
            return EcSignatures.derToRaw(s.sign());
        } catch (GeneralSecurityException | ProviderException | IllegalArgumentException e) {
            // e.g. UserNotAuthenticatedException, KeyPermanentlyInvalidatedException on Android.
            throw new DpopKeyStoreException("the key store refused to sign (" + e.getClass().getSimpleName() + ")", e);
        }
    }

    @Override
    public String toString() {
        return "KeystoreBackedDpopKeyStore{jkt=" + jwk.thumbprint() + "}";
    }
}
