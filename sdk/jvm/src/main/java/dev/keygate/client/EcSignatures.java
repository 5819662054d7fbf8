package dev.keygate.client;

import java.io.ByteArrayOutputStream;
import java.util.Arrays;

/**
 * Converts ECDSA P-256 signatures between ASN.1 DER ({@code SEQUENCE {INTEGER r, INTEGER s}},
 * what Android Keystore and JCA's {@code SHA256withECDSA} produce) and the 64-byte R‖S that
 * JWS needs (RFC 7518 §3.4).
 */
public final class EcSignatures {
    /** Bytes in one P-256 coordinate or signature half. */
    public static final int COORDINATE_BYTES = 32;

    private EcSignatures() {}

    /**
     * DER → 64-byte R‖S.
     *
     * @throws IllegalArgumentException if {@code der} is not a well-formed P-256 signature
     */
    public static byte[] derToRaw(byte[] der) {
        if (der == null || der.length < 8 || der[0] != 0x30) {
            throw new IllegalArgumentException("not a DER ECDSA signature");
        }
        int[] pos = {1};
        int seqLen = readLength(der, pos);
        if (pos[0] + seqLen != der.length) {
            throw new IllegalArgumentException("DER signature length mismatch");
        }
        byte[] r = readInteger(der, pos);
        byte[] s = readInteger(der, pos);
        if (pos[0] != der.length) {
            throw new IllegalArgumentException("trailing bytes after DER signature");
        }
        byte[] raw = new byte[2 * COORDINATE_BYTES];
        System.arraycopy(r, 0, raw, COORDINATE_BYTES - r.length, r.length);
        System.arraycopy(s, 0, raw, 2 * COORDINATE_BYTES - s.length, s.length);
        return raw;
    }

    /** 64-byte R‖S → DER (minimal INTEGER encodings). */
    public static byte[] rawToDer(byte[] raw) {
        if (raw == null || raw.length != 2 * COORDINATE_BYTES) {
            throw new IllegalArgumentException("raw signature must be 64 bytes");
        }
        byte[] r = derInteger(Arrays.copyOfRange(raw, 0, COORDINATE_BYTES));
        byte[] s = derInteger(Arrays.copyOfRange(raw, COORDINATE_BYTES, 2 * COORDINATE_BYTES));
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(0x30);
        out.write(r.length + s.length); // at most 70: short form
        out.write(r, 0, r.length);
        out.write(s, 0, s.length);
        return out.toByteArray();
    }

    private static int readLength(byte[] der, int[] pos) {
        if (pos[0] >= der.length) {
            throw new IllegalArgumentException("truncated DER");
        }
        int first = der[pos[0]++] & 0xff;
        if (first < 0x80) {
            return first;
        }
        if (first != 0x81 || pos[0] >= der.length) {
            throw new IllegalArgumentException("unsupported DER length");
        }
        int len = der[pos[0]++] & 0xff;
        if (len < 0x80) {
            throw new IllegalArgumentException("non-minimal DER length");
        }
        return len;
    }

    /** Reads an INTEGER, returns its magnitude without leading zeros (at most 32 bytes). */
    private static byte[] readInteger(byte[] der, int[] pos) {
        if (pos[0] >= der.length || der[pos[0]++] != 0x02) {
            throw new IllegalArgumentException("expected DER INTEGER");
        }
        int len = readLength(der, pos);
        if (len == 0 || pos[0] + len > der.length) {
            throw new IllegalArgumentException("bad DER INTEGER length");
        }
        int start = pos[0];
        pos[0] += len;
        if ((der[start] & 0x80) != 0) {
            throw new IllegalArgumentException("negative DER INTEGER");
        }
        while (start < pos[0] - 1 && der[start] == 0) {
            start++;
        }
        int magnitude = pos[0] - start;
        if (magnitude > COORDINATE_BYTES) {
            throw new IllegalArgumentException("DER INTEGER too large for P-256");
        }
        return Arrays.copyOfRange(der, start, pos[0]);
    }

    private static byte[] derInteger(byte[] unsigned) {
        int start = 0;
        while (start < unsigned.length - 1 && unsigned[start] == 0) {
            start++;
        }
        boolean pad = (unsigned[start] & 0x80) != 0;
        int len = unsigned.length - start + (pad ? 1 : 0);
        byte[] out = new byte[2 + len];
        out[0] = 0x02;
        out[1] = (byte) len;
        System.arraycopy(unsigned, start, out, 2 + (pad ? 1 : 0), unsigned.length - start);
        return out;
    }
}
