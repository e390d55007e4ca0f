package io.uspfeast.flink;

import java.util.List;

import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Turns one field of the Python operator's batch result back into single records.
 *
 * <p>The field is a list of strings; when {@code timestampField} is not negative, it names a
 * list of longs of the same length whose entries become the records' timestamps (event time),
 * so a plain bounded-out-of-orderness watermark strategy can follow without another Python call.
 */
public class Unbatcher extends AbstractStreamOperator<String>
        implements OneInputStreamOperator<Row, String> {

    private static final long serialVersionUID = 1L;

    private final int field;
    private final int timestampField;

    public Unbatcher(int field, int timestampField) {
        this.field = field;
        this.timestampField = timestampField;
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row batch = element.getValue();
        List<?> values = (List<?>) batch.getField(field);
        List<?> timestamps = timestampField < 0 ? null : (List<?>) batch.getField(timestampField);
        if (values == null) {
            return;
        }
        StreamRecord<String> out = new StreamRecord<>(null);
        for (int i = 0; i < values.size(); i++) {
            String value = (String) values.get(i);
            if (timestamps == null) {
                out.replace(value);
                out.eraseTimestamp();
            } else {
                out.replace(value, ((Number) timestamps.get(i)).longValue());
            }
            output.collect(out);
        }
    }
}
