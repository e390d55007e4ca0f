package io.uspfeast.flink;

import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Hands Kafka records to the Python operator in small batches: one Python call per batch
 * instead of one per record, which is where a PyFlink job spends most of its time.
 *
 * <p>Input rows are (value bytes, partition, offset, broker timestamp). A batch is emitted as
 * one row of parallel arrays plus a flag when it holds {@code maxRows} records, {@code
 * maxDelayMs} after its first record arrived, before every checkpoint barrier and at the end of
 * input. The batch sent before a barrier (empty if nothing is pending) has the flag set: the
 * Python step then finishes its store writes before it returns. That keeps the job crash-safe
 * without any state: every record the checkpoint's source offsets cover is stored when the
 * barrier passes.
 */
public class MicroBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, ProcessingTimeCallback {

    private static final long serialVersionUID = 1L;

    private final int maxRows;
    private final long maxDelayMs;
    private transient List<Row> pending;
    private transient boolean timerSet;

    public MicroBatcher(int maxRows, long maxDelayMs) {
        if (maxRows < 1 || maxDelayMs < 0) {
            throw new IllegalArgumentException("maxRows must be >= 1 and maxDelayMs >= 0");
        }
        this.maxRows = maxRows;
        this.maxDelayMs = maxDelayMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        pending = new ArrayList<>(maxRows);
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        pending.add(element.getValue());
        if (pending.size() >= maxRows) {
            flush(false);
        } else if (!timerSet) {
            timerSet = true;
            long now = getProcessingTimeService().getCurrentProcessingTime();
            getProcessingTimeService().registerTimer(now + maxDelayMs, this);
        }
    }

    @Override
    public void onProcessingTime(long time) throws Exception {
        timerSet = false;
        flush(false);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush(true);
    }

    @Override
    public void finish() throws Exception {
        flush(true);
        super.finish();
    }

    private void flush(boolean settle) {
        int n = pending.size();
        if (n == 0 && !settle) {
            return;
        }
        byte[][] values = new byte[n][];
        int[] partitions = new int[n];
        long[] offsets = new long[n];
        long[] brokerMs = new long[n];
        for (int i = 0; i < n; i++) {
            Row row = pending.get(i);
            values[i] = (byte[]) row.getField(0);
            Integer partition = (Integer) row.getField(1);
            Long offset = (Long) row.getField(2);
            Instant broker = (Instant) row.getField(3);
            partitions[i] = partition == null ? -1 : partition;
            offsets[i] = offset == null ? -1L : offset;
            brokerMs[i] = broker == null ? -1L : broker.toEpochMilli();
        }
        pending.clear();
        output.collect(new StreamRecord<>(Row.of(values, partitions, offsets, brokerMs, settle)));
    }
}
