package dev.keygate.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.ProviderException;
import java.security.cert.Certificate;
import java.security.spec.ECGenParameterSpec;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class KeyStoresTest {
    @Test
    void pkcs12FileKeepsTheKeyAcrossOpens(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("dpop.p12");
        char[] password = "correct horse".toCharArray();
        SoftwareDpopKeyStore first = SoftwareDpopKeyStore.openOrCreate(file, password);
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(file)));
        SoftwareDpopKeyStore again = SoftwareDpopKeyStore.openOrCreate(file, password);
        assertEquals(first.thumbprint(), again.thumbprint());
        Proofs.verify(DpopProof.create(again, "GET", URI.create("https://g.example/x"), 1, null, null));
        DpopKeyStoreException wrong = assertThrows(DpopKeyStoreException.class,
                () -> SoftwareDpopKeyStore.openOrCreate(file, "wrong".toCharArray()));
        assertFalse(wrong.getMessage().contains("correct horse"));
        assertNotEquals(first.thumbprint(), SoftwareDpopKeyStore.generate().thumbprint());
    }

    @Test
    void platformStoreThatRefusesToCreateAKeyThrowsTypedAndNeverFallsBack() throws Exception {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        ks.load(null, null);
        AtomicInteger attempts = new AtomicInteger();
        KeyCreationException e = assertThrows(KeyCreationException.class,
                () -> KeystoreBackedDpopKeyStore.open(ks, "dpop", alias -> {
                    attempts.incrementAndGet();
                    throw new ProviderException("Failed to generate key pair (keystore refused)");
                }, null));
        assertEquals(1, attempts.get());
        assertInstanceOf(ProviderException.class, e.getCause());
        assertTrue(e.getMessage().contains("refused to create"));
        // And a checked platform refusal, e.g. InvalidAlgorithmParameterException.
        assertThrows(KeyCreationException.class, () -> KeystoreBackedDpopKeyStore.open(ks, "dpop", alias -> {
            throw new java.security.InvalidAlgorithmParameterException("no StrongBox, no TEE");
        }, null));
        assertThrows(KeyCreationException.class, () -> KeystoreBackedDpopKeyStore.open(ks, "dpop", alias -> null, null));
    }

    @Test
    void platformStoreCreatesOnceThenLoadsByAlias() throws Exception {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        ks.load(null, null);
        AtomicInteger created = new AtomicInteger();
        KeystoreBackedDpopKeyStore.KeyFactory factory = alias -> {
            created.incrementAndGet();
            KeyPairGenerator g = KeyPairGenerator.getInstance("EC");
            g.initialize(new ECGenParameterSpec("secp256r1"));
            var pair = g.generateKeyPair();
            // Like AndroidKeyStore, the provider keeps the generated key under the alias.
            ks.setKeyEntry(alias, pair.getPrivate(), null,
                    new Certificate[] {SelfSignedCertificate.create(pair, alias)});
            return pair;
        };
        KeystoreBackedDpopKeyStore a = KeystoreBackedDpopKeyStore.open(ks, "dpop", factory, null);
        KeystoreBackedDpopKeyStore b = KeystoreBackedDpopKeyStore.open(ks, "dpop", factory, null);
        assertEquals(1, created.get());
        assertEquals(a.thumbprint(), b.thumbprint());
        Proofs.verify(DpopProof.create(b, "POST", URI.create("https://g.example/t"), 5, "n", "at"));
    }

    @Test
    void signingFailureIsTyped() throws Exception {
        DpopKeyStore refusing = new DpopKeyStore() {
            @Override
            public EcPublicJwk publicJwk() throws DpopKeyStoreException {
                return SoftwareDpopKeyStore.generate().publicJwk();
            }

            @Override
            public byte[] sign(byte[] input) {
                return new byte[70]; // a DER signature passed through unconverted
            }
        };
        assertThrows(DpopKeyStoreException.class,
                () -> DpopProof.create(refusing, "GET", URI.create("https://g.example/x"), 1, null, null));
    }
}
