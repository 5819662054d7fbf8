package dev.keygate.client;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Signature;
import java.security.cert.Certificate;
import java.security.interfaces.ECPublicKey;
import java.security.spec.ECGenParameterSpec;

/**
 * A software P-256 key (JCA): in memory for tests and short-lived tools, or in a
 * password-protected PKCS#12 file (created owner-only where the file system has POSIX
 * permissions) for JVM servers. On a phone use a hardware-backed store instead.
 */
public final class SoftwareDpopKeyStore implements DpopKeyStore {
    /** The alias of the key entry in a PKCS#12 file. */
    public static final String ALIAS = "keygate-dpop";

    private final PrivateKey privateKey;
    private final EcPublicJwk jwk;

    private SoftwareDpopKeyStore(PrivateKey privateKey, ECPublicKey publicKey) {
        this.privateKey = privateKey;
        this.jwk = EcPublicJwk.of(publicKey);
    }

    /** A fresh key held in memory only. */
    public static SoftwareDpopKeyStore generate() throws DpopKeyStoreException {
        KeyPair pair = newKeyPair();
        return new SoftwareDpopKeyStore(pair.getPrivate(), (ECPublicKey) pair.getPublic());
    }

    /** Wraps an existing P-256 key pair (e.g. from the application's own key management). */
    public static SoftwareDpopKeyStore of(KeyPair pair) {
        if (!(pair.getPublic() instanceof ECPublicKey pub)) {
            throw new IllegalArgumentException("not an EC key pair");
        }
        return new SoftwareDpopKeyStore(pair.getPrivate(), pub);
    }

    /**
     * Loads the key from a PKCS#12 file, or creates the file with a fresh key if it does not
     * exist. The same key across restarts keeps the tokens bound to it usable.
     */
    public static SoftwareDpopKeyStore openOrCreate(Path file, char[] password) throws DpopKeyStoreException {
        try {
            if (Files.exists(file)) {
                return load(file, password);
            }
            KeyPair pair = newKeyPair();
            KeyStore ks = KeyStore.getInstance("PKCS12");
            ks.load(null, null);
            Certificate cert = SelfSignedCertificate.create(pair, ALIAS);
            ks.setKeyEntry(ALIAS, pair.getPrivate(), password, new Certificate[] {cert});
            try (OutputStream out = createOwnerOnly(file)) {
                ks.store(out, password);
            } catch (FileAlreadyExistsException raced) {
                return load(file, password);
            }
            return new SoftwareDpopKeyStore(pair.getPrivate(), (ECPublicKey) pair.getPublic());
        } catch (IOException | GeneralSecurityException e) {
            throw new DpopKeyStoreException("cannot open or create the key file (" + e.getClass().getSimpleName() + ")", e);
        }
    }

    private static SoftwareDpopKeyStore load(Path file, char[] password) throws IOException, GeneralSecurityException {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(file)) {
            ks.load(in, password);
        }
        if (!(ks.getKey(ALIAS, password) instanceof PrivateKey key)
                || !(ks.getCertificate(ALIAS).getPublicKey() instanceof ECPublicKey pub)) {
            throw new GeneralSecurityException("the file holds no EC key entry named " + ALIAS);
        }
        return new SoftwareDpopKeyStore(key, pub);
    }

    private static OutputStream createOwnerOnly(Path file) throws IOException {
        if (file.getFileSystem().supportedFileAttributeViews().contains("posix")) {
            Files.createFile(file, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
            return Files.newOutputStream(file, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING);
        }
        return Files.newOutputStream(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
    }

    private static KeyPair newKeyPair() throws DpopKeyStoreException {
        try {
            KeyPairGenerator gen = KeyPairGenerator.getInstance("EC");
            gen.initialize(new ECGenParameterSpec("secp256r1"));
            return gen.generateKeyPair();
        } catch (GeneralSecurityException e) {
            throw new KeyCreationException("cannot generate a P-256 key", e);
        }
    }

    @Override
    public EcPublicJwk publicJwk() {
        return jwk;
    }

    @Override
    public byte[] sign(byte[] signingInput) throws DpopKeyStoreException {
        try {
            Signature s = Signature.getInstance("SHA256withECDSA");
            s.initSign(privateKey);
            s.update(signingInput);
            return EcSignatures.derToRaw(s.sign());
        } catch (GeneralSecurityException | IllegalArgumentException e) {
            throw new DpopKeyStoreException("signing failed (" + e.getClass().getSimpleName() + ")", e);
        }
    }

    @Override
    public String toString() {
        return "SoftwareDpopKeyStore{jkt=" + jwk.thumbprint() + ", key=[REDACTED]}";
    }
}
