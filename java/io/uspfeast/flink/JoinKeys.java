package io.uspfeast.flink;

import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Pairs each validated input of a join with its join key, as PyFlink's keyBy expects:
 * (key, (record, is_left)).
 *
 * <p>The join's validation step writes every valid event as {@code <L|R><key>\u001f<record>}
 * (the side, the join key, then the record as JSON) with its event time as the record
 * timestamp, so keying costs no Python call. Only events that passed their contract carry a
 * time: an invalid event cannot move event time.
 */
public class JoinKeys extends AbstractStreamOperator<Row> implements OneInputStreamOperator<String, Row> {

    private static final long serialVersionUID = 1L;
    private static final char SEPARATOR = '\u001f';

    @Override
    public void processElement(StreamRecord<String> element) throws Exception {
        String text = element.getValue();
        int end = text.indexOf(SEPARATOR);
        String key = text.substring(1, end);
        Row keyed = Row.of(key, Row.of(text.substring(end + 1), text.charAt(0) == 'L'));
        output.collect(element.replace(keyed));
    }
}
