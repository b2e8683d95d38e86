//! The SQL migrations under `migrations/` apply, in order, to a real PostgreSQL (CI has one on
//! 127.0.0.1:5432; `KUANT_TEST_PG` overrides the psql connection string), each in a throw-away
//! schema, and the schema keeps the promises the engine relies on.

use std::io::Write;
use std::process::{Command, Stdio};

fn connection() -> String {
    std::env::var("KUANT_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// Runs SQL through psql, stopping at the first error; returns stdout.
fn psql(sql: &str) -> Result<String, String> {
    let mut child = Command::new("psql")
        .args([connection().as_str(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start psql (install postgresql-client): {e}"))?;
    child.stdin.take().ok_or("no stdin")?.write_all(sql.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn migrations() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("migrations folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name, std::fs::read_to_string(&p).expect("readable migration"))
        })
        .collect()
}

/// A script that creates the throw-away schema `schema` and applies every migration in it.
fn migrated_schema(schema: &str) -> String {
    let mut script = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path TO {schema};\n"
    );
    for (_, sql) in migrations() {
        script.push_str(&sql);
        script.push('\n');
    }
    script
}

#[test]
fn migrations_apply_in_order_and_events_are_deduplicated_by_id() {
    let files = migrations();
    assert!(!files.is_empty(), "no migrations");
    for (name, _) in &files {
        let version = name.split('_').next().unwrap_or_default();
        assert!(version.parse::<u64>().is_ok(), "{name}: needs a numeric version prefix (sqlx)");
    }
    let schema = format!("kuant_migrations_{}", std::process::id());
    let mut script = migrated_schema(&schema);
    script.push_str(
        "INSERT INTO runs (run_id, kind, name, spec) VALUES ('bt-1', 'backtest', 'bt', '{}');
         INSERT INTO events VALUES ('00000000-0000-0000-0000-000000000001', 'bt-1',
           '00000000-0000-0000-0000-0000000000aa', 'signal', 'strategy', now(), '{}')
           ON CONFLICT (event_id) DO NOTHING;
         INSERT INTO events VALUES ('00000000-0000-0000-0000-000000000001', 'bt-1',
           '00000000-0000-0000-0000-0000000000aa', 'signal', 'strategy', now(), '{}')
           ON CONFLICT (event_id) DO NOTHING;
         SELECT count(*) FROM events;",
    );
    let result = psql(&script);
    let cleanup = psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE;"));
    let count = result.unwrap_or_else(|e| panic!("migrations failed against PostgreSQL: {e}"));
    assert_eq!(count, "1", "an event persisted twice must be stored once");
    cleanup.expect("drop the test schema");
}

#[test]
fn a_run_of_an_unknown_kind_is_refused() {
    let schema = format!("kuant_migrations_kind_{}", std::process::id());
    let mut script = migrated_schema(&schema);
    script.push_str("INSERT INTO runs (run_id, kind, name, spec) VALUES ('x', 'job', 'x', '{}');");
    let result = psql(&script);
    psql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE;")).expect("drop the test schema");
    let err = result.expect_err("kind 'job' must violate the check constraint");
    assert!(err.contains("runs_kind_check"), "{err}");
}
