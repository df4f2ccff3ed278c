//! SIGTERM / SIGINT: the first starts a graceful drain, a second one stops at once. SIGHUP
//! reloads the config file (`reload.rs`), and is caught even when there is none.

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
    }
}

/// Catch SIGHUP for the life of the process when no config file is watched (the reloader
/// catches it otherwise): its default action ends the process, and an operator's or an
/// orchestrator's `kill -HUP` asking for a reload must not stop the proxy. Call inside the
/// runtime.
pub fn catch_hangup_without_config() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!(
                        "SIGHUP received: no config file (--config, TOKENWARDEN_CONFIG) to reload"
                    );
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; a SIGHUP ends the process"),
    }
}
