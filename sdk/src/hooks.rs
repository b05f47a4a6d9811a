//! The traits a plugin implements, one per hook interface of the contract.
//!
//! Each takes no `self`: a plugin's type is a marker named in the export macro
//! (`export_guard!(MyGuard)`), and every call is independent. State that must survive a call
//! belongs in the store, not in the plugin; the host may reinstantiate it at any time.

use crate::context::{Context, FilterContext};
use crate::types::{Decision, Event, Op, PolicyRequest, Value, Verdict};

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

/// An RBAC policy hook (`cairn:plugin/policy`): refines a static-role decision.
///
/// Must be deterministic.
pub trait Policy {
    /// Decides on `request`; [`PolicyRequest::allowed_by_roles`] is what the roles decided.
    fn check(ctx: &Context<'_>, request: &PolicyRequest) -> Decision;
}

/// A watch filter (`cairn:plugin/watch-filter`): drops or rewrites events for one watcher.
pub trait WatchFilter {
    /// Decides what the watcher sees of `event`.
    fn filter(ctx: &FilterContext<'_>, event: Event) -> Verdict;
}

/// A reactor (`cairn:plugin/reactor`): watch-driven, runs on the leader; the writes it
/// returns are proposed as one txn.
pub trait Reactor {
    /// Reacts to `events`, which happened at `revision`, with the writes to propose (none:
    /// nothing to do).
    fn react(ctx: &Context<'_>, revision: i64, events: &[Event]) -> Vec<Op>;
}
