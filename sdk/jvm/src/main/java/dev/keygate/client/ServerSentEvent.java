package dev.keygate.client;

/** One event of a {@code text/event-stream} body. */
public final class ServerSentEvent {
    private final String event;
    private final String data;
    private final String id;

    ServerSentEvent(String event, String data, String id) {
        this.event = event;
        this.data = data;
        this.id = id;
    }

    /** The {@code event} field, or {@code "message"} when absent. */
    public String event() {
        return event;
    }

    /** The {@code data} lines joined with newlines. */
    public String data() {
        return data;
    }

    /** The {@code id} field, or {@code null}. */
    public String id() {
        return id;
    }

    @Override
    public String toString() {
        return "ServerSentEvent{event=" + event + ", id=" + id + ", data.length=" + data.length() + "}";
    }
}
