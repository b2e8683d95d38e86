//! The Backtest controller's IO: read the Job and its pods, run the pure [`plan`], carry out its
//! action, write the status, record the Events. Nothing here decides anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kuant_crds::{Backtest, BacktestStatus};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};

use super::job::AgentSettings;
use super::plan::{self, Action, Note, Observed, Severity};
use super::state::JOB_NAME_LABEL;
use crate::metrics::Metrics;
use crate::{FIELD_MANAGER, names};

/// Why a reconcile failed; the controller retries with a per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{what}: {source}")]
    Api {
        /// What the call was for.
        what: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The resource lacks metadata the API server always sets.
    #[error("the resource has no {0}")]
    Metadata(&'static str),
}

impl Error {
    pub(crate) fn api(what: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Api { what, source }
    }

    /// Whether the API server refused a write because the object changed since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Api { source: kube::Error::Api(status), .. } if status.is_conflict())
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// What Backtest agent pods get.
    pub agent: AgentSettings,
    /// What TradingSession agent pods get (their own ServiceAccount and role).
    pub session_agent: AgentSettings,
    /// Records Events on Backtests and TradingSessions.
    pub recorder: Recorder,
    /// Consecutive failures per resource (kind/namespace/name), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The clock (a test fixes it).
    pub(crate) now: fn() -> Time,
    /// Reconcile counts and durations.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// A context for `client`, with agent settings and an Event recorder.
    pub fn new(client: Client, agent: AgentSettings, recorder: Recorder) -> Self {
        Self {
            client,
            session_agent: agent.clone(),
            agent,
            recorder,
            failures: Mutex::default(),
            now: || Time(jiff::Timestamp::now()),
            metrics: Arc::default(),
        }
    }

    /// The same, with `session_agent` for TradingSession pods.
    pub fn with_session_agent(mut self, session_agent: AgentSettings) -> Self {
        self.session_agent = session_agent;
        self
    }

    /// The same, counting into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same with a fixed clock (tests).
    pub fn with_clock(mut self, now: fn() -> Time) -> Self {
        self.now = now;
        self
    }
}

/// Reconciles one Backtest.
pub async fn reconcile(backtest: Arc<Backtest>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = backtest.namespace().ok_or(Error::Metadata("namespace"))?;
    let name = backtest.metadata.name.clone().ok_or(Error::Metadata("name"))?;
    let uid = backtest.metadata.uid.clone().ok_or(Error::Metadata("uid"))?;
    // Being deleted: the garbage collector removes the Job and its pods through their
    // ownerReferences; there is nothing to write.
    if backtest.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let backtests: Api<Backtest> = Api::namespaced(ctx.client.clone(), &namespace);

    // Read. A finished Backtest needs neither (unless its Job still lacks its TTL): skip the pods.
    let job_name = names::backtest_job(&name, &uid);
    let job = jobs.get_opt(&job_name).await.map_err(Error::api("reading the Job"))?;
    let terminal = backtest.status.as_ref().is_some_and(plan::is_terminal);
    let job_pods = match &job {
        Some(_) if !terminal => {
            let selector = format!("{JOB_NAME_LABEL}={job_name}");
            pods.list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::api("listing the Job's pods"))?
                .items
        }
        _ => Vec::new(),
    };

    // Decide.
    let now = (ctx.now)();
    let plan = plan::plan(&backtest, Observed { job: job.as_ref(), pods: &job_pods }, &ctx.agent, &now);

    // A new Job first: a status naming a Job that does not exist would read as a lost run.
    if let Action::Create(job) = &plan.action {
        ensure_agent_identity(&ctx, &namespace, &ctx.agent).await?;
        jobs.patch(&job_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(job.as_ref()))
            .await
            .map_err(Error::api("creating the Job"))?;
    }

    // Write the status when it says something new. It carries the resourceVersion that was
    // read: a decision made on a stale copy (the watch cache lags behind our own writes) is
    // refused with a conflict and made again on a fresh one, so a recorded result is never
    // overwritten by a late look at a Job that is gone.
    let mut previous = backtest.status.clone().unwrap_or_default();
    previous.progress = None;
    if previous != plan.status {
        let body = status_patch(&plan.status, backtest.metadata.resource_version.as_deref());
        backtests
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await
            .map_err(Error::api("writing the status"))?;
    }

    // Only once the result (or the failure) is recorded may the Job go.
    match &plan.action {
        Action::None | Action::Create(_) => {}
        Action::SetTtl { job, seconds } => {
            // A merge patch: re-applying the Job with only this field would drop the rest of
            // what the operator applied at creation.
            let patch = serde_json::json!({ "spec": { "ttlSecondsAfterFinished": seconds } });
            jobs.patch(job, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api("setting the Job's TTL"))?;
        }
        Action::Delete { job } => {
            jobs.delete(job, &DeleteParams::background()).await.map_err(Error::api("deleting the Job"))?;
        }
    }

    publish(&ctx, &backtest.object_ref(&()), &plan.notes).await;
    ctx.succeeded(&backtest.object_ref(&()));
    Ok(match plan.recheck {
        Some(after) => Requeue::requeue(after),
        None => Requeue::await_change(),
    })
}

/// The status as a server-side apply body; with `resource_version`, the write is refused if the
/// Backtest changed since it was read.
pub fn status_patch(status: &BacktestStatus, resource_version: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({
        "apiVersion": "kuant.dev/v1alpha1",
        "kind": "Backtest",
        "status": status,
    });
    if let Some(version) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    body
}

/// The ServiceAccount and RoleBinding of `agent` in `namespace`, unless the ServiceAccount is
/// already there (the chart makes both in its own namespace, and they are Helm's to manage).
pub(crate) async fn ensure_agent_identity(
    ctx: &Context,
    namespace: &str,
    agent: &AgentSettings,
) -> Result<(), Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    if accounts
        .get_opt(&agent.service_account)
        .await
        .map_err(Error::api("reading the agent ServiceAccount"))?
        .is_some()
    {
        return Ok(());
    }
    let (account, binding) = super::job::agent_identity(namespace, agent);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), namespace);
    bindings
        .patch(&agent.service_account, &apply, &Patch::Apply(&binding))
        .await
        .map_err(Error::api("applying the agent RoleBinding"))?;
    // The ServiceAccount last: once it exists, both do.
    accounts
        .patch(&agent.service_account, &apply, &Patch::Apply(&account))
        .await
        .map_err(Error::api("applying the agent ServiceAccount"))?;
    Ok(())
}

/// An Event's note within the 1 KiB the events API accepts, cut on a character boundary.
fn event_note(message: &str) -> String {
    const MAX: usize = 1024;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Tells the user what `notes` say, as Events on `reference`. An Event that cannot be written
/// is logged, not retried: the status holds the same facts.
pub(crate) async fn publish(ctx: &Context, reference: &ObjectReference, notes: &[Note]) {
    for note in notes {
        let event = Event {
            type_: match note.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: note.reason.to_owned(),
            note: Some(event_note(&note.message)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, reference).await {
            tracing::warn!(
                kind = reference.kind.as_deref().unwrap_or_default(),
                name = reference.name.as_deref().unwrap_or_default(),
                namespace = reference.namespace.as_deref().unwrap_or_default(),
                error = %e,
                "cannot record an Event"
            );
        }
    }
}

impl Context {
    /// Forgets the failures of the resource `reference` names (its backoff starts over).
    pub(crate) fn succeeded(&self, reference: &ObjectReference) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&failure_key(reference));
        }
    }
}

fn failure_key(reference: &ObjectReference) -> String {
    format!(
        "{}/{}/{}",
        reference.kind.as_deref().unwrap_or_default(),
        reference.namespace.as_deref().unwrap_or_default(),
        reference.name.as_deref().unwrap_or_default()
    )
}

/// After a failed reconcile: retry this resource after 1 s, 2 s, 4 s … up to 5 minutes. A
/// conflict (it changed since it was read, e.g. by the agent's progress) is no failure: it is
/// retried in a second on a fresh copy.
pub fn error_policy<K>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Requeue
where
    K: Resource<DynamicType = ()>,
{
    let key = failure_key(&object.object_ref(&()));
    if error.is_conflict() {
        tracing::debug!(object = %key, "changed since read; deciding again");
        return Requeue::requeue(Duration::from_secs(1));
    }
    let attempts = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = backoff(attempts);
    tracing::warn!(object = %key, attempts, retry_in = ?delay, error = %error, "reconcile failed");
    Requeue::requeue(delay)
}

/// The delay before retry number `attempts` (1-based): doubling from 1 s, at most 5 minutes.
pub fn backoff(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    Duration::from_secs((1u64 << exponent).min(300))
}

/// Runs the Backtest controller until `shutdown` resolves: watches Backtests, their Jobs and the
/// Jobs' pods, and reconciles at most `concurrency` Backtests at once.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::utils::{PredicateConfig, WatchStreamExt, predicates};
    use kube::runtime::{Controller, controller, reflector, watcher};

    let client = ctx.client.clone();
    let backtests: Api<Backtest> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client);
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=kuant-operator");
    // What needs a reconcile is filtered at the source, not by a timer: a Backtest triggers one
    // when it is new (to this process) or its generation changes (spec, deletion); its status
    // changes (the agent's progress every second, the operator's own writes) do not. The store
    // still sees every change, so a reconcile reads the latest object. Its Job and pods
    // trigger one on each change, so a new or changed resource is acted on at once.
    let (reader, writer) = reflector::store();
    let trigger = watcher::watcher(backtests, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
    let controller = Controller::for_stream(trigger, reader)
        .owns(jobs, managed)
        .watches(pods, watcher::Config::default().labels(super::job::POD_SELECTOR), |pod: Pod| {
            let name = pod.annotations().get(super::job::ANNOTATION_BACKTEST)?.clone();
            Some(ObjectRef::<Backtest>::new(&name).within(&pod.namespace()?))
        })
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown);
    drive(controller, ctx, "Backtest", reconcile).await;
}

/// Runs `controller` until it ends: each reconcile of `kind` timed into the metrics, failures
/// retried by [`error_policy`], the outcome logged.
pub(crate) async fn drive<K, F, Fut>(
    controller: kube::runtime::Controller<K>,
    ctx: Arc<Context>,
    kind: &'static str,
    reconcile: F,
) where
    K: Clone
        + Resource<DynamicType = ()>
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Requeue, Error>> + Send + 'static,
{
    use futures::StreamExt;
    use kube::runtime::controller;
    controller
        .run(
            move |object, ctx: Arc<Context>| {
                let started = std::time::Instant::now();
                let running = reconcile(object, ctx.clone());
                async move {
                    let result = running.await;
                    ctx.metrics.observe(kind, started.elapsed(), result.is_err());
                    result
                }
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(controller::Error::ReconcilerFailed(..)) => {} // logged by error_policy
                // A child's change after its owner is gone: nothing to reconcile.
                Err(e @ controller::Error::ObjectNotFound(_)) => tracing::debug!(error = %e, "controller"),
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_are_cut_to_the_events_api_limit() {
        assert_eq!(event_note("short"), "short");
        let note = event_note(&"é".repeat(2000));
        assert!(note.len() <= 1024 && note.ends_with('…'), "{}", note.len());
    }

    #[test]
    fn a_status_write_carries_the_version_it_was_decided_on() {
        let body = status_patch(&BacktestStatus::default(), Some("42"));
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert!(status_patch(&BacktestStatus::default(), None).get("metadata").is_none());
    }

    #[test]
    fn the_backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }
}
