//! kuant's store. In a cluster it is PostgreSQL; on a laptop an embedded SQLite file. Opening a
//! store applies the migrations it lacks (never by hand: an un-applied schema is a classic
//! failure) and refuses a store whose schema is newer than this build knows.

use std::str::FromStr;

use rust_decimal::Decimal;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// The PostgreSQL schema, embedded at build time.
static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");
/// The SQLite schema: the same tables in SQLite's dialect.
static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");

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
}

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
        let shown = redact(url);
        let connect = |source| StoreError::Connect { url: shown.clone(), source };
        let store = match backend_of(url)? {
            Backend::Postgres => Self::Postgres(
                PgPoolOptions::new()
                    .max_connections(8)
                    // An unreachable database is reported within seconds, not half a minute.
                    .acquire_timeout(std::time::Duration::from_secs(10))
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
}

/// What a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// A Backtest.
    Backtest,
    /// A TradingSession.
    Session,
    /// A Reconciliation.
    Reconciliation,
}

impl RunKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Backtest => "backtest",
            Self::Session => "session",
            Self::Reconciliation => "reconciliation",
        }
    }
}

/// A run (a Backtest, a TradingSession or a Reconciliation), keyed by the id its events carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The run's id.
    pub run_id: String,
    /// What it is.
    pub kind: RunKind,
    /// Namespace of its resource (absent for a local run).
    pub namespace: Option<String>,
    /// Name of its resource.
    pub name: String,
    /// The spec it ran with.
    pub spec: serde_json::Value,
    /// Its phase.
    pub phase: String,
}

/// One agent event as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// The event's id (a UUID): writing the same id twice keeps one row.
    pub event_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The id of the chain's first event (a UUID).
    pub correlation_id: String,
    /// signal, intent, order_submitted, fill, trade_blocked, …
    pub event_type: String,
    /// The agent that wrote it.
    pub source: String,
    /// When it happened, Unix milliseconds.
    pub occurred_at_ms: i64,
    /// Its fields.
    pub payload: serde_json::Value,
}

/// Rows per multi-row INSERT: well under both backends' limits on bound parameters (PostgreSQL
/// 65,535; SQLite 32,766) at seven columns.
pub const BATCH_ROWS: usize = 1000;

type PgEventRow = (String, String, String, String, String, i64, sqlx::types::Json<serde_json::Value>);

impl Store {
    /// Records `run`, or updates its phase when it is already there.
    pub async fn upsert_run(&self, run: &Run) -> Result<(), sqlx::Error> {
        // One bind list for both backends; only the placeholders differ.
        macro_rules! write {
            ($pool:expr, $sql:expr) => {{
                sqlx::query($sql)
                    .bind(&run.run_id)
                    .bind(run.kind.as_str())
                    .bind(&run.namespace)
                    .bind(&run.name)
                    .bind(sqlx::types::Json(&run.spec))
                    .bind(&run.phase)
                    .execute($pool)
                    .await?;
            }};
        }
        match self {
            Self::Postgres(pool) => write!(
                pool,
                "INSERT INTO runs (run_id, kind, namespace, name, spec, phase) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id) DO UPDATE SET phase = EXCLUDED.phase"
            ),
            Self::Sqlite(pool) => write!(
                pool,
                "INSERT INTO runs (run_id, kind, namespace, name, spec, phase) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (run_id) DO UPDATE SET phase = excluded.phase"
            ),
        };
        Ok(())
    }

    /// Writes `events` in one transaction, in multi-row statements of [`BATCH_ROWS`]; an event
    /// whose id is already stored is skipped, so a retried write duplicates nothing. Returns how
    /// many rows were new.
    pub async fn insert_events(&self, events: &[StoredEvent]) -> Result<u64, sqlx::Error> {
        const INSERT: &str = "INSERT INTO events (event_id, run_id, correlation_id, event_type, source, occurred_at, payload) ";
        let mut inserted = 0;
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in events.chunks(BATCH_ROWS) {
                    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(INSERT);
                    q.push_values(chunk, |mut row, e| {
                        row.push_bind(&e.event_id)
                            .push_unseparated("::uuid")
                            .push_bind(&e.run_id)
                            .push_bind(&e.correlation_id)
                            .push_unseparated("::uuid")
                            .push_bind(&e.event_type)
                            .push_bind(&e.source)
                            .push("to_timestamp(")
                            .push_bind_unseparated(e.occurred_at_ms)
                            .push_unseparated("::bigint / 1000.0)")
                            .push_bind(sqlx::types::Json(&e.payload));
                    });
                    q.push(" ON CONFLICT (event_id) DO NOTHING");
                    inserted += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in events.chunks(BATCH_ROWS) {
                    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(INSERT);
                    q.push_values(chunk, |mut row, e| {
                        row.push_bind(&e.event_id)
                            .push_bind(&e.run_id)
                            .push_bind(&e.correlation_id)
                            .push_bind(&e.event_type)
                            .push_bind(&e.source)
                            .push_bind(e.occurred_at_ms)
                            .push_bind(sqlx::types::Json(&e.payload));
                    });
                    q.push(" ON CONFLICT (event_id) DO NOTHING");
                    inserted += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
            }
        }
        Ok(inserted)
    }

    /// Writes a run's equity points `(Unix ms, equity)` in one transaction, in multi-row
    /// statements; a point already stored for that time keeps its first value. Returns how many
    /// rows were new.
    pub async fn insert_equity(&self, run_id: &str, points: &[(i64, f64)]) -> Result<u64, sqlx::Error> {
        const INSERT: &str = "INSERT INTO equity_points (run_id, at, equity) ";
        // Shortest text that reads back as the same float; NUMERIC/TEXT keep it exactly.
        let text: Vec<(i64, String)> = points.iter().map(|&(at, e)| (at, format!("{e:?}"))).collect();
        let mut inserted = 0;
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in text.chunks(BATCH_ROWS) {
                    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(INSERT);
                    q.push_values(chunk, |mut row, (at, equity)| {
                        row.push_bind(run_id)
                            .push("to_timestamp(")
                            .push_bind_unseparated(*at)
                            .push_unseparated("::bigint / 1000.0)")
                            .push_bind(equity)
                            .push_unseparated("::numeric");
                    });
                    q.push(" ON CONFLICT (run_id, at) DO NOTHING");
                    inserted += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in text.chunks(BATCH_ROWS) {
                    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(INSERT);
                    q.push_values(chunk, |mut row, (at, equity)| {
                        row.push_bind(run_id).push_bind(*at).push_bind(equity);
                    });
                    q.push(" ON CONFLICT (run_id, at) DO NOTHING");
                    inserted += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
            }
        }
        Ok(inserted)
    }

    /// A run's equity points in time order.
    pub async fn equity_of_run(&self, run_id: &str) -> Result<Vec<(i64, f64)>, sqlx::Error> {
        let rows: Vec<(i64, String)> = match self {
            Self::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT round(extract(epoch FROM at) * 1000)::bigint, equity::text FROM equity_points
                     WHERE run_id = $1 ORDER BY at",
                )
                .bind(run_id)
                .fetch_all(pool)
                .await?
            }
            Self::Sqlite(pool) => {
                sqlx::query_as("SELECT at, equity FROM equity_points WHERE run_id = ?1 ORDER BY at")
                    .bind(run_id)
                    .fetch_all(pool)
                    .await?
            }
        };
        rows.into_iter()
            .map(|(at, e)| {
                e.parse::<f64>()
                    .map(|equity| (at, equity))
                    .map_err(|err| sqlx::Error::Decode(format!("equity {e:?} at {at}: {err}").into()))
            })
            .collect()
    }

    /// A run's events in the order they happened (ties by id), at most `limit`.
    pub async fn events_of_run(&self, run_id: &str, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
        self.events_where("run_id", run_id, limit).await
    }

    /// The events of one chain (a signal and what became of it), in order.
    pub async fn events_of_chain(&self, correlation_id: &str) -> Result<Vec<StoredEvent>, sqlx::Error> {
        self.events_where("correlation_id", correlation_id, i64::MAX).await
    }

    async fn events_where(
        &self,
        column: &'static str,
        value: &str,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let rows: Vec<PgEventRow> = match self {
            Self::Postgres(pool) => {
                let cast = if column == "correlation_id" { "::uuid" } else { "" };
                // `column` is one of two constants above, never input.
                let sql = format!(
                    "SELECT event_id::text, run_id, correlation_id::text, event_type, source,
                            round(extract(epoch FROM occurred_at) * 1000)::bigint, payload
                     FROM events WHERE {column} = $1{cast} ORDER BY occurred_at, event_id LIMIT $2"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(value).bind(limit).fetch_all(pool).await?
            }
            Self::Sqlite(pool) => {
                let sql = format!(
                    "SELECT event_id, run_id, correlation_id, event_type, source, occurred_at, payload
                     FROM events WHERE {column} = ?1 ORDER BY occurred_at, event_id LIMIT ?2"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(value).bind(limit).fetch_all(pool).await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(event_id, run_id, correlation_id, event_type, source, occurred_at_ms, payload)| {
                StoredEvent {
                    event_id,
                    run_id,
                    correlation_id,
                    event_type,
                    source,
                    occurred_at_ms,
                    payload: payload.0,
                }
            })
            .collect())
    }
}

/// An order as the store keeps it. Its client order id is the idempotency key an exchange sees.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredOrder {
    /// The client order id: unique forever.
    pub client_order_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// Its chain (a UUID).
    pub correlation_id: String,
    /// The exchange's id once it has one.
    pub exchange_order_id: Option<String>,
    /// Symbol.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// `market`, `limit`, …
    pub order_type: String,
    /// Base quantity.
    pub quantity: Decimal,
    /// Limit price, if any.
    pub limit_price: Option<Decimal>,
    /// Its state.
    pub status: String,
    /// When it was made, Unix ms.
    pub created_at_ms: i64,
}

/// A fill of an order.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFill {
    /// The fill's id (the exchange's trade id, or the engine's): writing it twice keeps one row.
    pub fill_id: String,
    /// The order it fills.
    pub client_order_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Execution price.
    pub price: Decimal,
    /// Base quantity.
    pub quantity: Decimal,
    /// Fee.
    pub fee: Decimal,
    /// Asset of the fee.
    pub fee_asset: String,
}

type FillRow = (String, String, String, i64, String, String, String, String);

fn decimal(column: &str, text: &str) -> Result<Decimal, sqlx::Error> {
    text.parse().map_err(|e| sqlx::Error::Decode(format!("{column} {text:?}: {e}").into()))
}

impl Store {
    /// Writes `orders`; one already stored (same client order id) is kept as it was. Returns
    /// how many were new.
    pub async fn insert_orders(&self, orders: &[StoredOrder]) -> Result<u64, sqlx::Error> {
        let mut inserted = 0;
        macro_rules! write_all {
            ($pool:expr, $sql:expr) => {{
                let mut tx = $pool.begin().await?;
                for o in orders {
                    inserted += sqlx::query($sql)
                        .bind(&o.client_order_id)
                        .bind(&o.run_id)
                        .bind(&o.correlation_id)
                        .bind(&o.exchange_order_id)
                        .bind(&o.symbol)
                        .bind(&o.side)
                        .bind(&o.order_type)
                        .bind(o.quantity.to_string())
                        .bind(o.limit_price.map(|p| p.to_string()))
                        .bind(&o.status)
                        .bind(o.created_at_ms)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
            }};
        }
        match self {
            Self::Postgres(pool) => write_all!(
                pool,
                "INSERT INTO orders (client_order_id, run_id, correlation_id, exchange_order_id, symbol, side,
                                     order_type, quantity, limit_price, status, created_at, updated_at)
                 VALUES ($1, $2, $3::uuid, $4, $5, $6, $7, $8::numeric, $9::numeric, $10,
                         to_timestamp($11::bigint / 1000.0), to_timestamp($11::bigint / 1000.0))
                 ON CONFLICT (client_order_id) DO NOTHING"
            ),
            Self::Sqlite(pool) => write_all!(
                pool,
                "INSERT INTO orders (client_order_id, run_id, correlation_id, exchange_order_id, symbol, side,
                                     order_type, quantity, limit_price, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)
                 ON CONFLICT (client_order_id) DO NOTHING"
            ),
        }
        Ok(inserted)
    }

    /// Writes `fills`; one already stored (same fill id) is kept as it was, so a retried write
    /// after a crash adds nothing. Returns how many were new.
    pub async fn insert_fills(&self, fills: &[StoredFill]) -> Result<u64, sqlx::Error> {
        let mut inserted = 0;
        macro_rules! write_all {
            ($pool:expr, $sql:expr) => {{
                let mut tx = $pool.begin().await?;
                for f in fills {
                    inserted += sqlx::query($sql)
                        .bind(&f.fill_id)
                        .bind(&f.client_order_id)
                        .bind(&f.run_id)
                        .bind(f.at_ms)
                        .bind(f.price.to_string())
                        .bind(f.quantity.to_string())
                        .bind(f.fee.to_string())
                        .bind(&f.fee_asset)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
            }};
        }
        match self {
            Self::Postgres(pool) => write_all!(
                pool,
                "INSERT INTO fills (fill_id, client_order_id, run_id, at, price, quantity, fee, fee_asset)
                 VALUES ($1, $2, $3, to_timestamp($4::bigint / 1000.0), $5::numeric, $6::numeric, $7::numeric, $8)
                 ON CONFLICT (fill_id) DO NOTHING"
            ),
            Self::Sqlite(pool) => write_all!(
                pool,
                "INSERT INTO fills (fill_id, client_order_id, run_id, at, price, quantity, fee, fee_asset)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (fill_id) DO NOTHING"
            ),
        }
        Ok(inserted)
    }

    /// A run's fills in the order they happened (ties by id).
    pub async fn fills_of_run(&self, run_id: &str) -> Result<Vec<StoredFill>, sqlx::Error> {
        let rows: Vec<FillRow> =
            match self {
                Self::Postgres(pool) => sqlx::query_as(
                    "SELECT fill_id, client_order_id, run_id, round(extract(epoch FROM at) * 1000)::bigint,
                            price::text, quantity::text, fee::text, fee_asset
                     FROM fills WHERE run_id = $1 ORDER BY at, fill_id",
                )
                .bind(run_id)
                .fetch_all(pool)
                .await?,
                Self::Sqlite(pool) => {
                    sqlx::query_as(
                        "SELECT fill_id, client_order_id, run_id, at, price, quantity, fee, fee_asset
                     FROM fills WHERE run_id = ?1 ORDER BY at, fill_id",
                    )
                    .bind(run_id)
                    .fetch_all(pool)
                    .await?
                }
            };
        rows.into_iter()
            .map(|(fill_id, client_order_id, run_id, at_ms, price, quantity, fee, fee_asset)| {
                Ok(StoredFill {
                    fill_id,
                    client_order_id,
                    run_id,
                    at_ms,
                    price: decimal("price", &price)?,
                    quantity: decimal("quantity", &quantity)?,
                    fee: decimal("fee", &fee)?,
                    fee_asset,
                })
            })
            .collect()
    }
}
