//! SIGINT and SIGTERM, as a stream the daemon can wait on more than once (a
//! second signal during the shutdown stops the waiting), and SIGHUP, which
//! asks for the certificates to be read again.

/// The installed handlers.
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; from now on the signals no longer kill the process.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next signal and names it.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Waits for the next stop signal or SIGHUP.
    pub async fn next(&mut self) -> Event {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Event::Stop("SIGINT"),
                _ = self.terminate.recv() => Event::Stop("SIGTERM"),
                Some(()) = self.hangup.recv() => Event::Hangup,
            }
        }
        #[cfg(not(unix))]
        {
            Event::Stop(self.recv().await)
        }
    }
}

/// What [`Signals::next`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGINT or SIGTERM (named): shut down.
    Stop(&'static str),
    /// SIGHUP: read the certificates again.
    Hangup,
}
