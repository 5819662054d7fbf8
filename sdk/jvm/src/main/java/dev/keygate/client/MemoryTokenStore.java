package dev.keygate.client;

import java.util.concurrent.atomic.AtomicReference;

/** A {@link TokenStore} in process memory: tokens are gone when the process ends. */
public final class MemoryTokenStore implements TokenStore {
    private final AtomicReference<TokenSet> tokens = new AtomicReference<>();

    @Override
    public TokenSet load() {
        return tokens.get();
    }

    @Override
    public void save(TokenSet tokens) {
        this.tokens.set(tokens);
    }

    @Override
    public void clear() {
        tokens.set(null);
    }

    @Override
    public String toString() {
        return "MemoryTokenStore{" + tokens.get() + "}";
    }
}
