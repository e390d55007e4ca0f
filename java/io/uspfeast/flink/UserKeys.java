package io.uspfeast.flink;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Pairs each signal row with its user id, as PyFlink's keyBy expects: (key, (json, topic)).
 *
 * <p>PyFlink computes keys in a Python operator of its own, one JVM-to-Python crossing per
 * record before the keyed Python function is even called; reading the id here, with a
 * streaming JSON parser that stops at the top-level {@code user_id} field, removes that
 * crossing. Input rows hold the JSON text in field 0. A row that is not a JSON object with a
 * scalar {@code user_id} gets the empty key; the keyed function sets it aside with a reason.
 * Only the JSON text and the topic go on (the event time travels as the record timestamp), so
 * Python is not handed a timestamp object per record it would not use.
 */
public class UserKeys extends AbstractStreamOperator<Row> implements OneInputStreamOperator<Row, Row> {

    private static final long serialVersionUID = 1L;
    private static final String FIELD = "user_id";

    private transient JsonFactory json;

    @Override
    public void open() throws Exception {
        super.open();
        json = new JsonFactory();
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        String text = (String) row.getField(0);
        output.collect(element.replace(Row.of(userOf(text), Row.of(text, row.getField(1)))));
    }

    private String userOf(String text) {
        if (text == null) {
            return "";
        }
        try (JsonParser parser = json.createParser(text)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                return "";
            }
            JsonToken token;
            while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                String name = parser.getCurrentName();
                JsonToken value = parser.nextToken();
                if (FIELD.equals(name)) {
                    return value.isScalarValue() && value != JsonToken.VALUE_NULL ? parser.getText() : "";
                }
                parser.skipChildren();
            }
            return "";
        } catch (Exception e) {
            return "";
        }
    }
}
