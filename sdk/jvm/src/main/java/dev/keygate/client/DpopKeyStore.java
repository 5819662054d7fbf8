package dev.keygate.client;

/**
 * Where the device's P-256 DPoP key lives. It never hands out the private key: it offers
 * the public JWK and a signing operation, which is what a hardware keystore (Android
 * Keystore / StrongBox) can do.
 *
 * <p>Implementations must be thread-safe: proofs are signed concurrently.
 */
public interface DpopKeyStore {
    /** The public key. */
    EcPublicJwk publicJwk() throws DpopKeyStoreException;

    /**
     * Signs {@code signingInput} (the ASCII {@code header.payload} of a JWS) with ECDSA P-256
     * over SHA-256 and returns the 64-byte R‖S. Platforms that give DER convert with
     * {@link EcSignatures#derToRaw(byte[])}.
     */
    byte[] sign(byte[] signingInput) throws DpopKeyStoreException;

    /** The RFC 7638 thumbprint of the public key ({@code dpop_jkt}). */
    default String thumbprint() throws DpopKeyStoreException {
        return publicJwk().thumbprint();
    }
}
