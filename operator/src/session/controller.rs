//! The TradingSession controller's IO: read the StatefulSet, its pod, the credentials Secret's
//! metadata and the namespace's other sessions; run the pure [`plan`]; carry out its decision;
//! write the operator's part of the status; record the Events. Nothing here decides anything.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kuant_crds::TradingSession;
use kuant_crds::session::{TradingMode, TradingSessionStatus};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Api, Resource, ResourceExt};

use super::plan::{self, Children, FINALIZER, Finalizer, Observed};
use super::{children, plan::operator_part};
use crate::backtest::controller::{Context, Error, ensure_agent_identity, publish};
use crate::{FIELD_MANAGER, names};

/// Reconciles one TradingSession.
pub async fn reconcile(session: Arc<TradingSession>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = session.namespace().ok_or(Error::Metadata("namespace"))?;
    let name = session.metadata.name.clone().ok_or(Error::Metadata("name"))?;
    let uid = session.metadata.uid.clone().ok_or(Error::Metadata("uid"))?;
    let deleting = session.metadata.deletion_timestamp.is_some();
    if deleting && !session.finalizers().iter().any(|f| f == FINALIZER) {
        // Its children go with it, through their ownerReferences.
        return Ok(Requeue::await_change());
    }
    let sessions: Api<TradingSession> = Api::namespaced(ctx.client.clone(), &namespace);
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);

    // Read.
    let child = names::session_agent(&name, &uid);
    let stateful_set = sets.get_opt(&child).await.map_err(Error::api("reading the StatefulSet"))?;
    let pod = match &stateful_set {
        Some(_) => pods.get_opt(&format!("{child}-0")).await.map_err(Error::api("reading the agent pod"))?,
        None => None,
    };
    let live = session.spec.mode == TradingMode::Live && !deleting;
    // Only the Secret's metadata is read: its keys never reach the operator.
    let secret = match session.spec.exchange.credentials_secret_ref.as_ref().filter(|_| live) {
        Some(reference) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            match secrets
                .get_metadata_opt(&reference.name)
                .await
                .map_err(Error::api("reading the credentials Secret's metadata"))?
            {
                Some(_) => plan::Secret::Present,
                None => plan::Secret::Missing,
            }
        }
        None => plan::Secret::NotNeeded,
    };
    let neighbours = if live && session.spec.exchange.credentials_secret_ref.is_some() {
        sessions
            .list(&ListParams::default())
            .await
            .map_err(Error::api("listing the namespace's sessions"))?
            .items
    } else {
        Vec::new()
    };

    // Decide.
    let image = children::agent_image(&session, stateful_set.as_ref(), &ctx.session_agent.image);
    let observed =
        Observed { stateful_set: stateful_set.as_ref(), pod: pod.as_ref(), secret, neighbours: &neighbours };
    let plan = plan::plan(&session, observed, &ctx.session_agent, &image, &(ctx.now)());

    // The finalizer before any child: a session deleted from now on waits for its agent.
    if plan.finalizer == Finalizer::Add {
        sessions
            .patch(&name, &PatchParams::default(), &Patch::Json::<()>(add_finalizer(&session)))
            .await
            .map_err(Error::api("adding the finalizer"))?;
    }
    match &plan.children {
        Children::Keep => {}
        Children::Apply(desired) => {
            let (stateful_set, service) = desired.as_ref();
            ensure_agent_identity(&ctx, &namespace, &ctx.session_agent).await?;
            let apply = PatchParams::apply(FIELD_MANAGER).force();
            let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
            services
                .patch(&child, &apply, &Patch::Apply(service))
                .await
                .map_err(Error::api("applying the agent's Service"))?;
            sets.patch(&child, &apply, &Patch::Apply(stateful_set))
                .await
                .map_err(Error::api("applying the agent's StatefulSet"))?;
        }
        Children::Delete(set) => {
            // Background: the pod gets its grace period, in which the agent cancels its orders.
            sets.delete(set, &DeleteParams::background())
                .await
                .map_err(Error::api("deleting the refused session's StatefulSet"))?;
        }
    }

    // The operator's fields only, by server-side apply: the agent's (heartbeat, portfolio, its
    // conditions) are its own, under its own field manager. No resourceVersion: the agent
    // writes every 5 s, and each reconcile decides afresh.
    if operator_part(&session.status.clone().unwrap_or_default()) != plan.status {
        sessions
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&status_patch(&plan.status)),
            )
            .await
            .map_err(Error::api("writing the status"))?;
    }
    let reference = session.object_ref(&());
    publish(&ctx, &reference, &plan.notes).await;

    // Last: the session (and through it the StatefulSet and pod) may go.
    if plan.finalizer == Finalizer::Remove
        && let Some(patch) = remove_finalizer(&session)
    {
        sessions
            .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .map_err(Error::api("removing the finalizer"))?;
    }
    ctx.succeeded(&reference);
    Ok(match plan.recheck {
        Some(after) => Requeue::requeue(after),
        None => Requeue::await_change(),
    })
}

/// A TradingSession status as a server-side apply body (the operator's part, or the agent's).
pub fn status_patch(status: &TradingSessionStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kuant.dev/v1alpha1",
        "kind": "TradingSession",
        "status": status,
    })
}

/// A JSON patch adding [`FINALIZER`], refused if the finalizers changed since they were read.
fn add_finalizer(session: &TradingSession) -> json_patch::Patch {
    let ops = match &session.metadata.finalizers {
        None => serde_json::json!([{ "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }]),
        Some(list) => serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": list },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
        ]),
    };
    serde_json::from_value(ops).unwrap_or_else(|_| json_patch::Patch(Vec::new()))
}

/// A JSON patch removing [`FINALIZER`] (tested at its index first), if the session has it.
fn remove_finalizer(session: &TradingSession) -> Option<json_patch::Patch> {
    let index = session.finalizers().iter().position(|f| f == FINALIZER)?;
    let path = format!("/metadata/finalizers/{index}");
    let ops = serde_json::json!([
        { "op": "test", "path": path, "value": FINALIZER },
        { "op": "remove", "path": path },
    ]);
    serde_json::from_value(ops).ok()
}

/// Runs the TradingSession controller until `shutdown` resolves: watches TradingSessions, their
/// StatefulSets and the agent pods, and reconciles at most `concurrency` sessions at once.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::utils::{PredicateConfig, WatchStreamExt};
    use kube::runtime::{Controller, controller, reflector, watcher};

    let client = ctx.client.clone();
    let sessions: Api<TradingSession> = Api::all(client.clone());
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client);
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=kuant-operator");
    // Filtered at the source: a session triggers a reconcile when its generation, deletion or
    // resume annotation change, or when its agent reports a change of condition or open orders
    // (plan::trigger); the heartbeat every 5 s does not. A lost heartbeat is caught by the
    // recheck each reconcile asks for.
    let (reader, writer) = reflector::store();
    let trigger = watcher::watcher(sessions, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(plan::trigger, PredicateConfig::default());
    let controller = Controller::for_stream(trigger, reader)
        .owns(sets, managed)
        .watches(pods, watcher::Config::default().labels(children::POD_SELECTOR), |pod: Pod| {
            let name = pod.annotations().get(children::ANNOTATION_SESSION)?.clone();
            Some(ObjectRef::<TradingSession>::new(&name).within(&pod.namespace()?))
        })
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown);
    crate::backtest::controller::drive(controller, ctx, "TradingSession", reconcile).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_patches_test_what_they_change() {
        let mut s: TradingSession = serde_json::from_value(serde_json::json!({
            "apiVersion": "kuant.dev/v1alpha1", "kind": "TradingSession",
            "metadata": {"name": "s", "namespace": "n"},
            "spec": {"exchange": {"name": "binance"}, "symbols": ["BTCUSDT"],
                     "strategies": [{"name": "sma-crossover", "allocationPct": 50}],
                     "budget": {"amount": "100"}}
        }))
        .expect("a session");
        let added = serde_json::to_value(add_finalizer(&s)).expect("json");
        assert_eq!(added[0]["path"], "/metadata/finalizers");
        assert!(remove_finalizer(&s).is_none());
        s.metadata.finalizers = Some(vec!["other".into(), FINALIZER.into()]);
        let added = serde_json::to_value(add_finalizer(&s)).expect("json");
        assert_eq!(
            (added[0]["op"].as_str(), added[1]["path"].as_str()),
            (Some("test"), Some("/metadata/finalizers/-"))
        );
        let removed = serde_json::to_value(remove_finalizer(&s)).expect("json");
        assert_eq!(removed[0]["path"], "/metadata/finalizers/1");
        assert_eq!(removed[1]["op"], "remove");
    }
}
