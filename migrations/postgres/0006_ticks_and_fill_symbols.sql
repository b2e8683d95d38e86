-- The latest tick of each market (last trade price, best bid and ask): what the market view and
-- `/ws/market` show as "now". One row per market, replaced only by a newer tick, so the table
-- never grows; the history is in candles.
CREATE TABLE ticks (
    exchange  TEXT NOT NULL,
    symbol    TEXT NOT NULL,
    at        TIMESTAMPTZ NOT NULL,
    price     NUMERIC NOT NULL,
    bid       NUMERIC,
    ask       NUMERIC,
    PRIMARY KEY (exchange, symbol)
);
CREATE TRIGGER ticks_live AFTER INSERT OR UPDATE ON ticks FOR EACH ROW EXECUTE FUNCTION kuant_notify_live();

-- One function builds and sends every announcement (numbers as strings, see 0005); the
-- triggers differ only in the row they pass.
CREATE FUNCTION kuant_publish_live(tbl_schema text, tbl text, op text, row_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    row_json json;
BEGIN
    SELECT json_object_agg(key, CASE WHEN json_typeof(value) = 'number' THEN to_json(value #>> '{}') ELSE value END)
      INTO row_json
      FROM json_each(row_data::json);
    PERFORM pg_notify('kuant_live', json_build_object('schema', tbl_schema, 'table', tbl, 'op', op, 'row', row_json)::text);
END;
$$;

CREATE OR REPLACE FUNCTION kuant_notify_live() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kuant_publish_live(TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, to_jsonb(NEW));
    RETURN NEW;
END;
$$;

-- A fill row has no symbol (its order has). Its announcement carries the order's symbol, so a
-- live client filtering by symbol gets its fills too.
CREATE FUNCTION kuant_notify_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kuant_publish_live(TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, to_jsonb(NEW) || jsonb_build_object(
        'symbol', (SELECT symbol FROM orders WHERE client_order_id = NEW.client_order_id)));
    RETURN NEW;
END;
$$;
DROP TRIGGER fills_live ON fills;
CREATE TRIGGER fills_live AFTER INSERT ON fills FOR EACH ROW EXECUTE FUNCTION kuant_notify_fill();
