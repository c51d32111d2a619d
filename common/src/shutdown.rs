//! Process-wide shutdown: SIGTERM or Ctrl-C starts a bounded drain by
//! cancelling one token; a second signal exits at once.

use tokio_util::sync::CancellationToken;

/// Exit code used when a second signal cuts the drain short (128 + SIGINT).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Returns a token cancelled on the first SIGTERM or Ctrl-C. Must be called
/// inside a Tokio runtime.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received, draining (send another to exit at once)");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal, exiting without draining");
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
