//! The export macros: one per hook kind, each turning a plugin's type into the component
//! export of its interface. They expand to the generated bindings' own export macros, wrapped
//! in an adapter from `__private`, so a plugin crate holds no `unsafe` and no ABI detail.
//!
//! The export itself is only there on wasm32: natively (a plugin's unit tests) there is no
//! component to export from, and a native linker rejects the interfaces' symbol names. The
//! trait bound is checked on every target, so a type that does not implement the hook's
//! trait fails to compile natively too.
//!
//! A crate may use several of them (a component can export a guard and a compare); each may be
//! used once per crate, since each defines the interface's core-wasm export symbols.
//!
//! Each takes an optional `log_panics = false`. By default a panic's message goes to the
//! member's log before the call traps, which makes every plugin import `cairn:plugin/log`.
//! A plugin that never logs can turn that off and then imports nothing from the log; one that
//! also never reads the store imports nothing at all, and each call is then one core instance
//! instead of three (docs/plugins.md, "What a call costs"). A panic still fails the call,
//! identically on every member; only its message is not logged.

/// Exports a [`Guard`](crate::Guard) as the component's `cairn:plugin/guard@0.1.0`.
///
/// ```
/// use cairn_sdk::{Context, Decision, Guard, Op};
///
/// struct AllowAll;
///
/// impl Guard for AllowAll {
///     fn check(_ctx: &Context<'_>, _ops: &[Op]) -> Decision {
///         Decision::Allow
///     }
/// }
///
/// cairn_sdk::export_guard!(AllowAll);
/// ```
///
/// A guard that never logs can drop the panic hook, and with it the log import:
///
/// ```
/// # use cairn_sdk::{Context, Decision, Guard, Op};
/// # struct AllowAll;
/// # impl Guard for AllowAll {
/// #     fn check(_ctx: &Context<'_>, _ops: &[Op]) -> Decision {
/// #         Decision::Allow
/// #     }
/// # }
/// cairn_sdk::export_guard!(AllowAll, log_panics = false);
/// ```
#[macro_export]
macro_rules! export_guard {
    ($ty:ty) => {
        $crate::export_guard!($ty, log_panics = true);
    };
    ($ty:ty, log_panics = $log_panics:literal) => {
        const _: () = $crate::__private::assert_guard::<$ty>();
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type CairnGuardExport = $crate::__private::GuardExport<$ty, $log_panics>;
            $crate::__private::bindings::guard_world::export_guard_world!(
                CairnGuardExport with_types_in $crate::__private::bindings::guard_world
            );
        };
    };
}

/// Exports a [`Compare`](crate::Compare) as the component's `cairn:plugin/compare@0.1.0`.
#[macro_export]
macro_rules! export_compare {
    ($ty:ty) => {
        $crate::export_compare!($ty, log_panics = true);
    };
    ($ty:ty, log_panics = $log_panics:literal) => {
        const _: () = $crate::__private::assert_compare::<$ty>();
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type CairnCompareExport = $crate::__private::CompareExport<$ty, $log_panics>;
            $crate::__private::bindings::compare_world::export_compare_world!(
                CairnCompareExport with_types_in $crate::__private::bindings::compare_world
            );
        };
    };
}

/// Exports a [`Policy`](crate::Policy) as the component's `cairn:plugin/policy@0.1.0`.
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        $crate::export_policy!($ty, log_panics = true);
    };
    ($ty:ty, log_panics = $log_panics:literal) => {
        const _: () = $crate::__private::assert_policy::<$ty>();
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type CairnPolicyExport = $crate::__private::PolicyExport<$ty, $log_panics>;
            $crate::__private::bindings::policy_world::export_policy_world!(
                CairnPolicyExport with_types_in $crate::__private::bindings::policy_world
            );
        };
    };
}

/// Exports a [`WatchFilter`](crate::WatchFilter) as the component's
/// `cairn:plugin/watch-filter@0.1.0`.
#[macro_export]
macro_rules! export_watch_filter {
    ($ty:ty) => {
        $crate::export_watch_filter!($ty, log_panics = true);
    };
    ($ty:ty, log_panics = $log_panics:literal) => {
        const _: () = $crate::__private::assert_watch_filter::<$ty>();
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type CairnWatchFilterExport = $crate::__private::WatchFilterExport<$ty, $log_panics>;
            $crate::__private::bindings::watch_filter_world::export_watch_filter_world!(
                CairnWatchFilterExport with_types_in $crate::__private::bindings::watch_filter_world
            );
        };
    };
}

/// Exports a [`Reactor`](crate::Reactor) as the component's `cairn:plugin/reactor@0.1.0`.
#[macro_export]
macro_rules! export_reactor {
    ($ty:ty) => {
        $crate::export_reactor!($ty, log_panics = true);
    };
    ($ty:ty, log_panics = $log_panics:literal) => {
        const _: () = $crate::__private::assert_reactor::<$ty>();
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type CairnReactorExport = $crate::__private::ReactorExport<$ty, $log_panics>;
            $crate::__private::bindings::reactor_world::export_reactor_world!(
                CairnReactorExport with_types_in $crate::__private::bindings::reactor_world
            );
        };
    };
}
