//! The two dialects hold the same schema: every table and column of the PostgreSQL migrations
//! exists in the SQLite ones and the other way round, so a query written for one finds its
//! columns in the other.

use std::collections::BTreeSet;

use kuant_store::Store;

fn postgres_url() -> String {
    std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn columns(store: &Store) -> BTreeSet<(String, String)> {
    let rows: Vec<(String, String)> = match store {
        Store::Postgres(pool) => sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
        )
        .fetch_all(pool)
        .await
        .expect("postgres columns"),
        Store::Sqlite(pool) => sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'",
        )
        .fetch_all(pool)
        .await
        .expect("sqlite columns"),
    };
    rows.into_iter().collect()
}

#[tokio::test]
async fn postgres_and_sqlite_have_the_same_tables_and_columns() {
    let url = kuant_store::fresh_schema(&postgres_url(), "kuant_schema_parity")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL (set KUANT_TEST_DATABASE_URL): {e}"));
    let pg = Store::open(&url).await.expect("postgres store");
    let dir = std::env::temp_dir().join(format!("kuant-schema-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sqlite = Store::open(&dir.join("kuant.db").to_string_lossy()).await.expect("sqlite store");

    let (pg_columns, sqlite_columns) = (columns(&pg).await, columns(&sqlite).await);
    assert!(pg_columns.len() > 100, "the whole schema: {} columns", pg_columns.len());
    let only_pg: Vec<_> = pg_columns.difference(&sqlite_columns).collect();
    let only_sqlite: Vec<_> = sqlite_columns.difference(&pg_columns).collect();
    assert!(
        only_pg.is_empty() && only_sqlite.is_empty(),
        "only in PostgreSQL: {only_pg:?}; only in SQLite: {only_sqlite:?}"
    );
    let tables: BTreeSet<_> = pg_columns.iter().map(|(t, _)| t.as_str()).collect();
    for table in [
        "runs",
        "events",
        "equity_points",
        "trades",
        "candles",
        "signals",
        "orders",
        "fills",
        "block_events",
        "positions",
        "position_snapshots",
        "risk_allocations",
        "ledger_accounts",
        "ledger_transactions",
        "ledger_entries",
        "wallets",
        "reconciliation_runs",
        "reconciliation_drifts",
        "llm_calls",
    ] {
        assert!(tables.contains(table), "missing table {table}");
    }
}
