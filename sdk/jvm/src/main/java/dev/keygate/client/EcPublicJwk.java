package dev.keygate.client;

import com.google.gson.JsonObject;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.security.interfaces.ECPublicKey;
import java.util.Objects;

/**
 * A P-256 public key as a JWK ({@code kty} EC, {@code crv} P-256): the base64url of the
 * 32-byte big-endian coordinates. Public data only.
 */
public final class EcPublicJwk {
    private final String x;
    private final String y;

    /** A JWK from base64url coordinates (each must decode to 32 bytes). */
    public EcPublicJwk(String x, String y) {
        this.x = Objects.requireNonNull(x, "x");
        this.y = Objects.requireNonNull(y, "y");
        if (Base64Url.decode(x).length != EcSignatures.COORDINATE_BYTES
                || Base64Url.decode(y).length != EcSignatures.COORDINATE_BYTES) {
            throw new IllegalArgumentException("P-256 coordinates must be 32 bytes");
        }
    }

    /** The JWK of a JCA (or Android Keystore) P-256 public key. */
    public static EcPublicJwk of(ECPublicKey key) {
        if (key.getParams().getCurve().getField().getFieldSize() != 256) {
            throw new IllegalArgumentException("not a P-256 key");
        }
        return new EcPublicJwk(
                Base64Url.encode(coordinate(key.getW().getAffineX())),
                Base64Url.encode(coordinate(key.getW().getAffineY())));
    }

    /** A coordinate as exactly 32 unsigned big-endian bytes. */
    static byte[] coordinate(BigInteger value) {
        byte[] bytes = value.toByteArray();
        byte[] out = new byte[EcSignatures.COORDINATE_BYTES];
        int copy = Math.min(bytes.length, out.length);
        System.arraycopy(bytes, bytes.length - copy, out, out.length - copy, copy);
        return out;
    }

    /** base64url X coordinate. */
    public String x() {
        return x;
    }

    /** base64url Y coordinate. */
    public String y() {
        return y;
    }

    /** {@code {"kty":"EC","crv":"P-256","x":…,"y":…}} for a proof header. */
    JsonObject toJson() {
        JsonObject o = new JsonObject();
        o.addProperty("kty", "EC");
        o.addProperty("crv", "P-256");
        o.addProperty("x", x);
        o.addProperty("y", y);
        return o;
    }

    /**
     * The RFC 7638 thumbprint: base64url(SHA-256) of the required members in
     * lexicographic order without whitespace. This is {@code dpop_jkt} and {@code cnf.jkt}.
     */
    public String thumbprint() {
        String canonical = "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"" + x + "\",\"y\":\"" + y + "\"}";
        return Base64Url.encode(Base64Url.sha256(canonical.getBytes(StandardCharsets.UTF_8)));
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof EcPublicJwk other && x.equals(other.x) && y.equals(other.y);
    }

    @Override
    public int hashCode() {
        return Objects.hash(x, y);
    }

    @Override
    public String toString() {
        return "EcPublicJwk{jkt=" + thumbprint() + "}";
    }
}
