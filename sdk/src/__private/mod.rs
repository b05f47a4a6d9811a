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

use bindings::compare_world::exports::cairn::plugin::compare as wit_compare;
use bindings::guard_world::cairn::plugin::{
    clock as wit_clock, log as wit_log, store as wit_store, types as wit,
};
use bindings::guard_world::exports::cairn::plugin::guard as wit_guard;
use bindings::policy_world::exports::cairn::plugin::policy as wit_policy;
use bindings::reactor_world::exports::cairn::plugin::reactor as wit_reactor;
use bindings::watch_filter_world::exports::cairn::plugin::watch_filter as wit_filter;

use crate::context::{Backend, Context, FilterContext, Level};
use crate::hooks::{Compare, Guard, Policy, Reactor, WatchFilter};
use crate::store::Store;
use crate::types::{Event, KeyValue, Op};

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

/// Unless the export said `log_panics = false`, sends a panic's message to the host's log (as
/// a warning) before the trap that follows it; on wasm32-unknown-unknown it would otherwise be
/// lost. Installed once per instance. `LOG_PANICS` is a constant, so when it is false the hook
/// is not compiled in, and a plugin that never logs imports nothing from `cairn:plugin/log`.
fn report_panics<const LOG_PANICS: bool>() {
    if LOG_PANICS {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                host_log(Level::Warn, &format!("plugin {info}"));
            }));
        });
    }
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

/// The host's store, for [`Context::store`](crate::Context::store): the only place its
/// imports are named from.
pub(crate) fn host_store() -> &'static dyn Store {
    &HostStore
}

/// Writes to the host's log, for [`Context::log`](crate::Context::log) and the panic hook:
/// the only place the log import is named from.
pub(crate) fn host_log(level: Level, message: &str) {
    wit_log::write(level.into(), message);
}

/// The host's clock, for [`Context::now_ms`](crate::Context::now_ms): the only place the clock
/// import is named from.
pub(crate) fn host_now_ms() -> i64 {
    wit_clock::now_ms()
}

/// Exports a [`Guard`] as `cairn:plugin/guard`.
pub struct GuardExport<G, const LOG_PANICS: bool>(PhantomData<G>);

impl<G: Guard, const LOG_PANICS: bool> wit_guard::Guest for GuardExport<G, LOG_PANICS> {
    fn check(config: Vec<u8>, ops: Vec<wit::Op>) -> wit::Decision {
        report_panics::<LOG_PANICS>();
        let ops: Vec<Op> = ops.into_iter().map(Into::into).collect();
        G::check(&Context::new(&config, Backend::Host), &ops).into()
    }
}

/// Exports a [`Compare`] as `cairn:plugin/compare`.
pub struct CompareExport<C, const LOG_PANICS: bool>(PhantomData<C>);

impl<C: Compare, const LOG_PANICS: bool> wit_compare::Guest for CompareExport<C, LOG_PANICS> {
    fn compute(config: Vec<u8>, argument: Vec<u8>) -> Result<wit::Value, String> {
        report_panics::<LOG_PANICS>();
        C::compute(&Context::new(&config, Backend::Host), &argument).map(Into::into)
    }
}

/// Exports a [`Policy`] as `cairn:plugin/policy`.
pub struct PolicyExport<P, const LOG_PANICS: bool>(PhantomData<P>);

impl<P: Policy, const LOG_PANICS: bool> wit_policy::Guest for PolicyExport<P, LOG_PANICS> {
    fn check(config: Vec<u8>, request: wit_policy::Request) -> wit_policy::Answer {
        report_panics::<LOG_PANICS>();
        P::check(&Context::new(&config, Backend::Host), &request.into()).into()
    }
}

/// Exports a [`WatchFilter`] as `cairn:plugin/watch-filter`.
pub struct WatchFilterExport<W, const LOG_PANICS: bool>(PhantomData<W>);

/// An opened filter and its binding's config.
type Opened = (Vec<u8>, Box<dyn std::any::Any>);

std::thread_local! {
    /// The opened filter of this instance (one per watcher). A component instance runs on one
    /// thread, and only one filter type is exported per crate.
    static FILTER: std::cell::RefCell<Option<Opened>> = const { std::cell::RefCell::new(None) };
}

impl<W: WatchFilter, const LOG_PANICS: bool> wit_filter::Guest
    for WatchFilterExport<W, LOG_PANICS>
{
    fn open(config: Vec<u8>, watcher: wit_filter::Watcher) -> Result<(), String> {
        report_panics::<LOG_PANICS>();
        let filter = W::open(&FilterContext::new(&config, Backend::Host), &watcher.into())?;
        FILTER.with(|slot| *slot.borrow_mut() = Some((config, Box::new(filter))));
        Ok(())
    }

    fn filter(event: wit::Event) -> wit_filter::Verdict {
        FILTER.with(|slot| {
            let mut slot = slot.borrow_mut();
            // The host opens every instance before its first event; a filter of another type
            // cannot be there (one export per crate).
            let Some((config, state)) = slot.as_mut() else {
                panic!("watch filter called before open");
            };
            let Some(filter) = state.downcast_mut::<W>() else {
                panic!("watch filter state of another type");
            };
            let ctx = FilterContext::new(config, Backend::Host);
            filter.filter(&ctx, &event.into()).into()
        })
    }
}

/// Exports a [`Reactor`] as `cairn:plugin/reactor`.
pub struct ReactorExport<R, const LOG_PANICS: bool>(PhantomData<R>);

impl<R: Reactor, const LOG_PANICS: bool> wit_reactor::Guest for ReactorExport<R, LOG_PANICS> {
    fn react(config: Vec<u8>, revision: i64, events: Vec<wit::Event>) -> Vec<wit::Op> {
        report_panics::<LOG_PANICS>();
        let events: Vec<Event> = events.into_iter().map(Into::into).collect();
        R::react(&Context::new(&config, Backend::Host), revision, &events)
            .into_iter()
            .map(Into::into)
            .collect()
    }
}
