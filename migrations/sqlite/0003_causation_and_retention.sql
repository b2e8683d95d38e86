-- Events name the event that caused them (causation id), so a chain reads as a tree, not only as a
-- set; and an index on event time lets retention drop old events without scanning every run.
-- SQLite dialect of migrations/postgres/0003.

ALTER TABLE events ADD COLUMN causation_id TEXT;
CREATE INDEX events_by_causation ON events (causation_id);
CREATE INDEX events_by_time ON events (occurred_at);

-- When a run's row last changed (Unix ms): the ops API lists runs by it.
ALTER TABLE runs ADD COLUMN updated_at INTEGER;
