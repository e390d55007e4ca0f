package io.uspfeast.flink;

import java.time.Instant;
import java.util.List;

import org.apache.flink.types.Row;

/**
 * Batches Kafka records for the signal job's Python step (see {@link BarrierBatcher}).
 *
 * <p>Input rows are (value bytes, partition, offset, broker timestamp); a batch is one row of
 * parallel arrays (values, partitions, offsets, broker ms) plus the barrier flag.
 */
public class MicroBatcher extends BarrierBatcher<Row> {

    private static final long serialVersionUID = 1L;

    public MicroBatcher(int maxRows, long maxDelayMs) {
        super(maxRows, maxDelayMs);
    }

    @Override
    protected Row toBatch(List<Row> records, boolean barrierFollows) {
        int n = records.size();
        byte[][] values = new byte[n][];
        int[] partitions = new int[n];
        long[] offsets = new long[n];
        long[] brokerMs = new long[n];
        for (int i = 0; i < n; i++) {
            Row row = records.get(i);
            values[i] = (byte[]) row.getField(0);
            Integer partition = (Integer) row.getField(1);
            Long offset = (Long) row.getField(2);
            Instant broker = (Instant) row.getField(3);
            partitions[i] = partition == null ? -1 : partition;
            offsets[i] = offset == null ? -1L : offset;
            brokerMs[i] = broker == null ? -1L : broker.toEpochMilli();
        }
        return Row.of(values, partitions, offsets, brokerMs, barrierFollows);
    }
}
