//! A plugin file made ready to install: turned into a component if it is a core module, hashed,
//! and cut into `InstallRequest` chunks.
//!
//! `cargo build --target wasm32-unknown-unknown` makes a *core* module that carries
//! wit-bindgen's `component-type` custom section; the server accepts only *components*. The
//! conversion is `wit-component`'s (what `wasm-tools component new` does). Pure: bytes in,
//! bytes out; reading the file and sending the chunks belong to `run`.

use cairn_proto::cairn_plugin::InstallRequest;
use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload};

/// The largest file `cairnctl` reads as a plugin; the server's own cap is lower.
pub const MAX_MODULE_BYTES: usize = 256 << 20;

/// The default chunk: well under gRPC's default 4 MiB message limit.
pub const DEFAULT_CHUNK_BYTES: u64 = 1 << 20;

/// Why a file cannot be installed.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{path} is not a WebAssembly module or component (no \\0asm header)")]
    NotWasm { path: String },
    #[error(
        "{path} is a core module without component type information: build it with \
         wit-bindgen (cargo build --target wasm32-unknown-unknown) or make it a component \
         with `wasm-tools component new`"
    )]
    NoComponentType { path: String },
    #[error("cannot make a component of {path}: {reason}")]
    Componentize { path: String, reason: String },
    #[error("{path} is {size} bytes; cairnctl installs at most {MAX_MODULE_BYTES}")]
    TooLarge { path: String, size: usize },
}

/// The bytes to send and what they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// A component, as sent.
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`, lower-case hex.
    pub sha256: String,
    /// The file was a core module that `prepare` turned into a component.
    pub componentized: bool,
}

/// Makes `bytes`, read from `path` (named in errors only), ready to install: a component is
/// kept as is, a core module with component type information is made a component.
pub fn prepare(path: &str, bytes: Vec<u8>) -> Result<Module, ModuleError> {
    let path = path.to_owned();
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(ModuleError::TooLarge {
            path,
            size: bytes.len(),
        });
    }
    if bytes.len() < 8 || !bytes.starts_with(b"\0asm") {
        return Err(ModuleError::NotWasm { path });
    }
    let (bytes, componentized) = if Parser::is_component(&bytes) {
        (bytes, false)
    } else {
        if !has_component_type(&bytes) {
            return Err(ModuleError::NoComponentType { path });
        }
        let component =
            componentize(&bytes).map_err(|reason| ModuleError::Componentize { path, reason })?;
        (component, true)
    };
    let sha256 = sha256_hex(&bytes);
    Ok(Module {
        bytes,
        sha256,
        componentized,
    })
}

/// wit-component's conversion; the error is anyhow's whole chain of contexts on one line.
fn componentize(core: &[u8]) -> Result<Vec<u8>, String> {
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder.module(core).map_err(|error| format!("{error:#}"))?;
    encoder
        .validate(true)
        .encode()
        .map_err(|error| format!("{error:#}"))
}

/// Whether a core module carries a `component-type` custom section (wit-bindgen's, possibly
/// with a suffix such as `component-type:my-world`).
fn has_component_type(core: &[u8]) -> bool {
    Parser::new(0).parse_all(core).any(|payload| {
        matches!(payload, Ok(Payload::CustomSection(section))
            if section.name().starts_with("component-type"))
    })
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The requests that install `module` under `name`: chunks of at most `chunk_bytes` (at least
/// 1) in order, each with the whole module's sha256 and size and its own offset.
pub fn install_requests<'a>(
    name: &'a str,
    module: &'a Module,
    chunk_bytes: usize,
) -> impl Iterator<Item = InstallRequest> + 'a {
    let size = module.bytes.len() as u64;
    module
        .bytes
        .chunks(chunk_bytes.max(1))
        .scan(0u64, move |offset, data| {
            let request = InstallRequest {
                name: name.to_owned(),
                sha256: module.sha256.clone(),
                size,
                offset: *offset,
                data: data.to_vec(),
            };
            *offset += data.len() as u64;
            Some(request)
        })
}
