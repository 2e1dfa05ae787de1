//! The `.local` lookups one viewer conversation has under way ([`Output::Resolve`]): a task
//! each, whose answer comes back as the conversation's next event; they end with it.
//!
//! [`Output::Resolve`]: crate::session::machine::Output::Resolve

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::mdns::Resolver;
use crate::session::mdns::MAX_LOOKUPS_PER_CALL;

/// A name and its address, or `None` if it did not resolve.
pub(super) type Resolved = (String, Option<IpAddr>);

/// Lookups under way for one conversation.
pub(super) struct NameLookups {
    resolver: Option<Arc<Resolver>>,
    tasks: JoinSet<()>,
    tx: mpsc::Sender<Resolved>,
    rx: mpsc::Receiver<Resolved>,
}

impl NameLookups {
    /// Lookups through `resolver` (`None`: resolution is off, every name fails).
    pub(super) fn new(resolver: Option<Arc<Resolver>>) -> NameLookups {
        // The session asks for at most MAX_LOOKUPS_PER_CALL names at once.
        let (tx, rx) = mpsc::channel(MAX_LOOKUPS_PER_CALL);
        NameLookups {
            resolver,
            tasks: JoinSet::new(),
            tx,
            rx,
        }
    }

    /// Starts resolving `name`; its answer comes from [`NameLookups::next`].
    pub(super) fn start(&mut self, name: String) {
        while self.tasks.try_join_next().is_some() {}
        let resolver = self.resolver.clone();
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            let address = match resolver {
                Some(r) => r.resolve(&name).await,
                None => None,
            };
            let _ = tx.send((name, address)).await;
        });
    }

    /// The next lookup that ended (waits forever when none is under way).
    pub(super) async fn next(&mut self) -> Resolved {
        match self.rx.recv().await {
            Some(resolved) => resolved,
            // Never: `self` holds a sender.
            None => std::future::pending().await,
        }
    }
}
