//! Ops compiled into the library ahead of time (`DSRS_BUILD_OPS=1 cargo build`, DeepSpeed's
//! `DS_BUILD_OPS`). The build script compiles each CPU op's sources with `cc` for the build
//! machine's SIMD level (`-march=x86-64-v4` for AVX-512, `x86-64-v3` for AVX2, the baseline
//! otherwise) and generates the table below. At run time a prebuilt op is used when the CPU
//! has at least that level and the op's sources are the ones it was built from; otherwise
//! the op is JIT-built.

use super::spec::OpSpec;
use crate::accelerator::cpu::{SimdLevel, cpu_info};

/// One op compiled into the library.
pub(crate) struct PrebuiltOp {
    /// The op's name.
    pub name: &'static str,
    /// `prebuilt:<simd>`.
    pub target: &'static str,
    /// The SIMD level it was compiled for.
    pub simd: &'static str,
    /// [`OpSpec::source_fingerprint`] of the sources it was built from.
    pub fingerprint: u64,
    /// Its exported functions.
    pub symbols: &'static [(&'static str, unsafe extern "C" fn())],
}

include!(concat!(env!("OUT_DIR"), "/prebuilt_ops.rs"));

fn rank(level: &str) -> u32 {
    match level {
        "avx512" => 2,
        "avx2" | "neon" => 1,
        _ => 0,
    }
}

/// The prebuilt form of `spec`, if there is one this CPU can run.
pub(crate) fn find(spec: &OpSpec) -> Option<&'static PrebuiltOp> {
    let here = cpu_info().simd;
    PREBUILT.iter().find(|p| {
        p.name == spec.name
            && p.fingerprint == spec.source_fingerprint()
            && (rank(p.simd) == 0
                || (here != SimdLevel::Scalar && rank(here.name()) >= rank(p.simd)))
    })
}

/// The names of every op compiled into the library.
pub(crate) fn names() -> Vec<&'static str> {
    PREBUILT.iter().map(|p| p.name).collect()
}
