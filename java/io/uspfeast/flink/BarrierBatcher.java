package io.uspfeast.flink;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Hands records to a Python operator in batches: one Python call per batch instead of one per
 * record, which is where a PyFlink job spends most of its time.
 *
 * <p>A batch is emitted when it holds {@code maxRows} records, {@code maxDelayMs} after its
 * first record arrived, before every checkpoint barrier and at the end of input. The batch sent
 * before a barrier (empty if nothing is pending) is flagged: the Python step then finishes its
 * writes before it returns, so every record the checkpoint covers is written when the barrier
 * passes, without any state here. Subclasses say how pending records become one batch row.
 */
public abstract class BarrierBatcher<IN> extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<IN, Row>, ProcessingTimeCallback {

    private static final long serialVersionUID = 1L;

    private final int maxRows;
    private final long maxDelayMs;
    private transient List<IN> pending;
    private transient boolean timerSet;

    protected BarrierBatcher(int maxRows, long maxDelayMs) {
        if (maxRows < 1 || maxDelayMs < 0) {
            throw new IllegalArgumentException("maxRows must be >= 1 and maxDelayMs >= 0");
        }
        this.maxRows = maxRows;
        this.maxDelayMs = maxDelayMs;
    }

    /** One batch row from the pending records; {@code barrierFollows} is the settle flag. */
    protected abstract Row toBatch(List<IN> records, boolean barrierFollows);

    @Override
    public void open() throws Exception {
        super.open();
        pending = new ArrayList<>(maxRows);
    }

    @Override
    public void processElement(StreamRecord<IN> element) throws Exception {
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
        Row batch = toBatch(pending, settle);
        pending.clear();
        output.collect(new StreamRecord<>(batch));
    }
}
