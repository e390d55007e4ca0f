package io.uspfeast.flink;

import java.time.OffsetDateTime;
import java.time.format.DateTimeFormatter;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Pairs each raw event of a join's two topics with its join key, as PyFlink's keyBy expects:
 * (key, (bytes, is_left, partition, offset)), with the event time as the record timestamp.
 *
 * <p>Input rows are (value bytes, topic, partition, offset) from the Kafka source. A streaming
 * JSON parser reads the side's key field and event-time field from the top level and stops
 * once it has both, so neither keying nor watermarks cost a Python call. An event whose key is
 * missing gets the empty key and one whose time does not parse gets no timestamp (it cannot
 * move the watermark); the keyed Python function validates every event against its contract
 * and sends the bad ones to the dead-letter topic with the reason.
 */
public class JoinKeys extends AbstractStreamOperator<Row> implements OneInputStreamOperator<Row, Row> {

    private static final long serialVersionUID = 1L;

    private final String leftTopic;
    private final String leftKey;
    private final String leftTime;
    private final String rightKey;
    private final String rightTime;

    private transient JsonFactory json;

    public JoinKeys(String leftTopic, String leftKey, String leftTime, String rightKey, String rightTime) {
        this.leftTopic = leftTopic;
        this.leftKey = leftKey;
        this.leftTime = leftTime;
        this.rightKey = rightKey;
        this.rightTime = rightTime;
    }

    /**
     * Watermarks over this operator's output: the event times it set, per side, so one side
     * read ahead of the other cannot make the other's records late.
     */
    public static WatermarkStrategy<Row> watermarks(long boundMs, long idleMs) {
        IdleAdvancingWatermarks.InputOf<Row> side = row -> ((Row) row.getField(1)).getField(1);
        return IdleAdvancingWatermarks.onRecordTime(boundMs, idleMs, side, new Object[] {true, false});
    }

    @Override
    public void open() throws Exception {
        super.open();
        json = new JsonFactory();
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        byte[] value = (byte[]) row.getField(0);
        boolean left = leftTopic.equals(row.getField(1));
        String[] found = read(value, left ? leftKey : rightKey, left ? leftTime : rightTime);
        Row keyed = Row.of(found[0], Row.of(value, left, row.getField(2), row.getField(3)));
        Long time = parseTime(found[1]);
        if (time == null) {
            element.eraseTimestamp();
            output.collect(element.replace(keyed));
        } else {
            output.collect(element.replace(keyed, time));
        }
    }

    /** The key's text (empty when absent) and the time's text (null when absent). */
    private String[] read(byte[] value, String keyField, String timeField) {
        String[] found = {"", null};
        if (value == null) {
            return found;
        }
        boolean haveKey = false;
        boolean haveTime = false;
        try (JsonParser parser = json.createParser(value)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                return found;
            }
            while (parser.nextToken() == JsonToken.FIELD_NAME && !(haveKey && haveTime)) {
                String name = parser.getCurrentName();
                JsonToken token = parser.nextToken();
                if (keyField.equals(name)) {
                    haveKey = true;
                    if (token.isScalarValue() && token != JsonToken.VALUE_NULL) {
                        found[0] = parser.getText();
                    }
                } else if (timeField.equals(name)) {
                    haveTime = true;
                    if (token == JsonToken.VALUE_STRING) {
                        found[1] = parser.getText();
                    }
                }
                parser.skipChildren();
            }
        } catch (Exception e) {
            // Not JSON: the keyed function rejects it with the parser's reason.
        }
        return found;
    }

    private static Long parseTime(String text) {
        if (text == null) {
            return null;
        }
        try {
            return OffsetDateTime.parse(text, DateTimeFormatter.ISO_OFFSET_DATE_TIME).toInstant().toEpochMilli();
        } catch (Exception e) {
            return null;
        }
    }
}
