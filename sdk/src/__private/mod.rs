//! Not public API: what the `export_*!` macros expand to. Plugin code never names anything
//! here, and it may change in any release.
//!
//! For each hook kind there is an adapter type, generic over the plugin's type, that
//! implements the generated `Guest` trait: it turns the WIT arguments into SDK types, builds a
//! [`Context`] over the host's store and log, calls the plugin's trait, and turns the answer
//! back.

pub mod bindings;
mod convert;

use std::marker::PhantomData;
use std::sync::Once;

use bindings::compare_world::exports::cairn::plugin::compare as wit_compare;
use bindings::guard_world::cairn::plugin::{log as wit_log, store as wit_store, types as wit};
use bindings::guard_world::exports::cairn::plugin::guard as wit_guard;
use bindings::policy_world::exports::cairn::plugin::policy as wit_policy;
use bindings::reactor_world::exports::cairn::plugin::reactor as wit_reactor;
use bindings::watch_filter_world::exports::cairn::plugin::watch_filter as wit_filter;

use crate::context::{Context, FilterContext, Level, LogSink};
use crate::hooks::{Compare, Guard, Policy, Reactor, WatchFilter};
use crate::store::Store;
use crate::types::{Event, KeyValue, Op, PolicyRequest};

/// Fails to compile unless `G` is a [`Guard`]; `export_guard!` calls it on every target.
pub const fn assert_guard<G: Guard>() {}

/// Fails to compile unless `C` is a [`Compare`].
pub const fn assert_compare<C: Compare>() {}

/// Fails to compile unless `P` is a [`Policy`].
pub const fn assert_policy<P: Policy>() {}

/// Fails to compile unless `W` is a [`WatchFilter`].
pub const fn assert_watch_filter<W: WatchFilter>() {}

/// Fails to compile unless `R` is a [`Reactor`].
pub const fn assert_reactor<R: Reactor>() {}

/// Sends a panic's message to the host's log (as a warning) before the trap that follows it;
/// on wasm32-unknown-unknown it would otherwise be lost. Installed once per instance.
fn report_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            wit_log::write(wit_log::Level::Warn, &format!("plugin {info}"));
        }));
    });
}

/// The host's store, through the `cairn:plugin/store` imports. Only ever called inside a
/// component; natively the generated imports are unreachable.
struct HostStore;

impl Store for HostStore {
    fn revision(&self) -> i64 {
        wit_store::revision()
    }

    fn get(&self, key: &[u8]) -> Option<KeyValue> {
        wit_store::get(key).map(Into::into)
    }

    fn range(&self, key: &[u8], range_end: &[u8], limit: u32) -> Vec<KeyValue> {
        wit_store::range(key, range_end, limit)
            .into_iter()
            .map(Into::into)
            .collect()
    }

    fn count(&self, key: &[u8], range_end: &[u8]) -> u64 {
        wit_store::count(key, range_end)
    }
}

/// The host's log, through the `cairn:plugin/log` import.
struct HostLog;

impl LogSink for HostLog {
    fn write(&self, level: Level, message: &str) {
        wit_log::write(level.into(), message);
    }
}

/// Exports a [`Guard`] as `cairn:plugin/guard`.
pub struct GuardExport<G>(PhantomData<G>);

impl<G: Guard> wit_guard::Guest for GuardExport<G> {
    fn check(config: Vec<u8>, ops: Vec<wit::Op>) -> wit::Decision {
        report_panics();
        let ops: Vec<Op> = ops.into_iter().map(Into::into).collect();
        G::check(&Context::new(&config, &HostStore, &HostLog), &ops).into()
    }
}

/// Exports a [`Compare`] as `cairn:plugin/compare`.
pub struct CompareExport<C>(PhantomData<C>);

impl<C: Compare> wit_compare::Guest for CompareExport<C> {
    fn compute(config: Vec<u8>, argument: Vec<u8>) -> Result<wit::Value, String> {
        report_panics();
        C::compute(&Context::new(&config, &HostStore, &HostLog), &argument).map(Into::into)
    }
}

/// Exports a [`Policy`] as `cairn:plugin/policy`.
pub struct PolicyExport<P>(PhantomData<P>);

impl<P: Policy> wit_policy::Guest for PolicyExport<P> {
    fn check(
        config: Vec<u8>,
        user: String,
        operation: wit_policy::Operation,
        key: Vec<u8>,
        range_end: Vec<u8>,
        allowed_by_roles: bool,
    ) -> wit::Decision {
        report_panics();
        let request = PolicyRequest {
            user,
            operation: operation.into(),
            key,
            range_end,
            allowed_by_roles,
        };
        P::check(&Context::new(&config, &HostStore, &HostLog), &request).into()
    }
}

/// Exports a [`WatchFilter`] as `cairn:plugin/watch-filter`.
pub struct WatchFilterExport<W>(PhantomData<W>);

impl<W: WatchFilter> wit_filter::Guest for WatchFilterExport<W> {
    fn filter(config: Vec<u8>, event: wit::Event) -> wit_filter::Verdict {
        report_panics();
        W::filter(&FilterContext::new(&config, &HostLog), event.into()).into()
    }
}

/// Exports a [`Reactor`] as `cairn:plugin/reactor`.
pub struct ReactorExport<R>(PhantomData<R>);

impl<R: Reactor> wit_reactor::Guest for ReactorExport<R> {
    fn react(config: Vec<u8>, revision: i64, events: Vec<wit::Event>) -> Vec<wit::Op> {
        report_panics();
        let events: Vec<Event> = events.into_iter().map(Into::into).collect();
        R::react(
            &Context::new(&config, &HostStore, &HostLog),
            revision,
            &events,
        )
        .into_iter()
        .map(Into::into)
        .collect()
    }
}
