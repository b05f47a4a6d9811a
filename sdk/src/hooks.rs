//! The traits a plugin implements, one per hook interface of the contract.
//!
//! Each takes no `self`: a plugin's type is a marker named in the export macro
//! (`export_guard!(MyGuard)`), and every call is independent. State that must survive a call
//! belongs in the store, not in the plugin; the host may reinstantiate it at any time.

use crate::context::{Context, FilterContext};
use crate::types::{Answer, Decision, Event, Op, PolicyRequest, Value, Verdict, Watcher};

/// A transaction guard (`cairn:plugin/guard`): runs in apply for every write whose key falls
/// in the binding's range, and may deny the whole request.
///
/// Must be deterministic: the same config, ops and store give the same decision on every
/// member.
pub trait Guard {
    /// Decides on `ops`, the request's writes in the bound range in request order (a txn's
    /// ops from the branch that runs).
    fn check(ctx: &Context<'_>, ops: &[Op]) -> Decision;
}

/// A computed compare (`cairn:plugin/compare`): the left side of a Txn compare, computed from
/// the store.
///
/// Must be deterministic.
pub trait Compare {
    /// Computes the value for `argument`, which comes from the compare; an error makes the
    /// compare false.
    fn compute(ctx: &Context<'_>, argument: &[u8]) -> Result<Value, String>;
}

/// An RBAC policy hook (`cairn:plugin/policy`): refines what a user's roles decide about a
/// request touching the bound range. Runs in apply for writes and on the serving member for
/// reads and watches; never for root, never while authentication is off.
///
/// Must be deterministic: for a time, use [`Context::now_ms`] (the log entry's time in apply).
pub trait Policy {
    /// Answers for `request`; each [`Access`](crate::Access) says what the roles decided.
    fn check(ctx: &Context<'_>, request: &PolicyRequest) -> Answer;
}

/// A watch filter (`cairn:plugin/watch-filter`): passes, drops or rewrites the events of one
/// watcher, on the member serving it.
///
/// Unlike the other hooks, a filter has state: [`WatchFilter::open`] makes one value per
/// watcher, and every event of that watcher goes through it, in revision order. It need not
/// be deterministic (it runs outside the replicated state machine), but it is bounded by fuel
/// and a deadline per call.
pub trait WatchFilter: Sized + 'static {
    /// Opens the filter for `watcher`; an error refuses it, and the watch is canceled with
    /// the error as its reason.
    fn open(ctx: &FilterContext<'_>, watcher: &Watcher) -> Result<Self, String>;

    /// Decides what the watcher sees of `event`.
    fn filter(&mut self, ctx: &FilterContext<'_>, event: &Event) -> Verdict;
}

/// A reactor (`cairn:plugin/reactor`): watch-driven, runs on the leader; the writes it
/// returns are proposed as one txn.
pub trait Reactor {
    /// Reacts to `events`, which happened at `revision`, with the writes to propose (none:
    /// nothing to do).
    fn react(ctx: &Context<'_>, revision: i64, events: &[Event]) -> Vec<Op>;
}
