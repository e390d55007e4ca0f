package io.uspfeast.flink;

import java.io.Serializable;
import java.time.Instant;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.types.Row;
import org.apache.flink.util.clock.RelativeClock;

/**
 * Bounded-out-of-orderness watermarks, held back by the slowest input and moving on while the
 * input is idle.
 *
 * <p>Per input: a job reading several topics sees each at its own pace, most of all while it
 * catches up on a backlog, when the consumer may hand over tens of thousands of one topic's
 * records before the other's. A watermark following the newest record overall would then run
 * ahead of the slower topic and make its records late. So the newest time is tracked per input
 * (a topic; the expected ones are known from the start) and the watermark follows the slowest,
 * as Flink's per-split watermarks do. A quiet input must not stall the others for ever, so one
 * silent for {@code idleMs} of wall-clock time stops holding the watermark back, but only once
 * the input is caught up (the newest event is less than a minute old): while a backlog is
 * read, a silent input is one whose records have not been fetched yet.
 *
 * <p>Idle: event-time timers (a segment member's expiry, a join waiting for its right side)
 * fire when the watermark passes them, and a plain watermark stops when no event arrives. Once
 * no input has had an event for {@code idleMs}, event time is taken to run on at wall-clock
 * speed from the newest event seen, so timers fire on time. As soon as events flow again the
 * watermark follows them (it never moves back). Replays of old data are unaffected: time only
 * runs on by the idle wall-clock time, not up to the clock.
 *
 * <p>Silence is measured on Flink's input activity clock, which stops while the task is
 * blocked by backpressure (a slow Python operator, one still starting): records held up
 * downstream are not silence, and counting them as such would move event time past them.
 */
public class IdleAdvancingWatermarks<T> implements WatermarkGenerator<T> {

    private static final long serialVersionUID = 1L;
    /** Newest event at most this old: the job reads live input, not a backlog. */
    private static final long CAUGHT_UP_MS = 60_000;
    /** No record at all for this long after the task started running: the input is empty. */
    private static final long NO_INPUT_MS = 15_000;

    /** Which input a record came from; records of one input arrive in their own order. */
    public interface InputOf<T> extends Serializable {
        Object of(T record);
    }

    private final long boundMs;
    private final long idleMs;
    private final InputOf<T> inputOf;
    /** Input -> {newest timestamp, wall-clock time of its last record}. */
    private final Map<Object, long[]> inputs = new HashMap<>();
    private final RelativeClock activity;
    private final long createdAt;
    /** When the task first asked for a watermark (it runs then, its operators all open). */
    private long runningSince = Long.MIN_VALUE;
    private long emitted = Long.MIN_VALUE;
    private boolean idle;

    public IdleAdvancingWatermarks(
            long boundMs, long idleMs, InputOf<T> inputOf, Object[] expected, RelativeClock activity) {
        if (boundMs < 0 || idleMs < 1) {
            throw new IllegalArgumentException("boundMs must be >= 0 and idleMs >= 1");
        }
        this.boundMs = boundMs;
        this.idleMs = idleMs;
        this.inputOf = inputOf;
        this.activity = activity;
        this.createdAt = activity.relativeTimeMillis();
        for (Object input : expected) {
            inputs.put(input, new long[] {Long.MIN_VALUE, createdAt});
        }
    }

    /**
     * A strategy reading each row's timestamp (an Instant) from field {@code timestampField}
     * and its input (the topic, one of {@code topics}) from field {@code inputField}.
     */
    public static WatermarkStrategy<Row> strategy(
            long boundMs, long idleMs, int timestampField, int inputField, String[] topics) {
        SerializableTimestampAssigner<Row> assigner = (row, previous) -> {
            Instant moment = (Instant) row.getField(timestampField);
            return moment == null ? previous : moment.toEpochMilli();
        };
        InputOf<Row> input = row -> row.getField(inputField);
        return WatermarkStrategy.<Row>forGenerator(
                        context -> new IdleAdvancingWatermarks<Row>(
                                boundMs, idleMs, input, topics, context.getInputActivityClock()))
                .withTimestampAssigner(assigner);
    }

    /**
     * A strategy for one input whose records already carry their timestamps (set by an
     * operator upstream). Several such inputs are combined by Flink itself (the minimum over
     * the active ones) where their streams meet.
     */
    public static <T> WatermarkStrategy<T> onRecordTime(long boundMs, long idleMs) {
        SerializableTimestampAssigner<T> assigner = (record, previous) -> previous;
        InputOf<T> one = record -> "";
        Object[] expected = {""};
        return WatermarkStrategy.<T>forGenerator(
                        context -> new IdleAdvancingWatermarks<T>(
                                boundMs, idleMs, one, expected, context.getInputActivityClock()))
                .withTimestampAssigner(assigner);
    }

    @Override
    public void onEvent(T event, long eventTimestamp, WatermarkOutput output) {
        if (idle) {
            idle = false;
            output.markActive();
        }
        long[] input = inputs.computeIfAbsent(inputOf.of(event), key -> new long[] {Long.MIN_VALUE, 0});
        input[0] = Math.max(input[0], eventTimestamp);
        input[1] = activity.relativeTimeMillis();
    }

    @Override
    public void onPeriodicEmit(WatermarkOutput output) {
        long now = activity.relativeTimeMillis();
        if (runningSince == Long.MIN_VALUE) {
            runningSince = now;
        }
        long newest = Long.MIN_VALUE;
        long lastEventAt = createdAt;
        for (long[] input : inputs.values()) {
            newest = Math.max(newest, input[0]);
            lastEventAt = Math.max(lastEventAt, input[1]);
        }
        if (newest == Long.MIN_VALUE) {
            // No event time yet. Where several streams meet, Flink holds the watermark at the
            // slowest: one that has no input at all must say so, or it would hold the others.
            // Only after a while: a slow start (Kafka fetches, replays) is not an empty input.
            if (!idle && now - runningSince > NO_INPUT_MS) {
                idle = true;
                output.markIdle();
            }
            return;
        }
        long watermark;
        if (now - lastEventAt > idleMs) {
            // Every input silent: event time runs on with the clock.
            watermark = newest - boundMs - 1 + (now - lastEventAt - idleMs);
        } else {
            boolean caughtUp = System.currentTimeMillis() - newest <= CAUGHT_UP_MS;
            long slowest = Long.MAX_VALUE;
            for (long[] input : inputs.values()) {
                if (caughtUp && now - input[1] > idleMs) {
                    continue; // quiet while the others are live: it does not hold them back
                }
                slowest = Math.min(slowest, input[0]);
            }
            if (slowest == Long.MIN_VALUE) {
                return; // an input that counts has shown no event time yet
            }
            watermark = slowest - boundMs - 1;
        }
        if (watermark > emitted) {
            emitted = watermark;
            output.emitWatermark(new Watermark(watermark));
        }
    }
}
