//! `kuant`: one binary, one container image, every role.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod cli;

/// kuant — Kubernetes-native crypto trading agents.
#[derive(Parser, Debug)]
#[command(name = "kuant", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (pipe to `kubectl apply --server-side -f -`).
    Crd(CrdArgs),
    /// Run the operator that reconciles Backtests, TradingSessions and Reconciliations.
    Operator(OperatorArgs),
    /// Run an agent inside a pod started by the operator.
    Agent {
        #[command(subcommand)]
        role: AgentRole,
    },
    /// Serve the ops API (REST + WebSocket) and the dashboard.
    OpsApi(OpsApiArgs),
    /// Run a Backtest manifest locally, without a cluster, and print its results.
    Backtest(cli::backtest::BacktestArgs),
    /// Run a TradingSession manifest locally, without a cluster: paper or live, on Binance, a
    /// running `kuant exchange-sim`, or an in-process simulator.
    Session(cli::session::SessionArgs),
    /// Run a Binance-spot-compatible exchange simulator that replays candles.
    ExchangeSim(cli::exchange_sim::ExchangeSimArgs),
    /// Compare a TradingSession's ledger with its exchange account's balances, once, locally.
    Reconcile(cli::reconcile::ReconcileArgs),
}

#[derive(clap::Args, Debug)]
struct CrdArgs {
    /// Write one file per CRD (`<plural>.kuant.dev.yaml`) into this folder instead of printing,
    /// e.g. `charts/kuant/crds` after changing the types.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct OperatorArgs {
    /// Take part in leader election through a Lease; only the leader reconciles.
    #[arg(long, env = "KUANT_LEADER_ELECTION")]
    leader_election: bool,
    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "KUANT_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// Image of the agent pods it creates (the chart passes its own image).
    #[arg(long, env = "KUANT_AGENT_IMAGE", default_value = "ghcr.io/kuant-dev/kuant:latest")]
    agent_image: String,
    /// ServiceAccount the agent pods run as, created in each namespace that has kuant resources.
    #[arg(long, env = "KUANT_AGENT_SERVICE_ACCOUNT", default_value = "kuant-agent")]
    agent_service_account: String,
    /// ClusterRole bound to that ServiceAccount, per namespace.
    #[arg(long, env = "KUANT_AGENT_CLUSTER_ROLE", default_value = "kuant-agent")]
    agent_cluster_role: String,
    /// ServiceAccount of TradingSession agent pods (rights of their own: their session's status
    /// and trading Lease), created in each namespace that has sessions.
    #[arg(long, env = "KUANT_SESSION_AGENT_SERVICE_ACCOUNT", default_value = "kuant-session-agent")]
    session_agent_service_account: String,
    /// ClusterRole bound to that ServiceAccount, per namespace.
    #[arg(long, env = "KUANT_SESSION_AGENT_CLUSTER_ROLE", default_value = "kuant-session-agent")]
    session_agent_cluster_role: String,
    /// Secret with the store's URL, in each Backtest's namespace: agents save their runs there.
    /// Unset: agents save nothing.
    #[arg(long, env = "KUANT_AGENT_DATABASE_SECRET")]
    agent_database_secret: Option<String>,
    /// Key of that Secret holding the URL.
    #[arg(long, env = "KUANT_AGENT_DATABASE_SECRET_KEY", default_value = "url")]
    agent_database_secret_key: String,
    /// Log level (`RUST_LOG`) of the agent pods.
    #[arg(long, env = "KUANT_AGENT_LOG_LEVEL", default_value = "info")]
    agent_log_level: String,
    /// Resources reconciled at once, at most (each kind); the rest wait their turn.
    #[arg(long, env = "KUANT_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Namespace of the leader-election Lease (the chart passes the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This operator's name in the Lease (the chart passes the pod name); default: the host name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[derive(Subcommand, Debug)]
enum AgentRole {
    /// Run the Backtest whose spec the operator handed to this pod.
    Backtest,
    /// Run a TradingSession's trading agent.
    Session,
    /// Run one Reconciliation pass.
    Reconcile,
}

#[derive(clap::Args, Debug)]
struct OpsApiArgs {
    /// Address to listen on. Without --tokens it must be a loopback address.
    #[arg(long, env = "KUANT_OPS_API_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The store: postgres://… or a SQLite file. Default: `KUANT_DATABASE_URL`, else the local
    /// store `kuant backtest` saves to (~/.local/share/kuant/kuant.db).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Token file: one `TOKEN ROLE` per line (roles viewer, trader, admin; a token may be given
    /// as `sha256:HEX`). Without it every request acts as admin, so the server only listens on a
    /// loopback address.
    #[arg(long, env = "KUANT_OPS_API_TOKENS", value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// With --cluster and no --tokens: the Secret (in the ops API's namespace) whose key `tokens`
    /// is the token file. The ops API makes it at first start, with one fresh admin token under
    /// the key `admin-token`, when it does not exist (the Helm chart's default).
    #[arg(
        long,
        env = "KUANT_OPS_API_TOKENS_SECRET",
        value_name = "NAME",
        conflicts_with = "tokens",
        requires = "cluster"
    )]
    tokens_secret: Option<String>,
    /// Also read and create the custom resources through the Kubernetes API server.
    #[arg(long)]
    cluster: bool,
    /// An origin browsers may call the API from (CORS), like https://dash.example.com; repeat
    /// for several. None: no cross-origin calls.
    #[arg(
        long = "cors-origin",
        env = "KUANT_OPS_API_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    cors_origins: Vec<String>,
    /// Backtests created through the API (without --cluster) may read CSV files under this
    /// directory; a relative `data.csv.path` is taken from here. Without it they may read CSV
    /// files only when the server runs without --tokens (its one user's files).
    #[arg(long, env = "KUANT_OPS_API_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Crd(CrdArgs { out_dir: Some(dir) }) => write_crds(&dir),
        Command::Crd(CrdArgs { out_dir: None }) => print_crds(),
        Command::Operator(args) => run_operator(args),
        Command::Agent { role: AgentRole::Backtest } => agent::backtest::run(),
        Command::Agent { role: AgentRole::Session } => agent::session::run(),
        Command::Agent { role: AgentRole::Reconcile } => agent::reconcile::run(),
        Command::OpsApi(args) => cli::ops_api::run(
            args.listen,
            args.store.as_deref(),
            cli::ops_api::TokenSource::of(args.tokens.as_deref(), args.tokens_secret.as_deref()),
            args.cluster,
            &args.cors_origins,
            args.data_dir.as_deref(),
        ),
        Command::Backtest(args) => cli::backtest::run(&args),
        Command::Session(args) => cli::session::run(&args),
        Command::ExchangeSim(args) => cli::exchange_sim::run(&args),
        Command::Reconcile(args) => cli::reconcile::run(&args),
    }
}

fn run_operator(args: OperatorArgs) -> ExitCode {
    use kuant_operator::backtest::job::AgentSettings;
    use kuant_operator::run::{Lease, Settings, run};
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("kuant-operator-{}", std::process::id()));
    let agent = AgentSettings {
        image: args.agent_image,
        service_account: args.agent_service_account,
        log_level: args.agent_log_level,
        cluster_role: args.agent_cluster_role,
        database_secret: args.agent_database_secret.filter(|s| !s.is_empty()),
        database_secret_key: args.agent_database_secret_key,
    };
    let settings = Settings {
        session_agent: AgentSettings {
            service_account: args.session_agent_service_account,
            cluster_role: args.session_agent_cluster_role,
            ..agent.clone()
        },
        agent,
        concurrency: args.concurrency,
        metrics_addr: args.metrics_addr,
        leader_election: args.leader_election.then_some(Lease { namespace: args.lease_namespace, identity }),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr so that stdout stays clean for YAML and JSON output.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn print_crds() -> ExitCode {
    let yaml = match kuant_crds::crds_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("error: cannot render the CRDs as YAML: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(yaml.as_bytes()).and_then(|()| stdout.flush()) {
        // A closed pipe (`kuant crd | head`) is not worth a panic.
        eprintln!("error: cannot write the CRDs: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn write_crds(dir: &std::path::Path) -> ExitCode {
    let files = match kuant_crds::crd_files() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: cannot render the CRDs as YAML: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, yaml) in files {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
