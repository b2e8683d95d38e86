//! The event chain every agent writes, and its retention.

use sqlx::types::Json;

use crate::Store;
use crate::sql::{BATCH_ROWS, BeginWrite, PG_ARRAY_BATCH_ROWS, bound, builder, render, with_pool};

/// One agent event as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// The event's id (a UUID): writing the same id twice keeps one row.
    pub event_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The id of the chain's first event (a UUID).
    pub correlation_id: String,
    /// The event that caused this one (a UUID); absent for the first of a chain.
    pub causation_id: Option<String>,
    /// signal, intent, order_submitted, fill, trade_blocked, …
    pub event_type: String,
    /// The agent that wrote it.
    pub source: String,
    /// When it happened, Unix milliseconds.
    pub occurred_at_ms: i64,
    /// Its fields.
    pub payload: serde_json::Value,
}

/// Which events [`Store::list_events`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    /// Only this run's or session's.
    pub run_id: Option<String>,
    /// Only this chain's (a UUID).
    pub correlation_id: Option<String>,
    /// Only this type.
    pub event_type: Option<String>,
    /// Only this agent's.
    pub source: Option<String>,
    /// Only those after this `(time, event id)` position (see [`StoredEvent::cursor`]).
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: i64,
}

impl StoredEvent {
    /// Where a page that ends with this event stops: pass it as [`EventFilter::after`].
    pub fn cursor(&self) -> (i64, String) {
        (self.occurred_at_ms, self.event_id.clone())
    }
}

type EventRow = (String, String, String, Option<String>, String, String, i64, Json<serde_json::Value>);

const EVENT_COLUMNS: &str =
    "{text event_id}, run_id, {text correlation_id}, {text causation_id}, event_type, source,
    {ms occurred_at}, payload";

impl Store {
    /// Writes `events` in one transaction, in multi-row statements of [`BATCH_ROWS`]; an event
    /// whose id is already stored is skipped, so a retried write duplicates nothing. Returns how
    /// many rows were new.
    pub async fn insert_events(&self, events: &[StoredEvent]) -> Result<u64, sqlx::Error> {
        let mut inserted = 0;
        match self {
            // PostgreSQL: each batch is one statement over arrays (UNNEST), so the server parses
            // one short statement per batch instead of one with thousands of placeholders.
            Store::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                for chunk in events.chunks(PG_ARRAY_BATCH_ROWS) {
                    let column = |f: fn(&StoredEvent) -> &str| chunk.iter().map(f).collect::<Vec<&str>>();
                    let payloads: Vec<String> = chunk.iter().map(|e| e.payload.to_string()).collect();
                    inserted += sqlx::query(
                        "INSERT INTO events (event_id, run_id, correlation_id, causation_id, event_type, source, occurred_at, payload)
                         SELECT e::uuid, r, c::uuid, k::uuid, t, s, to_timestamp(ms / 1000.0), p::jsonb
                         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[])
                              AS x(e, r, c, k, t, s, ms, p)
                         ON CONFLICT (event_id) DO NOTHING",
                    )
                    .bind(column(|e| &e.event_id))
                    .bind(column(|e| &e.run_id))
                    .bind(column(|e| &e.correlation_id))
                    .bind(chunk.iter().map(|e| e.causation_id.as_deref()).collect::<Vec<Option<&str>>>())
                    .bind(column(|e| &e.event_type))
                    .bind(column(|e| &e.source))
                    .bind(chunk.iter().map(|e| e.occurred_at_ms).collect::<Vec<i64>>())
                    .bind(payloads)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                for chunk in events.chunks(BATCH_ROWS) {
                    let mut q = builder(
                        pool,
                        "INSERT INTO events (event_id, run_id, correlation_id, causation_id, event_type, source, occurred_at, payload) ",
                    );
                    q.push_values(chunk, |mut row, e| {
                        row.push_bind(&e.event_id)
                            .push_bind(&e.run_id)
                            .push_bind(&e.correlation_id)
                            .push_bind(&e.causation_id)
                            .push_bind(&e.event_type)
                            .push_bind(&e.source)
                            .push_bind(e.occurred_at_ms)
                            .push_bind(Json(&e.payload));
                    });
                    q.push(" ON CONFLICT (event_id) DO NOTHING");
                    inserted += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
            }
        }
        Ok(inserted)
    }

    /// A run's events in the order they happened (ties by id), at most `limit`.
    pub async fn events_of_run(&self, run_id: &str, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = render(
            self.backend(),
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE run_id = $1 ORDER BY occurred_at, event_id LIMIT $2"
            ),
        );
        let rows: Vec<EventRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(run_id).bind(limit).fetch_all(pool).await?);
        Ok(rows.into_iter().map(stored_event).collect())
    }

    /// The events `filter` selects in the order they happened (ties by id), one page.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = render(
            self.backend(),
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events
                 WHERE ($1 IS NULL OR run_id = $1) AND ($2 IS NULL OR correlation_id = {{uuid $2}})
                   AND ($3 IS NULL OR event_type = $3) AND ($4 IS NULL OR source = $4)
                   AND ($5 IS NULL OR occurred_at > {{ts $6}} OR (occurred_at = {{ts $6}} AND event_id > {{uuid $5}}))
                 ORDER BY occurred_at, event_id LIMIT $7"
            ),
        );
        let (after_ms, after_id) = match &filter.after {
            Some((ms, id)) => (*ms, Some(id.as_str())),
            None => (0, None),
        };
        let rows: Vec<EventRow> = with_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(filter.run_id.as_deref())
                .bind(filter.correlation_id.as_deref())
                .bind(filter.event_type.as_deref())
                .bind(filter.source.as_deref())
                .bind(after_id)
                .bind(bound(after_ms))
                .bind(filter.limit.max(0))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(stored_event).collect())
    }

    /// A run's events after `after_ms` (exclusive) up to `until_ms` (inclusive), in order, at
    /// most `limit`: the page the API serves and a WebSocket catches up with.
    pub async fn events_between(
        &self,
        run_id: &str,
        after_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = render(
            self.backend(),
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events
                 WHERE run_id = $1 AND occurred_at > {{ts $2}} AND occurred_at <= {{ts $3}}
                 ORDER BY occurred_at, event_id LIMIT $4"
            ),
        );
        let rows: Vec<EventRow> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(run_id).bind(bound(after_ms)).bind(bound(until_ms)).bind(limit).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(stored_event).collect())
    }

    /// The events of one chain (a signal and what became of it), in order.
    pub async fn events_of_chain(&self, correlation_id: &str) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = render(
            self.backend(),
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE correlation_id = {{uuid $1}} ORDER BY occurred_at, event_id"
            ),
        );
        let rows: Vec<EventRow> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(correlation_id).fetch_all(pool).await?);
        Ok(rows.into_iter().map(stored_event).collect())
    }

    /// Retention: deletes the events that happened before `before_ms` (Unix ms) of the runs
    /// recorded before it, and returns how many. Both conditions hold for an event to go: a
    /// fresh backtest keeps its (historical) events, and a long live session loses only its old
    /// ones. Runs, their results, curves, trades, orders, fills and the ledger stay.
    pub async fn prune_events(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let sql = render(
            self.backend(),
            "DELETE FROM events WHERE occurred_at < {ts $1}
               AND run_id IN (SELECT run_id FROM runs WHERE created_at < {ts $1})",
        );
        Ok(
            with_pool!(self, pool => sqlx::query(sql).bind(bound(before_ms)).execute(pool).await?.rows_affected()),
        )
    }
}

fn stored_event(row: EventRow) -> StoredEvent {
    let (event_id, run_id, correlation_id, causation_id, event_type, source, occurred_at_ms, payload) = row;
    StoredEvent {
        event_id,
        run_id,
        correlation_id,
        causation_id,
        event_type,
        source,
        occurred_at_ms,
        payload: payload.0,
    }
}
