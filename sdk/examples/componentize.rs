//! Turns plugin core modules into components exactly as `cairnctl plugin install` does, and
//! prints what each component imports and exports, flagging imports outside the contract.
//!
//! ```text
//! cargo run -p cairn-sdk --example componentize -- [-o DIR] target/wasm32-unknown-unknown/release/*.wasm
//! ```
//!
//! With `-o DIR` it also writes each component to `DIR/<name>.component.wasm`. It fails if a
//! module does not componentize; imports outside the contract are reported, not failed, since
//! the hostile test plugins have them on purpose.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use wasmparser::{Parser, Payload};
use wit_component::{ComponentEncoder, DecodedWasm};
use wit_parser::WorldItem;

/// The only interfaces a Cairn plugin may import.
const CONTRACT_IMPORTS: [&str; 3] = [
    "cairn:plugin/types@0.1.0",
    "cairn:plugin/store@0.1.0",
    "cairn:plugin/log@0.1.0",
];

fn main() -> anyhow::Result<()> {
    let mut out_dir = None;
    let mut modules = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-o" => out_dir = Some(PathBuf::from(args.next().context("-o needs a directory")?)),
            _ => modules.push(PathBuf::from(arg)),
        }
    }
    if modules.is_empty() {
        bail!("usage: componentize [-o DIR] MODULE.wasm...");
    }
    for module in &modules {
        inspect(module, out_dir.as_deref()).with_context(|| module.display().to_string())?;
    }
    Ok(())
}

fn inspect(module: &Path, out_dir: Option<&Path>) -> anyhow::Result<()> {
    let core = std::fs::read(module)?;
    let component = ComponentEncoder::default()
        .module(&core)?
        .validate(true)
        .encode()?;
    println!(
        "{}: core module {} bytes, component {} bytes",
        module.display(),
        core.len(),
        component.len()
    );
    print_core_imports(&core)?;
    print_component_externs(&component)?;
    print_world(&component)?;
    if let Some(dir) = out_dir {
        let stem = module.file_stem().context("module path has no file name")?;
        let path = dir.join(format!("{}.component.wasm", stem.to_string_lossy()));
        std::fs::write(&path, &component)?;
        println!("  written to {}", path.display());
    }
    Ok(())
}

/// The core module's imports, as `module#name`: the contract's functions and nothing else.
fn print_core_imports(core: &[u8]) -> anyhow::Result<()> {
    let mut imports = Vec::new();
    for payload in Parser::new(0).parse_all(core) {
        if let Payload::ImportSection(section) = payload? {
            for import in section.into_imports() {
                let import = import?;
                imports.push(format!("{}#{}", import.module, import.name));
            }
        }
    }
    println!("  core imports: {}", list(&imports));
    Ok(())
}

/// The component's top-level import and export names, as wasmtime's linker sees them.
fn print_component_externs(component: &[u8]) -> anyhow::Result<()> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components have sections of their own; only depth 0 is the
    // component's interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(component) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let name = import?.name.full_name().into_owned();
                    let outside = !CONTRACT_IMPORTS.contains(&name.as_str());
                    imports.push(if outside {
                        format!("{name} (OUTSIDE THE CONTRACT)")
                    } else {
                        name
                    });
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    exports.push(export?.name.full_name().into_owned());
                }
            }
            _ => {}
        }
    }
    println!("  component imports: {}", list(&imports));
    println!("  component exports: {}", list(&exports));
    Ok(())
}

/// The component's world: each imported and exported interface with its functions.
fn print_world(component: &[u8]) -> anyhow::Result<()> {
    let DecodedWasm::Component(resolve, world) = wit_component::decode(component)? else {
        bail!("decoded a WIT package, not a component");
    };
    let world = &resolve.worlds[world];
    for (direction, items) in [("import", &world.imports), ("export", &world.exports)] {
        for (key, item) in items {
            let name = resolve.name_world_key(key);
            match item {
                WorldItem::Interface { id, .. } => {
                    let functions: Vec<String> =
                        resolve.interfaces[*id].functions.keys().cloned().collect();
                    println!("    {direction} {name}: {}", list(&functions));
                }
                WorldItem::Function(_) => println!("    {direction} func {name}"),
                WorldItem::Type { .. } => println!("    {direction} type {name}"),
            }
        }
    }
    Ok(())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}
