//! `cairnctl plugin new KIND NAME`: writes a plugin crate, ready to build, from the template of
//! one of the five kinds (`ctl/templates/`).
//!
//! The crate is its own workspace (an empty `[workspace]` table), so it builds wherever it is
//! created. It depends on the SDK by path: the `sdk/` directory of the Cairn checkout this
//! cairnctl was built from, unless `--sdk` names another.

use std::path::{Path, PathBuf};

use crate::cli::KindArg;
use crate::error::Error;

/// The SDK next to the cairnctl sources this binary was built from.
pub fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// One kind's `src/lib.rs`, with `{{name}}` where the crate's name goes.
fn template(kind: KindArg) -> &'static str {
    match kind {
        KindArg::Guard => include_str!("../templates/guard.rs"),
        KindArg::Compare => include_str!("../templates/compare.rs"),
        KindArg::Policy => include_str!("../templates/policy.rs"),
        KindArg::WatchFilter => include_str!("../templates/watch_filter.rs"),
        KindArg::Reactor => include_str!("../templates/reactor.rs"),
    }
}

/// A package name cargo accepts: ASCII letters, digits, `-` and `_`, starting with a letter.
fn check_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts || !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Error::Usage(format!(
            "plugin name {name:?}: use ASCII letters, digits, '-' and '_', starting with a letter"
        )));
    }
    Ok(())
}

/// The crate's manifest.
fn manifest(name: &str, sdk: &Path) -> String {
    let sdk = sdk
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the .wasm that `cairnctl plugin install` takes; rlib: for `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
cairn-sdk = {{ path = "{sdk}" }}

[profile.release]
opt-level = "s"

# Its own workspace, wherever it is created.
[workspace]
"#
    )
}

/// Writes the crate into `dir` (which must not exist yet, or be empty); returns the lines to
/// print: what was made and how to build, test and install it.
pub fn create(kind: KindArg, name: &str, dir: &Path, sdk: &Path) -> Result<Vec<String>, Error> {
    check_name(name)?;
    let io = |what: &str, e: std::io::Error| Error::Failed(format!("{what}: {e}"));
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| io(&dir.display().to_string(), e))?
            .next()
            .is_some()
    {
        return Err(Error::Usage(format!(
            "{} already exists and is not empty",
            dir.display()
        )));
    }
    if !sdk.join("Cargo.toml").is_file() {
        return Err(Error::Usage(format!(
            "no Cairn SDK at {} (give the path of Cairn's sdk/ directory with --sdk)",
            sdk.display()
        )));
    }
    let sdk = sdk
        .canonicalize()
        .map_err(|e| io(&sdk.display().to_string(), e))?;
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(|e| io(&src.display().to_string(), e))?;
    let files = [
        (dir.join("Cargo.toml"), manifest(name, &sdk)),
        (src.join("lib.rs"), template(kind).replace("{{name}}", name)),
        (dir.join(".gitignore"), "/target\n".to_string()),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).map_err(|e| io(&path.display().to_string(), e))?;
    }
    let wasm = format!(
        "target/wasm32-unknown-unknown/release/{}.wasm",
        name.replace('-', "_")
    );
    Ok(vec![
        format!(
            "created {} plugin {name} in {}",
            kind_word(kind),
            dir.display()
        ),
        format!(
            "build:   cd {} && cargo build --target wasm32-unknown-unknown --release",
            dir.display()
        ),
        "test:    cargo test".to_string(),
        format!(
            "try:     cairnctl plugin test --kind {} {wasm}",
            kind_word(kind)
        ),
        format!("install: cairnctl plugin install {name} {wasm}"),
    ])
}

/// The kind as `--kind` spells it.
pub fn kind_word(kind: KindArg) -> &'static str {
    match kind {
        KindArg::Guard => "guard",
        KindArg::Compare => "compare",
        KindArg::Policy => "policy",
        KindArg::WatchFilter => "watch-filter",
        KindArg::Reactor => "reactor",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_the_crate_written() {
        assert!(check_name("my-guard_2").is_ok());
        for bad in ["", "2x", "a b", "a/b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let crate_dir = dir.path().join("g");
        let lines = create(KindArg::Guard, "g", &crate_dir, &default_sdk()).expect("created");
        assert!(
            lines[0].starts_with("created guard plugin g in "),
            "{lines:?}"
        );
        let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).expect("lib.rs");
        assert!(
            lib.starts_with("//! g: a Cairn transaction guard."),
            "{lib}"
        );
        assert!(!lib.contains("{{name}}"));
        let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("manifest");
        assert!(manifest.contains("cairn-sdk = { path = \"/"), "{manifest}");
        // A second time into the same directory is refused rather than overwriting.
        assert!(create(KindArg::Guard, "g", &crate_dir, &default_sdk()).is_err());
    }
}
