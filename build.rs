//! Gives the shared library a proper SONAME (cargo cannot yet: rust-lang/cargo#5045).
//!
//! While the crate is 0.x every minor release may break the ABI, so the SONAME carries
//! `major.minor` (`libdeepspeed_rs.so.0.1`); from 1.0 it carries the major alone.

fn main() {
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

fn env_num(key: &str) -> u32 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not set to a number by cargo"))
}
