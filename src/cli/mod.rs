//! Subcommands that run in the foreground of a user's terminal.

pub mod backtest;
pub mod exchange_sim;
pub mod ops_api;
pub mod progress;
pub mod reconcile;
pub mod session;
pub mod store;

/// Exit code for bad input: a broken manifest, bad data, a bad flag or output path.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for an internal error.
pub const EXIT_INTERNAL: u8 = 1;

/// Says `message` on stderr as an error and exits with `code`.
pub fn fail(code: u8, message: impl std::fmt::Display) -> std::process::ExitCode {
    eprintln!("error: {message}");
    std::process::ExitCode::from(code)
}

/// Resolves on Ctrl-C or SIGTERM: the servers of `ops-api` and `exchange-sim` stop on it.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
