-- Live notifications: every write an agent makes to these tables is announced on the channel
-- `kuant_live`, so that the ops API (LISTEN kuant_live) pushes it to WebSocket clients without
-- polling, whoever wrote it. PostgreSQL only: SQLite has no cross-process notifications (a local
-- ops API fans out what it publishes itself).
--
-- The payload is {"schema": ..., "table": ..., "op": ..., "row": {...}} with every number as a
-- string, so that decimals reach clients digit for digit (a JSON number would become a float on
-- the way). Channels are per database: a listener keeps the rows of its own schema.
-- A payload must stay under PostgreSQL's 8000 bytes: these rows are small.

CREATE FUNCTION kuant_notify_live() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_json json;
BEGIN
    SELECT json_object_agg(key, CASE WHEN json_typeof(value) = 'number' THEN to_json(value #>> '{}') ELSE value END)
      INTO row_json
      FROM json_each(row_to_json(NEW));
    PERFORM pg_notify('kuant_live', json_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'op', TG_OP, 'row', row_json)::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER fills_live AFTER INSERT ON fills FOR EACH ROW EXECUTE FUNCTION kuant_notify_live();
CREATE TRIGGER orders_live AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION kuant_notify_live();
CREATE TRIGGER positions_live AFTER INSERT OR UPDATE ON positions FOR EACH ROW EXECUTE FUNCTION kuant_notify_live();
CREATE TRIGGER block_events_live AFTER INSERT ON block_events FOR EACH ROW EXECUTE FUNCTION kuant_notify_live();
CREATE TRIGGER risk_allocations_live AFTER INSERT OR UPDATE ON risk_allocations FOR EACH ROW EXECUTE FUNCTION kuant_notify_live();
CREATE TRIGGER candles_live AFTER INSERT ON candles FOR EACH ROW EXECUTE FUNCTION kuant_notify_live();
