//! Waiting for the next deadline a sans-IO machine gave (`Output::Timeout(Option<Instant>)`),
//! for the tasks that drive them: the WebSocket loop, WHEP sessions, WHIP publications.

use std::time::Instant;

/// Waits until `deadline`, or forever without one (then only an input wakes the task).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
