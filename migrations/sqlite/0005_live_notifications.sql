-- The SQLite side of migrations/postgres/0005: SQLite has no cross-process notifications, so
-- there is nothing to create; a local ops API fans out what it publishes itself. The file keeps
-- the two dialects' migration numbers in step.
SELECT 1;
