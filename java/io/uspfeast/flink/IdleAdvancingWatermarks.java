package io.uspfeast.flink;

import java.time.Instant;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.types.Row;

/**
 * Bounded-out-of-orderness watermarks that keep advancing while the input is idle.
 *
 * <p>Event-time timers (a segment member's expiry) fire when the watermark passes them, and a
 * plain bounded-out-of-orderness watermark stops when no event arrives: a member would then
 * stay in the segment until some other user's event moves time on. Here, once no event has
 * arrived for {@code idleMs} of wall-clock time, event time is taken to run on at wall-clock
 * speed from the newest event seen, so timers fire on time. As soon as events flow again the
 * watermark follows them (it never moves back). Replays of old data are unaffected: time only
 * runs on by the idle wall-clock time, not up to the clock.
 */
public class IdleAdvancingWatermarks implements WatermarkGenerator<Row> {

    private static final long serialVersionUID = 1L;

    private final long boundMs;
    private final long idleMs;
    private long maxTimestamp = Long.MIN_VALUE;
    private long lastEventAt;
    private long emitted = Long.MIN_VALUE;

    public IdleAdvancingWatermarks(long boundMs, long idleMs) {
        if (boundMs < 0 || idleMs < 1) {
            throw new IllegalArgumentException("boundMs must be >= 0 and idleMs >= 1");
        }
        this.boundMs = boundMs;
        this.idleMs = idleMs;
        this.lastEventAt = System.currentTimeMillis();
    }

    /** A strategy reading each row's timestamp (an Instant) from field {@code timestampField}. */
    public static WatermarkStrategy<Row> strategy(long boundMs, long idleMs, int timestampField) {
        SerializableTimestampAssigner<Row> assigner = (row, previous) -> {
            Instant moment = (Instant) row.getField(timestampField);
            return moment == null ? previous : moment.toEpochMilli();
        };
        return WatermarkStrategy.<Row>forGenerator(context -> new IdleAdvancingWatermarks(boundMs, idleMs))
                .withTimestampAssigner(assigner);
    }

    @Override
    public void onEvent(Row event, long eventTimestamp, WatermarkOutput output) {
        maxTimestamp = Math.max(maxTimestamp, eventTimestamp);
        lastEventAt = System.currentTimeMillis();
    }

    @Override
    public void onPeriodicEmit(WatermarkOutput output) {
        if (maxTimestamp == Long.MIN_VALUE) {
            return;
        }
        long idleFor = System.currentTimeMillis() - lastEventAt;
        long advance = idleFor > idleMs ? idleFor - idleMs : 0;
        long watermark = maxTimestamp - boundMs - 1 + advance;
        if (watermark > emitted) {
            emitted = watermark;
            output.emitWatermark(new Watermark(watermark));
        }
    }
}
