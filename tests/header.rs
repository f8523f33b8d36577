//! The checked-in C header must be exactly what the pinned cbindgen generates from the
//! sources, and its version macros must match Cargo.toml.
//!
//! Regenerate after changing src/ffi: `DSRS_BLESS=1 cargo test --test header`.

use std::path::Path;

fn generate() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(root).join("cbindgen.toml"))
        .expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("UTF-8 header")
}

#[test]
fn checked_in_header_matches_cbindgen_output() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/deepspeed_rs.h");
    let generated = generate();
    if std::env::var_os("DSRS_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/deepspeed_rs.h");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk != generated {
        let first = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| on_disk.lines().count().min(generated.lines().count()) + 1);
        panic!(
            "include/deepspeed_rs.h is stale (first difference at line {first}); regenerate it with \
             `DSRS_BLESS=1 cargo test --test header` and commit the result"
        );
    }
}

fn macro_value(header: &str, name: &str) -> String {
    header
        .lines()
        .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
        .unwrap_or_else(|| panic!("#define {name} missing from the header"))
        .trim()
        .to_string()
}

#[test]
fn version_macros_match_cargo_toml() {
    let header = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("include/deepspeed_rs.h"),
    )
    .unwrap();
    assert_eq!(
        macro_value(&header, "DSRS_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MAJOR")
    );
    assert_eq!(
        macro_value(&header, "DSRS_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_MINOR")
    );
    assert_eq!(
        macro_value(&header, "DSRS_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION_PATCH")
    );
    assert_eq!(
        macro_value(&header, "DSRS_ABI_VERSION"),
        deepspeed_rs::ABI_VERSION.to_string()
    );
}

/// The header without its comments.
fn code_of(header: &str) -> String {
    let mut out = String::new();
    let mut rest = header;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        rest = rest[start..]
            .split_once("*/")
            .map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_header_declares_no_cuda_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/deepspeed_rs.h");
    let code = code_of(&std::fs::read_to_string(path).unwrap());
    assert!(
        code.contains("dsrs_status dsrs_buffer_new("),
        "comment stripping removed code"
    );
    for banned in [
        "CUstream",
        "cudaStream_t",
        "CUdeviceptr",
        "cuda.h",
        "cuda_runtime",
    ] {
        assert!(
            !code.contains(banned),
            "the public header declares {banned}"
        );
    }
}

/// cbindgen does not expand macros: an export defined by a macro would be missing from the
/// header while still exported by the library. Every `extern "C" fn` written in src/ffi
/// must be declared in the header.
#[test]
fn every_exported_function_is_declared() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(root.join("include/deepspeed_rs.h")).unwrap();
    let mut exported = Vec::new();
    for entry in std::fs::read_dir(root.join("src/ffi")).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut lines = src.lines().peekable();
        while let Some(line) = lines.next() {
            if line.trim() == "#[unsafe(no_mangle)]" {
                let decl = lines.next().unwrap_or_default();
                let name = decl
                    .split("fn ")
                    .nth(1)
                    .and_then(|rest| rest.split('(').next())
                    .unwrap_or_else(|| panic!("no fn after #[unsafe(no_mangle)]: {decl}"));
                exported.push(name.trim().to_string());
            }
        }
    }
    assert!(exported.len() > 50, "found only {} exports", exported.len());
    for name in &exported {
        assert!(
            header.contains(&format!(" {name}(")) || header.contains(&format!("*{name}(")),
            "{name} is exported but not declared in the header"
        );
        assert!(name.starts_with("dsrs_"), "{name} lacks the dsrs_ prefix");
    }
}

/// Everything cbindgen generates (after the hand-written DLPack section) is namespaced:
/// macros `DSRS_*`, types and functions `dsrs_*`. A Rust-only `pub const` that is not
/// excluded in cbindgen.toml would otherwise leak into every host as an unprefixed macro.
#[test]
fn generated_names_carry_the_dsrs_prefix() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/deepspeed_rs.h");
    let header = std::fs::read_to_string(path).unwrap();
    let generated = header
        .split("#endif /* DLPACK_DLPACK_H_ */")
        .nth(1)
        .expect("the DLPack section ends with #endif /* DLPACK_DLPACK_H_ */");
    let code = code_of(generated);
    let mut checked = 0;
    for line in code.lines().map(str::trim) {
        let name = if let Some(rest) = line.strip_prefix("#define ") {
            rest.split_whitespace().next()
        } else if let Some(rest) = line.strip_prefix("typedef struct ") {
            rest.split_whitespace().next()
        } else if let Some(rest) = line.strip_prefix("enum ") {
            rest.split_whitespace().next()
        } else if let Some((_, rest)) = line
            .strip_prefix("typedef ")
            .and_then(|l| l.split_once("(*"))
        {
            rest.split(')').next() // a function-pointer typedef: typedef R (*name)(...
        } else if line.starts_with("typedef ") {
            line.trim_end_matches(';').rsplit([' ', '*']).next()
        } else {
            None
        };
        let Some(name) = name else { continue };
        let name = name.trim_end_matches(';');
        checked += 1;
        assert!(
            name.starts_with("DSRS_") || name.starts_with("dsrs_") || name == "DEEPSPEED_RS_H",
            "the header defines {name:?} without the dsrs_/DSRS_ prefix (exclude it in cbindgen.toml?)"
        );
    }
    assert!(checked > 20, "only {checked} names checked");
}

/// A doc comment that mentions a C comment (`/* */`) would end the header's comment early
/// and break every C build; cbindgen copies doc comments verbatim.
#[test]
fn doc_comments_do_not_open_or_close_c_comments() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/deepspeed_rs.h");
    let header = std::fs::read_to_string(path).unwrap();
    for (i, line) in header.lines().enumerate() {
        let body = line.trim_start();
        if let Some(text) = body.strip_prefix("* ") {
            assert!(
                !text.contains("*/") && !text.contains("/*"),
                "include/deepspeed_rs.h:{}: a comment opens or closes a C comment: {line}",
                i + 1
            );
        }
    }
}
