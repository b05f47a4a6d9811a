//! Install-time validation, run in apply on every member over the same bytes.
//!
//! Deterministic by construction: wasmparser (pinned with wasmtime) with a fixed feature
//! set, and checks that look only at the bytes. A module every member accepts here can
//! still fail to compile on one member only if that member's engine is broken; that is a
//! host fault (see `engine.rs`), never a different decision.

use wasmparser::{Parser, Payload, Validator, WasmFeatures};

use super::{CONTRACT_VERSION, MAX_MEMORY_BYTES, MAX_MODULE_BYTES};

/// The interfaces a plugin may import.
const IMPORTABLE: [&str; 4] = ["types", "store", "log", "clock"];
/// The hook interfaces a plugin may export, by kind.
pub const HOOKS: [&str; 5] = ["guard", "compare", "policy", "watch-filter", "reactor"];

/// What a valid module offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// Exported hook interfaces, e.g. `cairn:plugin/guard@0.1.0`, in name order.
    pub exports: Vec<String>,
}

fn qualified(interface: &str) -> String {
    format!("cairn:plugin/{interface}@{CONTRACT_VERSION}")
}

/// The wasm features a plugin may use: what `engine.rs` enables, nothing that breaks
/// determinism (threads, relaxed SIMD) or that Cairn does not need.
fn features() -> WasmFeatures {
    let mut f = WasmFeatures::default();
    f.remove(WasmFeatures::THREADS);
    f.remove(WasmFeatures::SHARED_EVERYTHING_THREADS);
    f.remove(WasmFeatures::RELAXED_SIMD);
    f.remove(WasmFeatures::MEMORY64);
    f.remove(WasmFeatures::GC);
    f.remove(WasmFeatures::STACK_SWITCHING);
    f.remove(WasmFeatures::CM_ASYNC);
    f.remove(WasmFeatures::CM_ASYNC_STACKFUL);
    f.remove(WasmFeatures::CM_THREADING);
    f
}

/// Checks a module for installation. The error says what is wrong, in words for the
/// operator.
pub fn validate(bytes: &[u8]) -> Result<Validated, String> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "module is {} bytes; the limit is {MAX_MODULE_BYTES}",
            bytes.len()
        ));
    }
    if !Parser::is_component(bytes) {
        return Err(if Parser::is_core_wasm(bytes) {
            "a core module, not a component: build with cairn-sdk and install with \
             `cairnctl plugin install`, which wraps it into a component"
                .to_string()
        } else {
            "not a WebAssembly component".to_string()
        });
    }
    Validator::new_with_features(features())
        .validate_all(bytes)
        .map_err(|e| format!("invalid component: {e}"))?;
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("invalid component: {e}"))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| format!("invalid component: {e}"))?;
                    let name = import.name.name;
                    if !IMPORTABLE.iter().any(|i| qualified(i) == name) {
                        return Err(format!(
                            "imports {name:?}, which is outside the plugin contract \
                             (cairn:plugin@{CONTRACT_VERSION}: store, log, clock)"
                        ));
                    }
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| format!("invalid component: {e}"))?;
                    let name = export.name.name;
                    if HOOKS.iter().any(|h| qualified(h) == name) {
                        exports.push(name.to_string());
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(|e| format!("invalid component: {e}"))?;
                    let initial = memory.initial.saturating_mul(64 * 1024);
                    if initial > MAX_MEMORY_BYTES {
                        return Err(format!(
                            "a memory starts at {initial} bytes; the limit is {MAX_MEMORY_BYTES}"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    if exports.is_empty() {
        return Err(format!(
            "exports no hook of cairn:plugin@{CONTRACT_VERSION} (guard, compare, policy, \
             watch-filter or reactor)"
        ));
    }
    exports.sort();
    exports.dedup();
    Ok(Validated { exports })
}

/// The hook name (`guard`) of an exported interface name.
pub fn hook_of(export: &str) -> Option<&'static str> {
    HOOKS.iter().copied().find(|h| qualified(h) == export)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_component() {
        assert!(
            validate(b"hello")
                .unwrap_err()
                .contains("not a WebAssembly component")
        );
        // The smallest core module: magic and version.
        let core = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
        assert!(validate(&core).unwrap_err().contains("core module"));
        let big = vec![0u8; MAX_MODULE_BYTES + 1];
        assert!(validate(&big).unwrap_err().contains("limit"));
    }

    #[test]
    fn names() {
        assert_eq!(hook_of("cairn:plugin/guard@0.1.0"), Some("guard"));
        assert_eq!(hook_of("cairn:plugin/guard@0.2.0"), None);
    }
}
