//! `/api/v1/events`: agent events filtered by run or session, chain, type and source; and
//! `/api/v1/chains/{correlation_id}`: one chain in causal order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use kuant_store::EventFilter;

use crate::AppState;
use crate::backtests::{Event, Page};
use crate::error::ApiError;
use crate::params::{Params, encode_cursor};

/// Whether `text` is a UUID in its canonical form (what the store keeps).
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

/// One page of events; `run` fixed by the route, or taken from the `run` parameter.
pub async fn page(
    state: &AppState,
    mut params: Params,
    run: Option<String>,
) -> Result<Json<Page<Event>>, ApiError> {
    let run_id = match run {
        Some(run) => Some(run),
        None => params.text("run", 256),
    };
    let correlation_id = params.text("correlation_id", 36);
    let filter = EventFilter {
        run_id,
        event_type: params.text("type", 64),
        source: params.text("source", 128),
        after: params.cursor(),
        limit: i64::from(params.limit(100)),
        correlation_id: correlation_id.clone(),
    };
    params.finish()?;
    if let Some(id) = &correlation_id
        && !is_uuid(id)
    {
        return Err(ApiError::invalid_field("correlation_id", "must be a lowercase UUID"));
    }
    if let Some((_, id)) = &filter.after
        && !is_uuid(id)
    {
        return Err(ApiError::invalid_field("cursor", "not a cursor this API returned"));
    }
    let events = state.store.list_events(&filter).await?;
    let next_cursor = match events.last() {
        Some(last) if events.len() as i64 == filter.limit => {
            Some(encode_cursor(last.occurred_at_ms, &last.event_id))
        }
        _ => None,
    };
    Ok(Json(Page { items: events.into_iter().map(Event::from).collect(), next_cursor }))
}

/// `GET /api/v1/events?run=&correlation_id=&type=&source=&limit=&cursor=`
pub async fn list(State(state): State<Arc<AppState>>, params: Params) -> Result<Json<Page<Event>>, ApiError> {
    page(&state, params, None).await
}

/// `GET /api/v1/chains/{correlation_id}`: the chain's events in causal order (a cause before
/// what it caused; among events with the same cause, by time then id).
pub async fn chain(
    State(state): State<Arc<AppState>>,
    Path(correlation_id): Path<String>,
    params: Params,
) -> Result<Json<Vec<Event>>, ApiError> {
    params.finish()?;
    if !is_uuid(&correlation_id) {
        return Err(ApiError::invalid_field("correlation_id", "must be a lowercase UUID"));
    }
    let events = state.store.events_of_chain(&correlation_id).await?;
    if events.is_empty() {
        return Err(ApiError::not_found(format!("no events in chain {correlation_id}")));
    }
    Ok(Json(causal_order(events.into_iter().map(Event::from).collect())))
}

/// `events` (in time order) with every cause before its effects: a depth-first walk from the
/// roots (no cause, or a cause outside the chain), children in time order.
fn causal_order(events: Vec<Event>) -> Vec<Event> {
    let ids: HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    let mut children: HashMap<String, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, e) in events.iter().enumerate() {
        match &e.causation_id {
            Some(cause) if ids.contains(cause) && *cause != e.id => {
                children.entry(cause.clone()).or_default().push(i)
            }
            _ => roots.push(i),
        }
    }
    let mut order = Vec::with_capacity(events.len());
    let mut seen = vec![false; events.len()];
    let mut stack: Vec<usize> = roots.into_iter().rev().collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        order.push(i);
        if let Some(kids) = children.get(&events[i].id) {
            stack.extend(kids.iter().rev());
        }
    }
    // A cycle (bad data) leaves events unvisited: they follow, in time order.
    order.extend((0..events.len()).filter(|i| !seen[*i]));
    let mut slots: BTreeMap<usize, Event> = events.into_iter().enumerate().collect();
    order.into_iter().filter_map(|i| slots.remove(&i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &'static str, cause: Option<&'static str>) -> impl Fn(i64) -> Event {
        move |at| Event {
            id: id.into(),
            run_id: "r".into(),
            correlation_id: "c".into(),
            causation_id: cause.map(str::to_owned),
            event_type: "t".into(),
            source: "s".into(),
            occurred_at_ms: at,
            payload: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_chain_reads_cause_first_even_when_times_tie_or_disagree() {
        // The fill and the order share a millisecond and the fill's id sorts first.
        let events = vec![
            e("a-fill", Some("b-order")),
            e("b-order", Some("c-intent")),
            e("c-intent", Some("d-signal")),
            e("d-signal", None),
        ]
        .into_iter()
        .map(|f| f(5))
        .collect::<Vec<_>>();
        let order: Vec<String> = causal_order(events).into_iter().map(|e| e.id).collect();
        assert_eq!(order, ["d-signal", "c-intent", "b-order", "a-fill"]);
        assert!(is_uuid("00000000-0000-4000-8000-00000000000a"));
        assert!(!is_uuid("00000000-0000-4000-8000-00000000000A") && !is_uuid("nope"));
    }
}
