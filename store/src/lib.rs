//! kuant's store. In a cluster it is PostgreSQL; on a laptop an embedded SQLite file. Opening a
//! store applies the migrations it lacks (never by hand: an un-applied schema is a classic
//! failure) and refuses a store whose schema is newer than this build knows.

use std::str::FromStr;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// The PostgreSQL schema, embedded at build time.
static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");
/// The SQLite schema: the same tables in SQLite's dialect.
static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");

mod events;
mod ledger;
mod market;
mod runs;
mod sql;
mod trading;

pub use events::{EventFilter, StoredEvent};
pub use ledger::{
    AccountKind, Drift, LedgerAccount, LedgerError, LedgerTransaction, PaperBalance, ReconciliationResult,
    ReconciliationRun, Wallet,
};
pub use market::{LlmCall, LlmUsage, StoredCandle, StoredTick};
pub use runs::{Run, RunFilter, RunKind, StoredRun, StoredTrade, downsample};
pub use sql::{BATCH_ROWS, MAX_TIME_MS, MIN_TIME_MS};
pub use trading::{
    AllocationState, RiskAllocation, StoredBlock, StoredFill, StoredOrder, StoredPosition, StoredSignal,
};

/// The error of a store call after it is open.
pub use sqlx::Error as SqlError;

/// Why a store cannot be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend kuant knows.
    #[error("unsupported store URL {0:?}: use postgres://… or sqlite://PATH (or a file path)")]
    UnsupportedUrl(String),
    /// The database cannot be reached or opened.
    #[error("cannot open the store at {url}: {source}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The store was migrated by a newer kuant.
    #[error(
        "the store's schema is newer than this kuant knows: it has migration {found}, this build knows up to {known}; upgrade kuant (or use another store)"
    )]
    NewerSchema {
        /// A migration version the store has and this build lacks.
        found: i64,
        /// The newest migration this build has.
        known: i64,
    },
    /// Applying the migrations failed.
    #[error("cannot migrate the store: {0}")]
    Migrate(#[source] MigrateError),
    /// A schema name that is not a plain lowercase identifier.
    #[error("schema name {0:?} must be lowercase letters, digits and _, starting with a letter")]
    InvalidSchema(String),
}

/// How long [`Store::open`] waits for an unreachable PostgreSQL.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which database a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// An open, migrated store.
#[derive(Clone, Debug)]
pub enum Store {
    /// PostgreSQL.
    Postgres(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

impl Store {
    /// Opens the store at `url` (`postgres://…`, `sqlite://PATH`, or a plain file path for
    /// SQLite, created when missing) and applies the migrations it lacks.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// [`Store::open`], giving up on an unreachable PostgreSQL after `connect_timeout`.
    pub async fn open_with(url: &str, connect_timeout: std::time::Duration) -> Result<Self, StoreError> {
        let shown = redact(url);
        let connect = |source| StoreError::Connect { url: shown.clone(), source };
        let store = match backend_of(url)? {
            Backend::Postgres => Self::Postgres(
                PgPoolOptions::new()
                    .max_connections(8)
                    // An unreachable database is reported within seconds, not half a minute.
                    .acquire_timeout(connect_timeout)
                    .connect(url)
                    .await
                    .map_err(connect)?,
            ),
            Backend::Sqlite => {
                let options = if url.starts_with("sqlite:") {
                    SqliteConnectOptions::from_str(url).map_err(connect)?
                } else {
                    SqliteConnectOptions::new().filename(url)
                };
                let options = options
                    .create_if_missing(true)
                    .foreign_keys(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(std::time::Duration::from_secs(10));
                Self::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        .connect_with(options)
                        .await
                        .map_err(connect)?,
                )
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The newest schema version this build knows.
    pub fn known_version(&self) -> i64 {
        let migrator = match self {
            Self::Postgres(_) => &POSTGRES,
            Self::Sqlite(_) => &SQLITE,
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// Whether the store answers and its schema is the one this build knows (what a readiness
    /// probe asks): the newest applied migration, or why not.
    pub async fn ready(&self) -> Result<i64, String> {
        let applied: Result<Option<i64>, sqlx::Error> = sql::with_pool!(self, pool => {
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await
        });
        match applied {
            Ok(Some(v)) if v == self.known_version() => Ok(v),
            Ok(v) => Err(format!(
                "the store's schema is at migration {}, this build expects {}",
                v.unwrap_or(0),
                self.known_version()
            )),
            Err(e) => Err(format!("the store does not answer: {e}")),
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let known = self.known_version();
        let result = match self {
            Self::Postgres(pool) => POSTGRES.run(pool).await,
            Self::Sqlite(pool) => SQLITE.run(pool).await,
        };
        match result {
            Ok(()) => Ok(()),
            Err(MigrateError::VersionMissing(found)) => Err(StoreError::NewerSchema { found, known }),
            Err(e) => Err(StoreError::Migrate(e)),
        }
    }
}

/// Drops and re-creates `schema` in the PostgreSQL database at `url`, and returns a URL whose
/// connections use it: a store that starts empty, for tests and benchmarks that share one
/// server. `schema` must be a plain lowercase identifier.
pub async fn fresh_schema(url: &str, schema: &str) -> Result<String, StoreError> {
    let plain = schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63;
    if !plain {
        return Err(StoreError::InvalidSchema(schema.to_owned()));
    }
    let connect = |source| StoreError::Connect { url: redact(url), source };
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(DEFAULT_CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(connect)?;
    // `schema` is checked above to be a plain identifier.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
    )))
    .execute(&admin)
    .await
    .map_err(connect)?;
    admin.close().await;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}options=-c%20search_path%3D{schema}"))
}

/// The backend a URL names.
pub fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite:") || !url.contains("://") {
        Ok(Backend::Sqlite)
    } else {
        Err(StoreError::UnsupportedUrl(redact(url)))
    }
}

/// `url` without the password of its user part, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((user_part, host_part)) = rest.split_once('@') else { return url.to_owned() };
    match user_part.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host_part}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_passwords_never_show() {
        assert_eq!(backend_of("postgres://u@h/db").ok(), Some(Backend::Postgres));
        assert_eq!(backend_of("sqlite:///tmp/k.db").ok(), Some(Backend::Sqlite));
        assert_eq!(backend_of("/home/me/.local/share/kuant/kuant.db").ok(), Some(Backend::Sqlite));
        let err = backend_of("mysql://root:hunter2@h/db").expect_err("unsupported");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(redact("postgres://kuant:s3cret@db:5432/kuant"), "postgres://kuant:***@db:5432/kuant");
    }

    #[test]
    fn only_plain_schema_names_are_made_fresh() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        for bad in ["Public", "x; DROP TABLE runs", "1st", ""] {
            let err = runtime.block_on(fresh_schema("postgres://nobody@127.0.0.1:1/x", bad));
            assert!(matches!(err, Err(StoreError::InvalidSchema(_))), "{bad:?}: refused before connecting");
        }
    }
}

/// A row an agent wrote to a table the live feeds follow (fills, orders, positions,
/// block_events, risk_allocations, candles), as PostgreSQL announced it.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveRow {
    /// The table.
    pub table: String,
    /// `INSERT` or `UPDATE`.
    pub op: String,
    /// The row, every number as a string (decimals stay exact), times as ISO 8601 text.
    pub row: serde_json::Value,
}

/// The announcements of a PostgreSQL store (`LISTEN kuant_live`).
pub struct LiveListener {
    listener: sqlx::postgres::PgListener,
    /// Rows of other schemas of the same database are not this store's.
    schema: String,
}

impl LiveListener {
    /// The next row written, waiting for it. A lost connection is re-established inside (rows
    /// written meanwhile are not announced); an announcement that cannot be read is skipped.
    pub async fn next(&mut self) -> Result<LiveRow, SqlError> {
        loop {
            let notification = self.listener.recv().await?;
            let Ok(value) = serde_json::from_str::<serde_json::Value>(notification.payload()) else {
                tracing::warn!("skipping an unreadable live notification");
                continue;
            };
            if value["schema"].as_str() != Some(self.schema.as_str()) {
                continue;
            }
            let text = |k: &str| value[k].as_str().unwrap_or_default().to_owned();
            return Ok(LiveRow { table: text("table"), op: text("op"), row: value["row"].clone() });
        }
    }
}

impl Store {
    /// Listens to the rows agents write, on PostgreSQL; `None` on SQLite, which cannot announce
    /// writes of other processes.
    pub async fn listen_live(&self) -> Result<Option<LiveListener>, SqlError> {
        let Self::Postgres(pool) = self else { return Ok(None) };
        // The schema the store's tables are in (the triggers name the table's schema).
        let schema: String = sqlx::query_scalar(
            "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = 'fills'::regclass",
        )
        .fetch_one(pool)
        .await?;
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen("kuant_live").await?;
        Ok(Some(LiveListener { listener, schema }))
    }
}
