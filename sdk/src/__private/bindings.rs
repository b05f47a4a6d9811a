//! The bindings `wit_bindgen::generate!` writes for each world of `wit/plugin.wit`: the only
//! unsafe code in the SDK, and the only place that knows the canonical ABI.
//!
//! The guard world's bindings own the shared interfaces (`types`, `store`, `log`); the other
//! worlds reuse them through `with`, so there is one Rust type per WIT type. Every world's
//! export macro is public (`pub_export_macro`) because plugin crates expand it through
//! `cairn_sdk::export_*!`; it also embeds that world's full component type in the plugin.

#![allow(unsafe_code, missing_docs, clippy::all)]

/// `world guard-plugin`: imports store, log and clock, exports guard.
pub mod guard_world {
    wit_bindgen::generate!({
        path: "wit",
        world: "cairn:plugin/guard-plugin@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_guard_world",
        default_bindings_module: "cairn_sdk::__private::bindings::guard_world",
    });
}

/// `world compare-plugin`: imports store, log and clock, exports compare.
pub mod compare_world {
    wit_bindgen::generate!({
        path: "wit",
        world: "cairn:plugin/compare-plugin@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_compare_world",
        default_bindings_module: "cairn_sdk::__private::bindings::compare_world",
        with: {
            "cairn:plugin/types@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::types,
            "cairn:plugin/store@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::store,
            "cairn:plugin/log@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::log,
            "cairn:plugin/clock@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::clock,
        },
    });
}

/// `world policy-plugin`: imports store, log and clock, exports policy.
pub mod policy_world {
    wit_bindgen::generate!({
        path: "wit",
        world: "cairn:plugin/policy-plugin@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_policy_world",
        default_bindings_module: "cairn_sdk::__private::bindings::policy_world",
        with: {
            "cairn:plugin/types@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::types,
            "cairn:plugin/store@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::store,
            "cairn:plugin/log@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::log,
            "cairn:plugin/clock@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::clock,
        },
    });
}

/// `world watch-filter-plugin`: imports log only, exports watch-filter.
pub mod watch_filter_world {
    wit_bindgen::generate!({
        path: "wit",
        world: "cairn:plugin/watch-filter-plugin@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_watch_filter_world",
        default_bindings_module: "cairn_sdk::__private::bindings::watch_filter_world",
        with: {
            "cairn:plugin/types@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::types,
            "cairn:plugin/log@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::log,
        },
    });
}

/// `world reactor-plugin`: imports store, log and clock, exports reactor.
pub mod reactor_world {
    wit_bindgen::generate!({
        path: "wit",
        world: "cairn:plugin/reactor-plugin@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_reactor_world",
        default_bindings_module: "cairn_sdk::__private::bindings::reactor_world",
        with: {
            "cairn:plugin/types@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::types,
            "cairn:plugin/store@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::store,
            "cairn:plugin/log@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::log,
            "cairn:plugin/clock@0.1.0": crate::__private::bindings::guard_world::cairn::plugin::clock,
        },
    });
}
