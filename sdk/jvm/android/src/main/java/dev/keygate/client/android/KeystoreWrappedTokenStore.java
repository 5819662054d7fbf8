package dev.keygate.client.android;

import android.content.SharedPreferences;
import android.security.keystore.KeyGenParameterSpec;
import android.security.keystore.KeyProperties;
import android.util.Base64;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.keygate.client.TokenSet;
import dev.keygate.client.TokenStore;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.time.Instant;
import javax.crypto.Cipher;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;

/**
 * Tokens in SharedPreferences, encrypted with AES-256-GCM under a non-exportable key in the
 * Android Keystore (the approach EncryptedSharedPreferences took, without the deprecated
 * library). Use a preferences file excluded from backups. A value that does not decrypt
 * (key lost after a restore) reads as signed out. Not compiled by sdk/jvm/run.sh.
 */
public final class KeystoreWrappedTokenStore implements TokenStore {
    private static final String PREF = "keygate.tokens";
    private static final int IV_BYTES = 12;

    private final SharedPreferences prefs;
    private final String keyAlias;

    /** Stores into {@code prefs} under a Keystore AES key named {@code keyAlias}. */
    public KeystoreWrappedTokenStore(SharedPreferences prefs, String keyAlias) {
        this.prefs = prefs;
        this.keyAlias = keyAlias;
    }

    @Override
    public synchronized TokenSet load() {
        String stored = prefs.getString(PREF, null);
        if (stored == null) {
            return null;
        }
        try {
            byte[] blob = Base64.decode(stored, Base64.NO_WRAP);
            Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
            cipher.init(Cipher.DECRYPT_MODE, key(), new GCMParameterSpec(128, blob, 0, IV_BYTES));
            cipher.updateAAD(PREF.getBytes(StandardCharsets.UTF_8));
            byte[] json = cipher.doFinal(blob, IV_BYTES, blob.length - IV_BYTES);
            JsonObject o = JsonParser.parseString(new String(json, StandardCharsets.UTF_8)).getAsJsonObject();
            return new TokenSet(o.get("a").getAsString(), o.has("r") ? o.get("r").getAsString() : null,
                    Instant.ofEpochSecond(o.get("i").getAsLong()), Instant.ofEpochSecond(o.get("e").getAsLong()),
                    o.has("s") ? o.get("s").getAsString() : null);
        } catch (GeneralSecurityException | RuntimeException e) {
            return null; // unreadable: treated as signed out
        }
    }

    @Override
    public synchronized void save(TokenSet tokens) {
        JsonObject o = new JsonObject();
        o.addProperty("a", tokens.accessToken());
        if (tokens.refreshToken() != null) {
            o.addProperty("r", tokens.refreshToken());
        }
        o.addProperty("i", tokens.issuedAt().getEpochSecond());
        o.addProperty("e", tokens.expiresAt().getEpochSecond());
        if (tokens.scope() != null) {
            o.addProperty("s", tokens.scope());
        }
        try {
            Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
            cipher.init(Cipher.ENCRYPT_MODE, key()); // the Keystore picks a random IV
            cipher.updateAAD(PREF.getBytes(StandardCharsets.UTF_8));
            byte[] sealed = cipher.doFinal(o.toString().getBytes(StandardCharsets.UTF_8));
            byte[] iv = cipher.getIV();
            byte[] blob = new byte[iv.length + sealed.length];
            System.arraycopy(iv, 0, blob, 0, iv.length);
            System.arraycopy(sealed, 0, blob, iv.length, sealed.length);
            // commit(), not apply(): a rotated refresh token must be on disk before it is used.
            if (!prefs.edit().putString(PREF, Base64.encodeToString(blob, Base64.NO_WRAP)).commit()) {
                throw new IllegalStateException("could not persist the tokens");
            }
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("could not encrypt the tokens", e);
        }
    }

    @Override
    public synchronized void clear() {
        prefs.edit().remove(PREF).commit();
    }

    private SecretKey key() throws GeneralSecurityException {
        try {
            KeyStore ks = KeyStore.getInstance("AndroidKeyStore");
            ks.load(null);
            if (ks.getKey(keyAlias, null) instanceof SecretKey existing) {
                return existing;
            }
        } catch (java.io.IOException e) {
            throw new GeneralSecurityException("AndroidKeyStore unavailable", e);
        }
        KeyGenerator g = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, "AndroidKeyStore");
        g.init(new KeyGenParameterSpec.Builder(keyAlias, KeyProperties.PURPOSE_ENCRYPT | KeyProperties.PURPOSE_DECRYPT)
                .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                .setKeySize(256)
                .build());
        return g.generateKey();
    }

    @Override
    public String toString() {
        return "KeystoreWrappedTokenStore{alias=" + keyAlias + "}";
    }
}
