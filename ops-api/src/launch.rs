//! `POST /api/v1/backtests` (trader role): a Backtest manifest as JSON, checked with the CRD's
//! own schema and rules (the words `kubectl apply` would print), then
//!
//! - **in a cluster** (`--cluster`): created through the API server, for the operator to run
//!   in a Job. 201 with the resource's id; 409 when it exists.
//! - **locally**: run in this process, [`MAX_LOCAL_RUNS`] at a time (later ones wait as
//!   `Pending`), its progress published on `/ws/live` (channel `progress`) and shown by
//!   `GET /api/v1/backtests/{namespace}/{name}`, its results saved to the store as `kuant
//!   backtest` saves them. 202 at once; 409 while a run of the same id is under way. A finished
//!   run of the same id is replaced, as `kuant backtest` replaces it.
//!
//! The namespace is the manifest's, else the service account's in a cluster and `local` here.
//!
//! A backtest run here reads with the server's rights, so what it may read is the server's
//! choice: a CSV file only under `--data-dir` (a relative `data.csv.path` is taken from there),
//! or anywhere when the server runs open on a loopback address for its one user; candles from
//! the default exchange URL only, unless open. Anything else is a 422 naming the field.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use kuant_agents::backtest::{self, Keep, Options};
use kuant_crds::Backtest;
use kuant_store::Run;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::AppState;
use crate::error::{ApiError, FieldError};
use crate::live::Feed;
use crate::params::Params;

/// Backtests run at once in this process; more wait their turn.
pub const MAX_LOCAL_RUNS: usize = 2;
/// Progress is published at most this often per run.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// What a create answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Created {
    /// `namespace/name`.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Pending`: it has not started yet.
    pub phase: String,
    /// Where it runs: `local` (this process) or `cluster` (a Job the operator starts).
    pub runs_in: &'static str,
    /// Where to follow it.
    pub links: Links,
}

/// Where to follow a created backtest.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Links {
    /// The backtest (status and progress).
    #[serde(rename = "self")]
    pub this: String,
    /// Its progress as it happens (`/ws/live?channels=progress&run=…`).
    pub progress: String,
}

/// Progress of a backtest this process runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// `Pending` (waiting for a slot), `Running`, `Saving`, `Succeeded` or `Failed`.
    pub phase: &'static str,
    /// Candles simulated so far.
    pub candles_processed: u64,
    /// Candles in the run (0 until they are loaded).
    pub candles_total: u64,
    /// candlesProcessed / candlesTotal × 100.
    pub percent: f64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The backtests this process runs.
#[derive(Debug)]
pub struct LocalRuns {
    under_way: Mutex<HashMap<String, Progress>>,
    slots: Arc<Semaphore>,
}

impl Default for LocalRuns {
    fn default() -> Self {
        Self { under_way: Mutex::new(HashMap::new()), slots: Arc::new(Semaphore::new(MAX_LOCAL_RUNS)) }
    }
}

impl LocalRuns {
    /// Progress of run `id`, while it is under way here.
    pub fn progress(&self, id: &str) -> Option<Progress> {
        self.under_way.lock().ok()?.get(id).cloned()
    }

    /// Claims `id`; false when a run of it is under way already.
    fn claim(&self, id: &str) -> bool {
        let Ok(mut runs) = self.under_way.lock() else { return false };
        if runs.contains_key(id) {
            return false;
        }
        runs.insert(id.to_owned(), Progress { phase: "Pending", ..Progress::default() });
        true
    }

    fn set(&self, id: &str, progress: &Progress) {
        if let Ok(mut runs) = self.under_way.lock() {
            runs.insert(id.to_owned(), progress.clone());
        }
    }

    fn release(&self, id: &str) {
        if let Ok(mut runs) = self.under_way.lock() {
            runs.remove(id);
        }
    }
}

/// Marks the runs under way here as Failed because the server is stopping (their threads do not
/// survive it), so none stays `Running` in the store forever. Returns how many.
pub async fn interrupt(state: &AppState) -> usize {
    let ids: Vec<String> =
        state.local_runs.under_way.lock().map(|runs| runs.keys().cloned().collect()).unwrap_or_default();
    let status = serde_json::json!({
        "phase": "Failed",
        "message": "interrupted: the ops API stopped before the run finished; create it again",
    });
    let mut interrupted = 0;
    for id in &ids {
        // One that finished meanwhile keeps its results.
        let unfinished =
            matches!(state.store.run(id).await, Ok(Some(run)) if !crate::cache::finished(&run.run.phase));
        if unfinished && state.store.finish_run(id, "Failed", Some(&status), None, now_ms()).await.is_ok() {
            tracing::warn!(id, "local backtest interrupted by the shutdown");
            interrupted += 1;
        }
    }
    interrupted
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The body of `POST /api/v1/backtests`: the Backtest CRD's own schema, as a component.
pub fn manifest_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let schema = kuant_crds::manifest::openapi_schema::<Backtest>()
        .unwrap_or_else(|_| serde_json::json!({"type": "object"}));
    generator.definitions_mut().insert("Backtest".to_owned(), schema);
    schemars::json_schema!({"$ref": "#/components/schemas/Backtest"})
}

/// Reads and checks the manifest in `body`: JSON, then the CRD's schema and rules.
pub fn read_manifest(body: &[u8]) -> Result<Backtest, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::malformed_body(e.to_string()))?;
    kuant_crds::manifest::from_value::<Backtest>(value, "body").map_err(|e| {
        ApiError::invalid_body(
            e.problems.into_iter().map(|p| FieldError { field: p.path, message: p.message }).collect(),
        )
    })
}

/// Refuses what a backtest run here may not read (see the module docs); resolves a relative
/// CSV path under the data directory.
fn confine(
    manifest: &mut Backtest,
    data_dir: Option<&std::path::Path>,
    trusted: bool,
) -> Result<(), ApiError> {
    use std::path::{Component, Path};
    if let Some(csv) = manifest.spec.data.csv.as_mut()
        && manifest.spec.data.source == kuant_crds::backtest::DataSource::Csv
    {
        let path = Path::new(&csv.path);
        match data_dir {
            Some(dir) => {
                let inside = if path.is_absolute() { path.strip_prefix(dir).ok() } else { Some(path) };
                let Some(relative) =
                    inside.filter(|p| p.components().all(|c| matches!(c, Component::Normal(_))))
                else {
                    return Err(ApiError::invalid_body(vec![FieldError {
                        field: "spec.data.csv.path".into(),
                        message: format!(
                            "this server reads CSV files only under its --data-dir {}",
                            dir.display()
                        ),
                    }]));
                };
                csv.path = dir.join(relative).to_string_lossy().into_owned();
            }
            None if trusted => {}
            None => {
                return Err(ApiError::invalid_body(vec![FieldError {
                    field: "spec.data.csv.path".into(),
                    message: "this server reads no CSV files (start it with --data-dir DIR to allow those under DIR)"
                        .into(),
                }]));
            }
        }
    }
    if !trusted && manifest.spec.data.exchange.as_ref().is_some_and(|e| e.base_url.is_some()) {
        return Err(ApiError::invalid_body(vec![FieldError {
            field: "spec.data.exchange.baseUrl".into(),
            message: "a shared server downloads candles from the exchange's own URL only; remove baseUrl"
                .into(),
        }]));
    }
    Ok(())
}

/// `POST /api/v1/backtests`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    params.finish()?;
    let body = body.map_err(|e| ApiError::new(e.status(), "malformed_body", e.body_text()))?;
    let mut manifest = read_manifest(&body)?;
    let name = manifest.metadata.name.clone().unwrap_or_default();
    if let Some(cluster) = &state.cluster {
        let namespace =
            manifest.metadata.namespace.clone().unwrap_or_else(|| cluster.default_namespace().to_owned());
        manifest.metadata.namespace = Some(namespace.clone());
        cluster.create_backtest(&manifest).await?;
        tracing::info!(namespace, name, "backtest created in the cluster");
        // Listed at once, before its agent starts; the resource has it either way.
        if let Err(e) = state.store.upsert_run(&backtest::persist::run_row(&manifest, "Pending")).await {
            tracing::warn!(namespace, name, error = %e, "created, but cannot record it in the store yet");
        }
        return Ok((StatusCode::CREATED, Json(created(namespace, name, "cluster"))));
    }
    let trusted = matches!(*state.tokens, crate::auth::Tokens::Open);
    confine(&mut manifest, state.data_dir.as_deref(), trusted)?;
    let namespace = manifest.metadata.namespace.clone().unwrap_or_else(|| "local".to_owned());
    manifest.metadata.namespace = Some(namespace.clone());
    let id = format!("{namespace}/{name}");
    if !state.local_runs.claim(&id) {
        return Err(ApiError::conflict(format!("backtest {id} is running; wait for it to finish")));
    }
    let run = backtest::persist::run_row(&manifest, "Pending");
    if let Err(e) = state.store.reset_run(&run).await {
        state.local_runs.release(&id);
        return Err(e.into());
    }
    publish(&state, &id, &Progress { phase: "Pending", ..Progress::default() });
    tokio::spawn(run_locally(state.clone(), run, manifest));
    tracing::info!(id, "backtest accepted to run here");
    Ok((StatusCode::ACCEPTED, Json(created(namespace, name, "local"))))
}

fn created(namespace: String, name: String, runs_in: &'static str) -> Created {
    let id = format!("{namespace}/{name}");
    Created {
        links: Links {
            this: format!("/api/v1/backtests/{id}"),
            progress: format!("/ws/live?channels=progress&run={id}"),
        },
        id,
        namespace,
        name,
        phase: "Pending".to_owned(),
        runs_in,
    }
}

fn publish(state: &AppState, id: &str, progress: &Progress) {
    state.local_runs.set(id, progress);
    let data = serde_json::to_value(progress).unwrap_or_default();
    state.hub.publish(Feed::Live, "progress", Some(id), None, now_ms(), &data);
}

/// Runs one accepted backtest to its end: wait for a slot, load, simulate (publishing progress),
/// save; or record why it failed. The run never stays `Running` after this returns.
async fn run_locally(state: Arc<AppState>, run: Run, manifest: Backtest) {
    let id = run.run_id.clone();
    let outcome = simulate_and_save(&state, &run, manifest).await;
    let last = match outcome {
        Ok(()) => Progress { phase: "Succeeded", percent: 100.0, ..final_counts(&state, &id) },
        Err(message) => {
            tracing::warn!(id, %message, "local backtest failed");
            let status = serde_json::json!({"phase": "Failed", "message": message});
            if let Err(e) = state.store.finish_run(&id, "Failed", Some(&status), None, now_ms()).await {
                tracing::error!(id, error = %e, "cannot record the failure of a local backtest");
            }
            Progress { phase: "Failed", message: Some(message), ..final_counts(&state, &id) }
        }
    };
    publish(&state, &id, &last);
    state.local_runs.release(&id);
}

fn final_counts(state: &AppState, id: &str) -> Progress {
    state.local_runs.progress(id).unwrap_or_default()
}

async fn simulate_and_save(state: &Arc<AppState>, run: &Run, manifest: Backtest) -> Result<(), String> {
    let id = run.run_id.clone();
    let _slot = state.local_runs.slots.clone().acquire_owned().await.map_err(|e| e.to_string())?;
    let running = Run { phase: "Running".to_owned(), ..run.clone() };
    state.store.upsert_run(&running).await.map_err(|e| format!("cannot record the run: {e}"))?;
    publish(state, &id, &Progress { phase: "Running", ..Progress::default() });

    let (tx, mut rx) = watch::channel((0u64, 0u64));
    let reporter = {
        let state = state.clone();
        let id = id.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let (done, total) = *rx.borrow_and_update();
                let percent = if total == 0 { 0.0 } else { done as f64 * 100.0 / total as f64 };
                let progress = Progress {
                    phase: "Running",
                    candles_processed: done,
                    candles_total: total,
                    percent: (percent * 100.0).round() / 100.0,
                    message: None,
                };
                publish(&state, &id, &progress);
                tokio::time::sleep(PROGRESS_EVERY).await;
            }
        })
    };
    let simulated = tokio::task::spawn_blocking(move || {
        let prepared = backtest::prepare(&manifest, &Options::default()).map_err(|e| e.to_string())?;
        let total: u64 = prepared.series.iter().map(|(_, s)| s.len() as u64).sum();
        tx.send_replace((0, total));
        let keep = Keep { equity_curve: true, events: true };
        let result = backtest::run(&prepared, keep, &mut |done, total| {
            tx.send_replace((done, total));
        })
        .map_err(|e| e.to_string())?;
        tx.send_replace((total, total));
        Ok::<_, String>(result)
    })
    .await;
    // The reporter ends with the sender; its last report goes out before the final phase.
    let _ = reporter.await;
    let result = simulated.map_err(|e| format!("the backtest stopped unexpectedly: {e}"))??;
    let counts = final_counts(state, &id);
    publish(state, &id, &Progress { phase: "Saving", ..counts });
    let namespace = run.namespace.as_deref();
    backtest::persist::save_into(&state.store, namespace, &run.spec, &result).await?;
    Ok(())
}
