//! The build script:
//! * gives the shared library a proper SONAME (cargo cannot yet: rust-lang/cargo#5045).
//!   While the crate is 0.x every minor release may break the ABI, so the SONAME carries
//!   `major.minor` (`libdeepspeed_rs.so.0.1`); from 1.0 it carries the major alone;
//! * with `DSRS_BUILD_OPS=1` (DeepSpeed's `DS_BUILD_OPS`), compiles the built-in CPU ops into
//!   the library with `cc`; `DSRS_BUILD_<OP>=0|1` (e.g. `DSRS_BUILD_CPU_ADAM`) overrides it
//!   per op. It reads the op builders themselves (`src/ops/builders/`), so the sources,
//!   flags and symbols are the ones the JIT uses.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "src/ops/spec.rs"]
mod spec;

#[allow(dead_code)]
#[path = "src/ops/builders/mod.rs"]
mod builders;

fn main() {
    prebuild_ops();
    let major: u32 = env_num("CARGO_PKG_VERSION_MAJOR");
    let minor: u32 = env_num("CARGO_PKG_VERSION_MINOR");
    let soversion = if major == 0 {
        format!("0.{minor}")
    } else {
        major.to_string()
    };
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    match os.as_str() {
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly" | "illumos"
        | "solaris" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdeepspeed_rs.so.{soversion}");
        }
        "macos" | "ios" => {
            println!(
                "cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libdeepspeed_rs.{soversion}.dylib"
            );
        }
        _ => {}
    }
    println!("cargo:rustc-env=DSRS_SOVERSION={soversion}");
    println!(
        "cargo:rustc-env=DSRS_BUILD_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=DSRS_BUILD_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    println!("cargo:rerun-if-changed=build.rs");
}

fn env_flag(key: &str) -> Option<bool> {
    println!("cargo:rerun-if-env-changed={key}");
    let v = std::env::var(key).ok()?;
    let v = v.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    Some(!(v == "0" || v == "false" || v == "no" || v == "off"))
}

/// The build machine's SIMD level and the `-march` that targets it portably.
fn host_simd() -> (&'static str, Option<&'static str>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return ("avx512", Some("-march=x86-64-v4"));
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return ("avx2", Some("-march=x86-64-v3"));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return ("neon", None);
    }
    #[allow(unreachable_code)]
    ("scalar", None)
}

fn prebuild_ops() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let all = env_flag("DSRS_BUILD_OPS").unwrap_or(false);
    let mut decls = String::new();
    let mut table = String::new();
    let mut names = Vec::new();
    let same_host = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    for op in builders::ALL {
        if op.kind != spec::OpKind::Cpu {
            continue;
        }
        let var = format!("DSRS_BUILD_{}", op.name.to_ascii_uppercase());
        if !env_flag(&var).unwrap_or(all) {
            continue;
        }
        if !same_host {
            println!(
                "cargo:warning=DSRS_BUILD_OPS: skipping op {} when cross-compiling (it will be JIT-built)",
                op.name
            );
            continue;
        }
        let (simd, march) = host_simd();
        let dir = out.join("aot").join(op.name.as_ref());
        let mut sources = Vec::new();
        for (f, is_source) in spec::COMMON_HEADERS
            .iter()
            .chain(op.headers.iter())
            .map(|f| (f, false))
            .chain(op.sources.iter().map(|f| (f, true)))
        {
            let p = dir.join(f.path.as_ref());
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f.text.as_bytes()).unwrap();
            if is_source {
                sources.push(p);
            }
        }
        let mut b = cc::Build::new();
        b.cpp(true)
            .std("c++17")
            .opt_level(3)
            .flag_if_supported("-fvisibility=hidden")
            .define(&format!("DSRS_SIMD_{}", simd.to_ascii_uppercase()), None)
            .define("DSRS_SIMD_LEVEL", format!("\"{simd}\"").as_str())
            .include(dir.join("include"))
            .include(&dir)
            .files(&sources);
        if let Some(m) = march {
            b.flag(m);
        }
        let openmp = b.is_flag_supported("-fopenmp").unwrap_or(false) && openmp_links(&dir);
        if openmp {
            b.flag("-fopenmp");
        }
        for d in op.defines.iter() {
            b.define(
                d.name.as_ref(),
                (!d.value.is_empty()).then_some(d.value.as_ref()),
            );
        }
        for f in op.flags.iter() {
            b.flag(f.as_ref());
        }
        b.compile(&format!("dsrs_op_{}", op.name));
        if openmp {
            println!("cargo:rustc-link-lib=gomp");
        }
        let mut syms = String::new();
        for (i, s) in op.symbols.iter().enumerate() {
            let alias = format!("__dsrs_prebuilt_{}_{i}", op.name);
            writeln!(decls, "    #[link_name = \"{s}\"]\n    fn {alias}();").unwrap();
            write!(syms, "(\"{s}\", {alias} as unsafe extern \"C\" fn()), ").unwrap();
        }
        writeln!(
            table,
            "    PrebuiltOp {{ name: \"{}\", target: \"prebuilt:{simd}\", simd: \"{simd}\", fingerprint: {}, symbols: &[{syms}] }},",
            op.name,
            op.source_fingerprint()
        )
        .unwrap();
        names.push(op.name.to_string());
    }
    let mut code = String::from("// Generated by build.rs: the ops compiled into the library.\n");
    if !decls.is_empty() {
        writeln!(code, "unsafe extern \"C\" {{\n{decls}}}").unwrap();
    }
    writeln!(
        code,
        "pub(crate) static PREBUILT: &[PrebuiltOp] = &[\n{table}];"
    )
    .unwrap();
    std::fs::write(out.join("prebuilt_ops.rs"), code).unwrap();
    println!("cargo:rustc-env=DSRS_PREBUILT_OPS={}", names.join(","));
    println!("cargo:rerun-if-changed=src/ops/spec.rs");
    println!("cargo:rerun-if-changed=src/ops/builders");
    println!("cargo:rerun-if-changed=kernels");
}

/// Whether the C++ compiler can link OpenMP (the flag alone may compile without libgomp).
fn openmp_links(dir: &Path) -> bool {
    let probe = dir.join("omp_probe.cpp");
    if std::fs::write(
        &probe,
        "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n",
    )
    .is_err()
    {
        return false;
    }
    let compiler = cc::Build::new().cpp(true).get_compiler();
    compiler
        .to_command()
        .arg("-fopenmp")
        .arg(&probe)
        .arg("-o")
        .arg(dir.join("omp_probe"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn env_num(key: &str) -> u32 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not set to a number by cargo"))
}
