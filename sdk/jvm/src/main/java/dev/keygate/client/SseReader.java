package dev.keygate.client;

import java.io.BufferedReader;
import java.io.Closeable;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;

/**
 * Reads a {@code text/event-stream} body one event at a time, as the events arrive
 * (WHATWG HTML §9.2 parsing, minus reconnection).
 */
public final class SseReader implements Closeable {
    private final BufferedReader reader;

    /** Reads events from {@code body} (UTF-8). */
    public SseReader(InputStream body) {
        this.reader = new BufferedReader(new InputStreamReader(body, StandardCharsets.UTF_8));
    }

    /** The next event, blocking until it is complete; {@code null} at the end of the stream. */
    public ServerSentEvent next() throws IOException {
        StringBuilder data = null;
        String event = null;
        String id = null;
        String line;
        while ((line = reader.readLine()) != null) {
            if (line.isEmpty()) {
                if (data != null) {
                    return new ServerSentEvent(event == null ? "message" : event, data.toString(), id);
                }
                event = null;
                continue;
            }
            if (line.startsWith(":")) {
                continue;
            }
            int colon = line.indexOf(':');
            String field = colon < 0 ? line : line.substring(0, colon);
            String value = colon < 0 ? "" : line.substring(colon + 1);
            if (value.startsWith(" ")) {
                value = value.substring(1);
            }
            switch (field) {
                case "data" -> data = data == null ? new StringBuilder(value) : data.append('\n').append(value);
                case "event" -> event = value;
                case "id" -> id = value;
                default -> { } // retry and unknown fields are ignored
            }
        }
        return data == null ? null : new ServerSentEvent(event == null ? "message" : event, data.toString(), id);
    }

    @Override
    public void close() throws IOException {
        reader.close();
    }
}
