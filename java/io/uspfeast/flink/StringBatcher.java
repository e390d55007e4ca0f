package io.uspfeast.flink;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Hands string records to a Python operator in batches, like {@link MicroBatcher} does for
 * Kafka records: output rows are (String[] values, boolean barrierFollows), emitted at {@code
 * maxRows} records, {@code maxDelayMs} after the first pending one, before every checkpoint
 * barrier (flag set, so Python finishes its writes before the barrier passes) and at the end.
 */
public class StringBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<String, Row>, ProcessingTimeCallback {

    private static final long serialVersionUID = 1L;

    private final int maxRows;
    private final long maxDelayMs;
    private transient List<String> pending;
    private transient boolean timerSet;

    public StringBatcher(int maxRows, long maxDelayMs) {
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
    public void processElement(StreamRecord<String> element) throws Exception {
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
        if (pending.isEmpty() && !settle) {
            return;
        }
        String[] values = pending.toArray(new String[0]);
        pending.clear();
        output.collect(new StreamRecord<>(Row.of(values, settle)));
    }
}
