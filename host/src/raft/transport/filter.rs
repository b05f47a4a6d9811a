//! The link filter: how tests put faults between members that run in one process.
//!
//! A member started through the library ([`crate::server::Server::start`]) with a
//! [`LinkFilter`] in its config asks the filter about every peer message it sends (each
//! vote, each append on a replication stream, each heartbeat, snapshot and forwarded request)
//! and about every envelope it receives. The filter may let the message through, hold it for
//! a while (which also reorders messages on different streams), or drop it (the sender then
//! sees the peer as unreachable, as on a broken connection).
//!
//! No flag or endpoint installs a filter: only a program that links Cairn as a library can,
//! so the `cairn` binary has no fault hook. The in-process cluster of the test harness
//! (`tests/src/inproc.rs`) shares one seeded filter among its members, in the manner of
//! openraft's test router and TiKV's transport filters.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What happens to one message from one member to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    /// Delivered after this long.
    Delay(Duration),
    /// Never delivered; the sender sees the peer as unreachable.
    Drop,
}

/// Decides the fate of peer messages. Implementations must be cheap: they are asked once per
/// message.
pub trait LinkFilter: Send + Sync + 'static {
    /// Asked by the sender of each message from member `from` to member `to`.
    fn outbound(&self, from: u64, to: u64) -> Verdict;

    /// Asked by the receiver of each envelope: whether the link from `from` to `to` is cut
    /// (a partition), so that what was already on its way when the cut began is refused too.
    fn is_cut(&self, from: u64, to: u64) -> bool;
}

/// A member's filter, if it has one (the `cairn` binary never does).
#[derive(Clone, Default)]
pub struct Filter(Option<Arc<dyn LinkFilter>>);

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Filter(installed)"
        } else {
            "Filter(none)"
        })
    }
}

/// Why the filter kept a message from being sent.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("dropped by the link filter")]
pub struct Dropped;

impl Filter {
    pub fn new(filter: Arc<dyn LinkFilter>) -> Self {
        Filter(Some(filter))
    }

    /// Waits out a delay, or fails for a dropped message, from `from` to `to`.
    pub async fn outbound(&self, from: u64, to: u64) -> Result<(), Dropped> {
        let Some(filter) = &self.0 else {
            return Ok(());
        };
        match filter.outbound(from, to) {
            Verdict::Deliver => Ok(()),
            Verdict::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Verdict::Drop => Err(Dropped),
        }
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.0.as_ref().is_some_and(|f| f.is_cut(from, to))
    }
}
