//! Opening a store applies its pending migrations and refuses a newer schema, on real PostgreSQL
//! (127.0.0.1:5432 in CI; `KUANT_TEST_DATABASE_URL` overrides it) and on SQLite. Each
//! PostgreSQL test works in a throw-away schema of its own.

use kuant_store::{Backend, Store, StoreError};

fn postgres_url() -> String {
    std::env::var("KUANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL schema `name`, and a URL whose connections use it.
async fn postgres_schema(name: &str) -> String {
    kuant_store::fresh_schema(&postgres_url(), name)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL (set KUANT_TEST_DATABASE_URL): {e}"))
}

async fn drop_schema(name: &str) {
    if let Ok(pool) = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&postgres_url()).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE")))
            .execute(&pool)
            .await;
    }
}

fn sqlite_path(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("kuant-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("kuant.db").to_string_lossy().into_owned()
}

async fn table_count(store: &Store) -> i64 {
    match store {
        Store::Postgres(pool) => sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = $1 AND table_schema = current_schema()",
        )
        .bind("runs")
        .fetch_one(pool)
        .await
        .expect("count"),
        Store::Sqlite(pool) => {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1")
                .bind("runs")
                .fetch_one(pool)
                .await
                .expect("count")
        }
    }
}

/// Records a migration this build does not have, as a newer kuant would have.
async fn pretend_newer(store: &Store) {
    match store {
        Store::Postgres(pool) => sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', true, '\\x00'::bytea, 1)",
        )
        .execute(pool)
        .await
        .map(|_| ()),
        Store::Sqlite(pool) => sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', true, x'00', 1)",
        )
        .execute(pool)
        .await
        .map(|_| ()),
    }
    .expect("a migration from the future recorded");
}

async fn opening_migrates_and_a_newer_schema_is_refused(url: &str, backend: Backend) {
    let store = Store::open(url).await.expect("a fresh store opens");
    assert_eq!(store.backend(), backend);
    assert_eq!(table_count(&store).await, 1, "the migrations ran on open");
    // Opening again applies nothing new and keeps the data.
    let again = Store::open(url).await.expect("opens again");
    assert_eq!(table_count(&again).await, 1);

    assert_eq!(again.ready().await, Ok(again.known_version()), "ready: reachable and current");
    pretend_newer(&again).await;
    assert!(again.ready().await.is_err_and(|e| e.contains("schema is at migration 9999")), "not current");
    let err = Store::open(url).await.expect_err("a newer schema is refused");
    assert!(matches!(err, StoreError::NewerSchema { found: 9999, .. }), "{err}");
    assert!(err.to_string().contains("newer than this kuant knows"), "{err}");
}

#[tokio::test]
async fn postgres_opening_migrates_and_refuses_a_newer_schema() {
    let schema = "kuant_store_open".to_owned();
    let url = postgres_schema(&schema).await;
    opening_migrates_and_a_newer_schema_is_refused(&url, Backend::Postgres).await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn sqlite_opening_migrates_and_refuses_a_newer_schema() {
    let path = sqlite_path("open");
    opening_migrates_and_a_newer_schema_is_refused(&path, Backend::Sqlite).await;
    let url = format!("sqlite://{}", sqlite_path("open-url"));
    opening_migrates_and_a_newer_schema_is_refused(&url, Backend::Sqlite).await;
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_error_without_the_password() {
    let err = Store::open("postgres://kuant:hunter2@127.0.0.1:1/kuant")
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.starts_with("cannot open the store at postgres://kuant:***@127.0.0.1:1/kuant"), "{text}");
    assert!(!text.contains("hunter2"));
}

/// Migrates `url` with the first migration only, as an older kuant would have left it.
async fn migrate_first_only(dialect: &str, apply: impl AsyncFnOnce(sqlx::migrate::Migrator)) {
    let dir = std::env::temp_dir().join(format!("kuant-first-{dialect}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations").join(dialect);
    let first = std::fs::read_dir(&source)
        .expect("migrations")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("0001_")))
        .expect("a first migration");
    std::fs::copy(&first, dir.join(first.file_name().expect("name"))).expect("copied");
    let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.expect("migrator");
    apply(migrator).await;
}

async fn has_causation_column(store: &Store) -> bool {
    let columns = match store {
        Store::Postgres(pool) => sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'events' AND column_name = 'causation_id'",
        )
        .fetch_one(pool)
        .await
        .expect("columns"),
        Store::Sqlite(pool) => sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'causation_id'",
        )
        .fetch_one(pool)
        .await
        .expect("columns"),
    };
    columns == 1
}

#[tokio::test]
async fn opening_a_store_an_older_kuant_left_applies_the_pending_migrations() {
    // PostgreSQL.
    let schema = "kuant_store_pending".to_owned();
    let url = postgres_schema(&schema).await;
    migrate_first_only("postgres", async |m| {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.expect("pg");
        m.run(&pool).await.expect("first migration");
        // Data an older kuant wrote survives the upgrade.
        sqlx::query("INSERT INTO runs (run_id, kind, name, spec) VALUES ('old', 'backtest', 'old', '{}')")
            .execute(&pool)
            .await
            .expect("old row");
    })
    .await;
    let store = Store::open(&url).await.expect("opens and migrates");
    assert!(has_causation_column(&store).await, "0003 applied on open");
    assert!(store.run("old").await.expect("read").is_some(), "old rows kept");
    drop_schema(&schema).await;

    // SQLite.
    let path = sqlite_path("pending");
    migrate_first_only("sqlite", async |m| {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("db");
        m.run(&pool).await.expect("first migration");
        sqlx::query("INSERT INTO runs (run_id, kind, name, spec) VALUES ('old', 'backtest', 'old', '{}')")
            .execute(&pool)
            .await
            .expect("old row");
        pool.close().await;
    })
    .await;
    let store = Store::open(&path).await.expect("opens and migrates");
    assert!(has_causation_column(&store).await, "0003 applied on open");
    assert!(store.run("old").await.expect("read").is_some(), "old rows kept");
}
