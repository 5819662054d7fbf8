package dev.keygate.client;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.SecureRandom;
import java.security.Signature;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;

/**
 * The smallest X.509 certificate that lets a PKCS#12 file hold a private key entry (JCA
 * requires a chain). It is never sent anywhere; only its public key matters. Internal.
 */
final class SelfSignedCertificate {
    private static final byte[] ECDSA_WITH_SHA256 = {0x06, 0x08, 0x2a, (byte) 0x86, 0x48, (byte) 0xce, 0x3d, 0x04, 0x03, 0x02};
    private static final byte[] COMMON_NAME = {0x06, 0x03, 0x55, 0x04, 0x03};

    private SelfSignedCertificate() {}

    static X509Certificate create(KeyPair pair, String commonName) throws GeneralSecurityException {
        byte[] algorithm = tlv(0x30, ECDSA_WITH_SHA256);
        byte[] name = tlv(0x30, tlv(0x31, tlv(0x30, concat(COMMON_NAME,
                tlv(0x0c, commonName.getBytes(StandardCharsets.UTF_8))))));
        String notBefore = ZonedDateTime.now(ZoneOffset.UTC).minusDays(1)
                .format(DateTimeFormatter.ofPattern("yyMMddHHmmss'Z'"));
        byte[] validity = tlv(0x30, concat(
                tlv(0x17, notBefore.getBytes(StandardCharsets.US_ASCII)),
                // RFC 5280 §4.1.2.5: no well-defined expiration date.
                tlv(0x18, "99991231235959Z".getBytes(StandardCharsets.US_ASCII))));
        byte[] serial = new BigInteger(63, new SecureRandom()).add(BigInteger.ONE).toByteArray();
        byte[] tbs = tlv(0x30, concat(
                new byte[] {(byte) 0xa0, 0x03, 0x02, 0x01, 0x02}, // [0] version v3
                tlv(0x02, serial),
                algorithm,
                name,
                validity,
                name,
                pair.getPublic().getEncoded()));
        Signature signer = Signature.getInstance("SHA256withECDSA");
        signer.initSign(pair.getPrivate());
        signer.update(tbs);
        byte[] signature = signer.sign();
        byte[] bitString = new byte[signature.length + 1];
        System.arraycopy(signature, 0, bitString, 1, signature.length);
        byte[] certificate = tlv(0x30, concat(tbs, algorithm, tlv(0x03, bitString)));
        return (X509Certificate) CertificateFactory.getInstance("X.509")
                .generateCertificate(new ByteArrayInputStream(certificate));
    }

    private static byte[] tlv(int tag, byte[] content) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(tag);
        int len = content.length;
        if (len < 0x80) {
            out.write(len);
        } else if (len < 0x100) {
            out.write(0x81);
            out.write(len);
        } else {
            out.write(0x82);
            out.write(len >> 8);
            out.write(len & 0xff);
        }
        out.write(content, 0, content.length);
        return out.toByteArray();
    }

    private static byte[] concat(byte[]... parts) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (byte[] p : parts) {
            out.write(p, 0, p.length);
        }
        return out.toByteArray();
    }
}
