package dev.keygate.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.io.PipedInputStream;
import java.io.PipedOutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

class SseTest {
    @Test
    void parsesFieldsCommentsAndMultilineData() throws Exception {
        String stream = ": comment\n\nevent: delta\nid: 7\ndata: {\"a\":1}\ndata: second\n\ndata:x\r\n\r\nretry: 5\n\ndata: tail";
        SseReader r = new SseReader(new ByteArrayInputStream(stream.getBytes(StandardCharsets.UTF_8)));
        ServerSentEvent first = r.next();
        assertEquals("delta", first.event());
        assertEquals("7", first.id());
        assertEquals("{\"a\":1}\nsecond", first.data());
        ServerSentEvent second = r.next();
        assertEquals("message", second.event());
        assertEquals("x", second.data());
        assertEquals("tail", r.next().data());
        assertNull(r.next());
    }

    @Test
    void proxiedStreamIsReadIncrementally() throws Exception {
        MemoryTokenStore store = new MemoryTokenStore();
        Instant now = Instant.now();
        store.save(new TokenSet("at", "rt", now, now.plusSeconds(300), "ai"));
        PipedOutputStream upstream = new PipedOutputStream();
        PipedInputStream body = new PipedInputStream(upstream);
        CountDownLatch firstRead = new CountDownLatch(1);
        FakeTransport t = new FakeTransport(r -> FakeTransport.status(200)
                .header("Content-Type", "text/event-stream").body(body).build());
        KeygateClient c = KeygateClient.builder("https://gate.example.com", "c", "app:/cb")
                .keyStore(SoftwareDpopKeyStore.generate()).tokenStore(store).transport(t).build();
        Thread writer = new Thread(() -> {
            try {
                upstream.write("data: one\n\n".getBytes(StandardCharsets.UTF_8));
                upstream.flush();
                // The second event is only written once the reader has the first.
                assertTrue(firstRead.await(10, TimeUnit.SECONDS));
                upstream.write("data: two\n\n".getBytes(StandardCharsets.UTF_8));
                upstream.close();
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        writer.start();
        try (KeygateResponse response = c.get("/proxy/echo/v1/stream")) {
            SseReader events = response.events();
            assertEquals("one", events.next().data());
            firstRead.countDown();
            assertEquals("two", events.next().data());
            assertNull(events.next());
        }
        writer.join(Duration.ofSeconds(10).toMillis());
    }
}
