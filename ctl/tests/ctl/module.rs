use cairnctl::module::{ModuleError, install_requests, prepare, sha256_hex};
use wasmparser::Parser;

/// The header of a component (layer 1, version 0x0d): enough for `is_component`, which is all
/// the client checks before sending a file as is; the server validates the rest.
pub const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\x00\x01\x00";

/// A fake component of `size` bytes: the component header, then a byte pattern.
pub fn fake_component(size: usize) -> Vec<u8> {
    let mut bytes = COMPONENT_HEADER.to_vec();
    bytes.extend((0..size - COMPONENT_HEADER.len()).map(|i| (i % 251) as u8));
    bytes
}

/// A minimal core module as wit-bindgen would leave it: it exports `answer: func() -> u32`
/// and, with `with_metadata`, carries the `component-type` section of a world that says so.
pub fn core_module(with_metadata: bool) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction,
        TypeSection, ValType,
    };
    let mut module = wasm_encoder::Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut exports = ExportSection::new();
    exports.export("answer", ExportKind::Func, 0);
    module.section(&exports);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::I32Const(42));
    body.instruction(&Instruction::End);
    code.function(&body);
    module.section(&code);
    let mut bytes = module.finish();
    if with_metadata {
        let mut resolve = wit_parser::Resolve::default();
        let package = resolve
            .push_str(
                "answer.wit",
                "package test:answer; world answer { export answer: func() -> u32; }",
            )
            .unwrap();
        let world = resolve.select_world(&[package], Some("answer")).unwrap();
        wit_component::embed_component_metadata(
            &mut bytes,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
            false,
        )
        .unwrap();
    }
    bytes
}

/// A 2.5 MiB module in 1 MiB chunks is three requests, in order, each with its offset, the
/// whole module's size and sha256, and together exactly the module's bytes.
#[test]
fn chunks_are_ordered_with_offsets() {
    let bytes = fake_component(5 << 19);
    let module = prepare("big.wasm", bytes.clone()).unwrap();
    assert!(!module.componentized);
    assert_eq!(module.bytes, bytes, "a component is sent as is");
    assert_eq!(module.sha256, sha256_hex(&bytes));
    assert_eq!(module.sha256.len(), 64);

    let requests: Vec<_> = install_requests("big", &module, 1 << 20).collect();
    let shape: Vec<(u64, usize)> = requests
        .iter()
        .map(|request| (request.offset, request.data.len()))
        .collect();
    assert_eq!(
        shape,
        [(0, 1 << 20), (1 << 20, 1 << 20), (2 << 20, 1 << 19)]
    );
    for request in &requests {
        assert_eq!(request.name, "big");
        assert_eq!(request.size, 5 << 19);
        assert_eq!(request.sha256, module.sha256);
    }
    let joined: Vec<u8> = requests.into_iter().flat_map(|r| r.data).collect();
    assert_eq!(joined, bytes);

    // A module smaller than one chunk is one request; an exact multiple has no empty tail.
    assert_eq!(install_requests("big", &module, 8 << 20).count(), 1);
    assert_eq!(install_requests("big", &module, 1 << 19).count(), 5);
}

/// sha256 is lower-case hex of the bytes (the empty input's well-known digest).
#[test]
fn sha256_is_lower_hex() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

/// A core module with wit-bindgen's metadata becomes a valid component; the digest is of the
/// component, the bytes actually sent.
#[test]
fn core_module_is_componentized() {
    let core = core_module(true);
    assert!(!Parser::is_component(&core));
    let module = prepare("answer.wasm", core).unwrap();
    assert!(module.componentized);
    assert!(Parser::is_component(&module.bytes));
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&module.bytes)
        .unwrap();
    assert_eq!(module.sha256, sha256_hex(&module.bytes));
}

/// Files that cannot become a component fail with a message that says why and what to do.
#[test]
fn unusable_files_are_refused_clearly() {
    let error = prepare("notes.txt", b"hello, world".to_vec()).unwrap_err();
    assert!(matches!(error, ModuleError::NotWasm { .. }));
    assert_eq!(
        error.to_string(),
        "notes.txt is not a WebAssembly module or component (no \\0asm header)"
    );
    assert!(matches!(
        prepare("empty.wasm", Vec::new()),
        Err(ModuleError::NotWasm { .. })
    ));

    let error = prepare("bare.wasm", core_module(false)).unwrap_err();
    assert!(matches!(error, ModuleError::NoComponentType { .. }));
    assert!(
        error
            .to_string()
            .contains("bare.wasm is a core module without component type")
    );

    // Metadata that does not match the module: the world exports `answer`, the module not.
    let mut broken = core_module(true);
    let export_name = broken
        .windows(6)
        .position(|window| window == b"answer")
        .unwrap();
    broken[export_name..export_name + 6].copy_from_slice(b"ANSWER");
    let error = prepare("broken.wasm", broken).unwrap_err();
    assert!(matches!(error, ModuleError::Componentize { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("cannot make a component of broken.wasm: ")
    );
}
