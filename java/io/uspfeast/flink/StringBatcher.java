package io.uspfeast.flink;

import java.util.List;

import org.apache.flink.types.Row;

/**
 * Batches string records (the segment job's membership changes) for a Python step: a batch is
 * (String[] values, boolean barrierFollows). See {@link BarrierBatcher}.
 */
public class StringBatcher extends BarrierBatcher<String> {

    private static final long serialVersionUID = 1L;

    public StringBatcher(int maxRows, long maxDelayMs) {
        super(maxRows, maxDelayMs);
    }

    @Override
    protected Row toBatch(List<String> records, boolean barrierFollows) {
        return Row.of(records.toArray(new String[0]), barrierFollows);
    }
}
