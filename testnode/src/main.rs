//! `kuant-test-node`: see the crate's docs. Runs until it is stopped (SIGTERM, Ctrl-C); the pods'
//! processes go with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kuant_test_node::node::{self, Capacity};
use kuant_test_node::{Node, pod, spec};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config, ResourceExt};
use tokio::sync::watch;

#[derive(Parser)]
#[command(about = "A test node that runs the pods bound to it as local processes")]
struct Args {
    /// The Node's name.
    #[arg(long, default_value = "kuant-test-node")]
    name: String,
    /// An image repository and the binary it runs, `REPOSITORY=PATH` (repeatable; any tag).
    #[arg(long = "image", required = true)]
    images: Vec<String>,
    /// Where pods get their directories (volumes, logs, termination messages).
    #[arg(long)]
    work_dir: PathBuf,
    /// The CA of the API server's certificate, handed to pods (PEM).
    #[arg(long)]
    ca_file: PathBuf,
    /// Pods that may run at once.
    #[arg(long, default_value_t = 300)]
    max_pods: u32,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kuant-test-node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let images = spec::Images::parse(&args.images)?;
    let config = Config::infer().await.map_err(|e| format!("no kubeconfig: {e}"))?;
    let url = config.cluster_url.clone();
    let api_host = url.host().unwrap_or("127.0.0.1").to_owned();
    let api_port = url.port_u16().unwrap_or(443);
    let client = Client::try_from(config).map_err(|e| format!("a client: {e}"))?;
    std::fs::create_dir_all(&args.work_dir)
        .map_err(|e| format!("making {}: {e}", args.work_dir.display()))?;
    let capacity = Capacity { pods: args.max_pods, cpu: 1000, memory_gib: 1000 };
    node::register(&client, &args.name, &capacity).await.map_err(|e| e.to_string())?;
    tokio::spawn(node::heartbeat(client.clone(), args.name.clone(), capacity));
    tracing::info!(node = %args.name, max_pods = args.max_pods, "registered; running the pods bound to this node");

    let shared = Arc::new(Node {
        client: client.clone(),
        images,
        work: args.work_dir,
        api_url: format!("https://{api_host}:{api_port}"),
        api_host,
        api_port,
        ca_file: args.ca_file,
    });
    let pods: Api<Pod> = Api::all(client);
    let selector = watcher::Config::default().fields(&format!("spec.nodeName={}", args.name));
    let mut events = watcher::watcher(pods, selector).boxed();
    // Stopped (SIGTERM, Ctrl-C): the pods' processes go first.
    tokio::spawn(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping: killing every pod's processes");
        pod::kill_all();
        std::process::exit(0);
    });
    // Each pod's task, by uid, with the switch that stops it.
    let mut running: HashMap<String, watch::Sender<bool>> = HashMap::new();
    while let Some(event) = events.next().await {
        let pods = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => vec![(pod, false)],
            Ok(Event::Delete(pod)) => vec![(pod, true)],
            Ok(Event::Init | Event::InitDone) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "watching pods");
                Vec::new()
            }
        };
        for (pod, gone) in pods {
            let Some(uid) = pod.uid() else { continue };
            let deleting = gone || pod.metadata.deletion_timestamp.is_some();
            if let Some(stop) = running.get(&uid) {
                if deleting {
                    stop.send_replace(true);
                }
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if deleting || matches!(phase, Some("Succeeded" | "Failed")) {
                if deleting && !gone {
                    // Not ours any more (left by an earlier node process): remove it for good.
                    let (stop, rx) = watch::channel(true);
                    running.insert(uid, stop);
                    tokio::spawn(pod::run(shared.clone(), pod, rx));
                }
                continue;
            }
            let (stop, rx) = watch::channel(false);
            running.insert(uid, stop);
            tracing::debug!(pod = %pod.name_any(), "bound to this node");
            tokio::spawn(pod::run(shared.clone(), pod, rx));
        }
        running.retain(|_, stop| !stop.is_closed());
    }
    Err("the pod watch ended".into())
}
