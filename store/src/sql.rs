//! One statement for both backends. A query is written once, in PostgreSQL's placeholder style,
//! with a few marks where the dialects differ; [`render`] turns it into each backend's SQL:
//!
//! | mark          | PostgreSQL                                       | SQLite |
//! |---------------|--------------------------------------------------|--------|
//! | `$n`          | `$n`                                             | `?n`   |
//! | `{ts $n}`     | `to_timestamp($n::bigint / 1000.0)` (Unix ms in) | `?n`   |
//! | `{num $n}`    | `$n::numeric` (a decimal's text in)              | `?n`   |
//! | `{uuid $n}`   | `$n::uuid`                                       | `?n`   |
//! | `{ms col}`    | `round(extract(epoch FROM col) * 1000)::bigint`  | `col`  |
//! | `{text col}`  | `col::text` (a NUMERIC or UUID read as text)     | `col`  |
//! | `{int col}`   | `col::bigint` (an INTEGER read as i64)           | `col`  |
//! | `{now}`       | the statement's time to the millisecond          | Unix ms |
//!
//! SQLite keeps times as INTEGER Unix milliseconds, decimals as TEXT and UUIDs as TEXT, so its
//! side is the bare value. The statements are constants of this crate, never user input.

use sqlx::{Database, Pool, QueryBuilder};

use crate::Backend;

/// Runs `$body` with `$pool` bound to the store's pool, whichever backend it is. The body is
/// written once and type-checked for each backend.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::Store::Postgres($pool) => $body,
            $crate::Store::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Begins a transaction that writes. SQLite's plain `BEGIN` is deferred: a transaction that
/// reads before it writes (the ledger checks its accounts first) fails at once with "database is
/// locked" when another connection wrote in between — the busy timeout does not apply to that
/// upgrade. `BEGIN IMMEDIATE` takes the write lock up front, so concurrent writers (a session's
/// recorder and its paper account) wait their turn instead.
pub(crate) trait BeginWrite {
    /// The backend.
    type Db: Database;
    /// A transaction holding the right to write.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>;
}

impl BeginWrite for sqlx::PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error> {
        self.begin().await
    }
}

impl BeginWrite for sqlx::SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Executes `$sql` once per row of `$rows`, binding each with `|q, row| q.bind(…)…`, all in one
/// transaction; the number of rows inserted (a row whose key is already stored counts 0).
macro_rules! insert_each {
    ($store:expr, $sql:expr, $rows:expr, |$q:ident, $row:ident| $binds:expr) => {{
        let sql: sqlx::AssertSqlSafe<String> = $sql;
        let mut inserted = 0_u64;
        $crate::sql::with_pool!($store, pool => {
            let mut tx = $crate::sql::BeginWrite::begin_write(pool).await?;
            for $row in $rows {
                let $q = sqlx::query(sqlx::AssertSqlSafe(sql.0.clone()));
                inserted += $binds.execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        inserted
    }};
}
pub(crate) use insert_each;

/// `template` in `backend`'s dialect (see the module docs).
pub(crate) fn render(backend: Backend, template: &str) -> sqlx::AssertSqlSafe<String> {
    let pg = backend == Backend::Postgres;
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find(['{', '$']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix('$') {
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            out.push(if pg { '$' } else { '?' });
            out.push_str(&after[..digits]);
            rest = &after[digits..];
            continue;
        }
        let Some(end) = tail.find('}') else {
            out.push_str(tail);
            rest = "";
            break;
        };
        let mark = &tail[1..end];
        let (kind, arg) = mark.split_once(' ').unwrap_or((mark, ""));
        let param = |arg: &str| arg.replacen('$', if pg { "$" } else { "?" }, 1);
        let piece = match (kind, pg) {
            ("ts", true) => format!("to_timestamp({arg}::bigint / 1000.0)"),
            ("num", true) => format!("{arg}::numeric"),
            ("uuid", true) => format!("{arg}::uuid"),
            ("ts" | "num" | "uuid", false) => param(arg),
            ("ms", true) => format!("round(extract(epoch FROM {arg}) * 1000)::bigint"),
            ("text", true) => format!("{arg}::text"),
            ("int", true) => format!("{arg}::bigint"),
            ("ms" | "text" | "int", false) => arg.to_owned(),
            // Milliseconds, as every time kuant reads back: a cursor on a time then compares exactly.
            ("now", true) => "date_trunc('milliseconds', now())".to_owned(),
            ("now", false) => "CAST(unixepoch('subsec') * 1000 AS INTEGER)".to_owned(),
            // Not a mark (a JSON literal, say): kept as written.
            _ => tail[..=end].to_owned(),
        };
        out.push_str(&piece);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    sqlx::AssertSqlSafe(out)
}

/// The casts a multi-row INSERT puts after each bound value, by backend: empty for SQLite.
#[derive(Clone, Copy)]
pub(crate) struct Casts {
    pub numeric: &'static str,
    pub ts_open: &'static str,
    pub ts_close: &'static str,
}

impl Casts {
    pub(crate) fn of(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                Self { numeric: "::numeric", ts_open: "to_timestamp(", ts_close: "::bigint / 1000.0)" }
            }
            Backend::Sqlite => Self { numeric: "", ts_open: "", ts_close: "" },
        }
    }
}

/// A query builder for `pool`'s backend, starting with `sql`.
pub(crate) fn builder<DB: Database>(_pool: &Pool<DB>, sql: &'static str) -> QueryBuilder<DB> {
    QueryBuilder::new(sql)
}

/// Rows per multi-row INSERT: well under both backends' limits on bound parameters (PostgreSQL
/// 65,535; SQLite 32,766) at up to ten columns.
pub const BATCH_ROWS: usize = 1000;

/// Rows per PostgreSQL bulk statement over arrays (`UNNEST`): one bound array per column, so
/// no parameter limit applies; the size bounds memory per round trip.
pub const PG_ARRAY_BATCH_ROWS: usize = 10_000;

/// The last millisecond of year 9999: query bounds are clamped to it (and to [`MIN_TIME_MS`])
/// so that "until forever" (`i64::MAX`) means the same on both backends instead of an
/// out-of-range timestamp on PostgreSQL.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// The first millisecond of year 1.
pub const MIN_TIME_MS: i64 = -62_135_596_800_000;

/// `ms` as a query bound both backends accept.
pub(crate) fn bound(ms: i64) -> i64 {
    ms.clamp(MIN_TIME_MS, MAX_TIME_MS)
}

/// A decimal read back from its text.
pub(crate) fn decimal(column: &str, text: &str) -> Result<rust_decimal::Decimal, sqlx::Error> {
    text.parse().map_err(|e| sqlx::Error::Decode(format!("{column} {text:?}: {e}").into()))
}

/// An optional decimal read back from its text.
pub(crate) fn decimal_opt(
    column: &str,
    text: Option<String>,
) -> Result<Option<rust_decimal::Decimal>, sqlx::Error> {
    text.map(|t| decimal(column, &t)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_template_renders_each_dialect() {
        let t = "INSERT INTO f (a, at, p, c) VALUES ($1, {ts $2}, {num $3}, {uuid $10}) RETURNING {ms at}, {text p}";
        assert_eq!(
            render(Backend::Postgres, t).0,
            "INSERT INTO f (a, at, p, c) VALUES ($1, to_timestamp($2::bigint / 1000.0), $3::numeric, $10::uuid) \
             RETURNING round(extract(epoch FROM at) * 1000)::bigint, p::text"
        );
        assert_eq!(
            render(Backend::Sqlite, t).0,
            "INSERT INTO f (a, at, p, c) VALUES (?1, ?2, ?3, ?10) RETURNING at, p"
        );
        assert_eq!(render(Backend::Sqlite, "SELECT '{}' WHERE x = $1").0, "SELECT '{}' WHERE x = ?1");
        assert_eq!(render(Backend::Postgres, "SET u = {now}").0, "SET u = date_trunc('milliseconds', now())");
    }
}
