//! The bridge's stop signal, as its tasks use it.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// A task's view of the daemon's shutdown flag.
///
/// The flag turning `true` stops the task; so does its sender being dropped,
/// since then nobody could ever stop the task.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub(crate) fn new(receiver: watch::Receiver<bool>) -> Self {
        Self(receiver)
    }

    /// Resolves once shutdown is asked for.
    pub(crate) async fn wait(&mut self) {
        loop {
            if *self.0.borrow_and_update() {
                return;
            }
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs `work` until it finishes (`Some`) or shutdown is asked for
    /// (`None`; `work` is dropped).
    pub(crate) async fn run<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.wait() => None,
            output = work => Some(output),
        }
    }

    /// Sleeps for `delay`; `true` when shutdown came first.
    pub(crate) async fn sleep(&mut self, delay: Duration) -> bool {
        self.run(tokio::time::sleep(delay)).await.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_early_on_shutdown_and_work_is_dropped() {
        let (tx, rx) = watch::channel(false);
        let mut shutdown = Shutdown::new(rx);
        assert!(!shutdown.sleep(Duration::from_secs(1)).await);
        assert_eq!(shutdown.run(async { 7 }).await, Some(7));

        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = tx.send(true);
            tx
        });
        let started = tokio::time::Instant::now();
        assert!(shutdown.sleep(Duration::from_secs(60)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(shutdown.run(std::future::pending::<()>()).await, None);
        drop(stopper.await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_sender_stops_the_task() {
        let (tx, rx) = watch::channel(false);
        let mut shutdown = Shutdown::new(rx);
        drop(tx);
        assert!(shutdown.sleep(Duration::from_secs(60)).await);
    }
}
