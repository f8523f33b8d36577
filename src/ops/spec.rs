//! The data that describes an op: sources, flags, exported symbols, requirements.
//!
//! This file is plain `std` Rust with no dependency on the rest of the crate, because the
//! build script includes it too (with the built-in builders) to compile the CPU ops ahead of
//! time when `DSRS_BUILD_OPS=1`.

use std::borrow::Cow;

/// Where an op runs, which decides how it is compiled and loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Host code: C++ compiled by the system C++ compiler into a shared library.
    Cpu,
    /// Device code: CUDA C++ compiled by NVRTC (or `nvcc` on request) to CUBIN or PTX.
    Cuda,
}

impl OpKind {
    /// `"cpu"` or `"cuda"`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Cpu => "cpu",
            OpKind::Cuda => "cuda",
        }
    }
}

/// One source or header file of an op: its path relative to the kernel tree (`kernels/`),
/// and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path relative to the kernel tree, with `/` separators (`cpu/cpu_adam.cpp`).
    pub path: Cow<'static, str>,
    /// The file's contents.
    pub text: Cow<'static, str>,
}

/// A preprocessor definition, `-D<name>=<value>` (`-D<name>` when the value is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Define {
    /// The macro name.
    pub name: Cow<'static, str>,
    /// The macro value; empty for a bare `-D<name>`.
    pub value: Cow<'static, str>,
}

impl Define {
    /// The compiler argument: `-D<name>=<value>`, or `-D<name>` when the value is empty.
    pub fn flag(&self) -> String {
        if self.value.is_empty() {
            format!("-D{}", self.name)
        } else {
            format!("-D{}={}", self.name, self.value)
        }
    }
}

/// Everything needed to build, check and load one op. Built-in ops are `const` values of
/// this type (one file per op under `src/ops/builders/`); ops defined at run time own
/// their strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSpec {
    /// The op's name: lowercase letters, digits and `_` (`cpu_adam`).
    pub name: Cow<'static, str>,
    /// CPU or CUDA.
    pub kind: OpKind,
    /// One line for `dsrs report` and the op list.
    pub description: Cow<'static, str>,
    /// The translation units, compiled in this order. A CUDA op has exactly one.
    pub sources: Cow<'static, [SourceFile]>,
    /// Headers the sources include, written next to them (the kernel tree's `include/` is
    /// on the include path).
    pub headers: Cow<'static, [SourceFile]>,
    /// Extra include directories on the host (ops defined at run time).
    pub include_dirs: Cow<'static, [Cow<'static, str>]>,
    /// Preprocessor definitions.
    pub defines: Cow<'static, [Define]>,
    /// Extra compiler flags, after the defaults.
    pub flags: Cow<'static, [Cow<'static, str>]>,
    /// Symbols the built library must export (checked after every build and load).
    pub symbols: Cow<'static, [Cow<'static, str>]>,
    /// CUDA ops: the lowest compute capability the kernels support, `(major, minor)`.
    pub min_compute_capability: (u32, u32),
}

/// Shorthand for a `'static` string slice in a `const` [`OpSpec`].
pub const fn s(v: &'static str) -> Cow<'static, str> {
    Cow::Borrowed(v)
}

/// Shorthand for a source file in a `const` [`OpSpec`].
pub const fn src(path: &'static str, text: &'static str) -> SourceFile {
    SourceFile {
        path: Cow::Borrowed(path),
        text: Cow::Borrowed(text),
    }
}

/// The headers every op may include (`#include "dsrs_op.h"`): the export macro, the SIMD
/// level and the status codes shared by all kernels.
pub const COMMON_HEADERS: &[SourceFile] = &[src(
    "include/dsrs_op.h",
    include_str!("../../kernels/include/dsrs_op.h"),
)];

impl OpSpec {
    /// A fingerprint of the sources and headers (FNV-1a, 64 bits). The build script stores it
    /// with each op compiled ahead of time, so a prebuilt op is used only while the sources
    /// it was built from are the ones in force (not under `DSRS_KERNEL_DIR` edits).
    pub fn source_fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let files = self
            .sources
            .iter()
            .chain(self.headers.iter())
            .chain(COMMON_HEADERS.iter());
        for f in files {
            for b in f
                .path
                .bytes()
                .chain([0u8])
                .chain(f.text.bytes())
                .chain([0u8])
            {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
}
