package dev.keygate.client;

import java.time.Clock;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The time for proofs' {@code iat}: the device clock, plus the server's offset once a
 * response's {@code Date} showed the device clock to be off. Phones' clocks often are, and
 * keygate refuses proofs more than a few seconds off. Token expiry stays on the device
 * clock (lifetimes are relative). Internal.
 */
final class ServerClock {
    /** Beyond this difference every response's Date moves the offset. */
    static final long OBSERVE_THRESHOLD_SECS = 60;
    /** After a refused proof, a difference beyond this is corrected and the request retried. */
    static final long CORRECT_THRESHOLD_SECS = 5;

    private final Clock clock;
    private final AtomicLong offsetSecs = new AtomicLong();

    ServerClock(Clock clock) {
        this.clock = clock;
    }

    long localSeconds() {
        return Math.floorDiv(clock.millis(), 1000L);
    }

    /** Seconds for {@code iat}. */
    long proofSeconds() {
        return localSeconds() + offsetSecs.get();
    }

    long offsetSeconds() {
        return offsetSecs.get();
    }

    /**
     * A response keygate itself generated (token, revocation endpoints): adopts the server's
     * time if the device is more than 60 s off.
     */
    void observe(HttpResponse response) {
        Long diff = difference(response);
        if (diff == null) {
            return;
        }
        if (Math.abs(diff) > OBSERVE_THRESHOLD_SECS) {
            offsetSecs.set(diff);
        } else if (Math.abs(diff) <= CORRECT_THRESHOLD_SECS) {
            offsetSecs.set(0);
        }
    }

    /** After a refused proof: adopts the server's time if that changes anything; true to retry. */
    boolean correct(HttpResponse response) {
        Long diff = difference(response);
        if (diff == null || Math.abs(diff) <= CORRECT_THRESHOLD_SECS || Math.abs(diff - offsetSecs.get()) < 2) {
            return false;
        }
        offsetSecs.set(diff);
        return true;
    }

    private Long difference(HttpResponse response) {
        String date = response.header("Date");
        if (date == null) {
            return null;
        }
        try {
            long server = ZonedDateTime.parse(date.trim(), DateTimeFormatter.RFC_1123_DATE_TIME).toEpochSecond();
            return server - localSeconds();
        } catch (DateTimeParseException e) {
            return null;
        }
    }
}
