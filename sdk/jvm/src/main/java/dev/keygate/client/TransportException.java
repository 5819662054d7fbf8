package dev.keygate.client;

import java.io.IOException;

/** keygate could not be reached, or the connection failed while reading the answer. */
public final class TransportException extends KeygateException {
    private static final long serialVersionUID = 1L;

    /** Wraps the {@link IOException} a {@link Transport} threw. */
    public TransportException(IOException cause) {
        super("HTTP transport failed: " + cause.getClass().getSimpleName(), cause);
    }
}
