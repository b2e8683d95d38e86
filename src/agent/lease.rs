//! The session agent's trading Lease: orders leave only while this agent holds the Lease
//! `<session>-trader`, and it stops holding it — in its own eyes — as soon as one renewal fails.
//!
//! Written by hand rather than with kube-lease-manager (which the operator's leader election
//! uses): that library's `watch()` reports only changes of holder it has *seen*, so while the API
//! server is unreachable (a partitioned node) it keeps saying "leader" long after the Lease
//! expired and a replacement took it. Here the gate closes on the first renewal that fails or
//! does not answer within [`RENEW_EVERY`], so a pod cut off stops placing orders within one renew
//! period, well before the Lease (valid [`LEASE_SECONDS`] from its last renewal) can pass to
//! another pod. Like client-go's leader election, a Lease held by another is taken over only
//! when it has not changed for its whole duration *as observed by this process's clock*, so
//! clock skew between nodes does not matter.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

/// Seconds a Lease lasts without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often the holder renews (and a waiting pod looks): a third of the Lease, so two renewals
/// may fail before it lapses — but the first failure already shuts the gate.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
use kuant_operator::AGENT_FIELD_MANAGER as FIELD_MANAGER;

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// There is none: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or its holder let it lapse: take it.
    TakeOver,
    /// Another holds it (named): wait.
    Wait(String),
}

/// What this process last saw of another's Lease, and when (its own clock).
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    holder: String,
    renewed: Option<MicroTime>,
    at: Instant,
}

/// The step for `lease` (as read) by `identity` at `now`, given what was `seen` before; returns
/// the step and what is seen now.
pub fn step(
    lease: Option<&Lease>,
    identity: &str,
    seen: Option<&Seen>,
    now: Instant,
) -> (Step, Option<Seen>) {
    let Some(lease) = lease else {
        return (Step::Create, None);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return (Step::Renew, None);
    }
    if holder.is_empty() {
        return (Step::TakeOver, None);
    }
    let duration = Duration::from_secs(
        u64::try_from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS)).unwrap_or(15),
    );
    let current = Seen { holder: holder.clone(), renewed: spec.renew_time.clone(), at: now };
    match seen {
        // Unchanged for its whole duration on our clock: lapsed.
        Some(s) if s.holder == current.holder && s.renewed == current.renewed => {
            if now.duration_since(s.at) > duration {
                (Step::TakeOver, None)
            } else {
                (Step::Wait(holder), Some(s.clone()))
            }
        }
        _ => (Step::Wait(holder), Some(current)),
    }
}

/// `lease` (or a new one named `name`) as held by `identity` from `now`.
fn held(name: &str, lease: Option<Lease>, identity: &str, taking_over: bool) -> Lease {
    let now = MicroTime(jiff::Timestamp::now());
    let mut lease = lease.unwrap_or_else(|| Lease {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_default();
    if taking_over || spec.holder_identity.as_deref() != Some(identity) {
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.holder_identity = Some(identity.to_owned());
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    spec.renew_time = Some(now);
    lease.spec = Some(spec);
    lease
}

/// One look at the Lease: `Ok(true)` when this agent holds it now, `Ok(false)` when another does.
async fn attempt(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    seen: &mut Option<Seen>,
) -> Result<bool, kube::Error> {
    let lease = api.get_opt(name).await?;
    let (next, now_seen) = step(lease.as_ref(), identity, seen.as_ref(), Instant::now());
    *seen = now_seen;
    let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
    match next {
        Step::Create => {
            api.create(&params, &held(name, None, identity, true)).await?;
        }
        // A replace carries the resourceVersion read: if another wrote in between, it fails.
        Step::Renew => {
            api.replace(name, &params, &held(name, lease, identity, false)).await?;
        }
        Step::TakeOver => {
            api.replace(name, &params, &held(name, lease, identity, true)).await?;
        }
        Step::Wait(holder) => {
            tracing::debug!(%holder, "the trading Lease is held by another pod");
            return Ok(false);
        }
    }
    Ok(true)
}

/// Keeps trying to hold the Lease `name` as `identity` until every receiver of `holding` is
/// gone; `holding` says true only between a successful write and the next look, and turns false
/// at once when a look fails or does not answer within `every`.
pub async fn hold(
    api: Api<Lease>,
    name: String,
    identity: String,
    holding: watch::Sender<bool>,
    every: Duration,
) {
    let mut seen = None;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = holding.closed() => break,
            _ = ticks.tick() => {}
        }
        let held = match tokio::time::timeout(every, attempt(&api, &name, &identity, &mut seen)).await {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                if *holding.borrow() {
                    tracing::error!(error = %e, lease = %name, "the trading Lease could not be renewed: no orders until it is");
                }
                false
            }
            Err(_) => {
                if *holding.borrow() {
                    tracing::error!(lease = %name, "the API server did not answer the Lease renewal: no orders until it does");
                }
                false
            }
        };
        holding.send_if_modified(|h| {
            let changed = *h != held;
            *h = held;
            changed
        });
    }
    release(&api, &name, &identity).await;
}

/// Gives the Lease up (so the next pod need not wait for it to lapse), if this agent holds it.
async fn release(api: &Api<Lease>, name: &str, identity: &str) {
    let Ok(Some(mut lease)) = api.get_opt(name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(identity)) else {
        return;
    };
    spec.holder_identity = None;
    let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
    if let Err(e) = api.replace(name, &params, &lease).await {
        tracing::warn!(error = %e, lease = %name, "the trading Lease was not released; the next pod waits for it to lapse");
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use kuant_mock_api::{expect, not_found, ok, status};
    use serde_json::json;

    use super::*;

    fn lease(holder: &str, renewed: &str) -> Lease {
        serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "btc-trader", "namespace": "desk", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed}
        }))
        .expect("a Lease")
    }

    #[test]
    fn a_lease_is_created_renewed_or_taken_only_once_it_lapsed_on_our_clock() {
        let t0 = Instant::now();
        assert_eq!(step(None, "me", None, t0).0, Step::Create);
        assert_eq!(step(Some(&lease("me", "2026-12-07T10:00:00.000000Z")), "me", None, t0).0, Step::Renew);
        assert_eq!(step(Some(&lease("", "2026-12-07T10:00:00.000000Z")), "me", None, t0).0, Step::TakeOver);
        // Another's Lease, however old its renewTime (clocks differ), is waited on for its
        // whole duration from when we first saw it.
        let theirs = lease("other", "2020-01-01T00:00:00.000000Z");
        let (first, seen) = step(Some(&theirs), "me", None, t0);
        assert_eq!(first, Step::Wait("other".into()));
        let (later, seen) = step(Some(&theirs), "me", seen.as_ref(), t0 + Duration::from_secs(15));
        assert_eq!(later, Step::Wait("other".into()));
        assert_eq!(step(Some(&theirs), "me", seen.as_ref(), t0 + Duration::from_secs(16)).0, Step::TakeOver);
        // Renewed meanwhile: the wait starts again.
        let renewed = lease("other", "2020-01-01T00:00:05.000000Z");
        let (again, _) = step(Some(&renewed), "me", seen.as_ref(), t0 + Duration::from_secs(16));
        assert_eq!(again, Step::Wait("other".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_renewal_shuts_the_gate_within_one_renew_period() {
        const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/desk/leases";
        let (client, handle) = kuant_mock_api::client("desk");
        let api: Api<Lease> = Api::namespaced(client, "desk");
        let mine = lease("pod-0", "2026-12-07T10:00:00.000000Z");
        let script = vec![
            // Acquired: no Lease yet.
            expect(Method::GET, format!("{LEASES}/btc-trader"), not_found("leases", "btc-trader")),
            expect(Method::POST, LEASES, ok(serde_json::Value::Null)).checking(|query, body| {
                assert!(query.contains("fieldManager=kuant-agent"), "{query}");
                assert_eq!(body["spec"]["holderIdentity"], "pod-0");
                assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
            }),
            // Renewed once.
            expect(Method::GET, format!("{LEASES}/btc-trader"), ok(&mine)),
            expect(Method::PUT, format!("{LEASES}/btc-trader"), ok(serde_json::Value::Null)).checking(
                |_, body| {
                    assert_eq!(body["metadata"]["resourceVersion"], "7", "a replace of what was read");
                },
            ),
            // Then the API server is gone.
            expect(
                Method::GET,
                format!("{LEASES}/btc-trader"),
                status(503, "ServiceUnavailable", "unreachable"),
            ),
        ];
        let server = tokio::spawn(kuant_mock_api::play(handle, script));
        let (tx, mut rx) = watch::channel(false);
        let every = Duration::from_secs(5);
        let task = tokio::spawn(hold(api, "btc-trader".into(), "pod-0".into(), tx, every));
        rx.changed().await.expect("acquired");
        assert!(*rx.borrow_and_update());
        let acquired = Instant::now();
        rx.changed().await.expect("lost");
        assert!(!*rx.borrow_and_update(), "the gate shuts");
        let lost_after = Instant::now().duration_since(acquired);
        // The renewal at 5 s succeeded, the one at 10 s failed: shut at 10 s, within one renew
        // period of the last good renewal — the Lease itself runs until 20 s.
        assert!(lost_after <= every * 2, "{lost_after:?}");
        server.await.expect("every request made");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_does_not_answer_shuts_the_gate_too() {
        let (client, mut handle) = kuant_mock_api::client("desk");
        let api: Api<Lease> = Api::namespaced(client, "desk");
        let mine = lease("pod-0", "2026-12-07T10:00:00.000000Z");
        let (tx, mut rx) = watch::channel(true);
        let task = tokio::spawn(hold(api, "btc-trader".into(), "pod-0".into(), tx, Duration::from_secs(5)));
        // The first look is answered; the renewal's PUT never is (a partition).
        let (_, respond) = handle.next_request().await.expect("a GET");
        respond.send_response(
            http::Response::builder()
                .body(kube::client::Body::from(serde_json::to_vec(&mine).expect("json")))
                .expect("response"),
        );
        let (_put, _never) = handle.next_request().await.expect("a PUT");
        let started = Instant::now();
        rx.changed().await.expect("shut");
        assert!(!*rx.borrow());
        assert!(Instant::now().duration_since(started) <= Duration::from_secs(5));
        task.abort();
    }
}
