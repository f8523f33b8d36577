//! # deepspeed_rs
//!
//! DeepSpeed's acceleration core — the accelerator factory, the op-builder registry with
//! just-in-time kernel builds, and the training engine — in Rust, offered to every runtime
//! through a C ABI (`include/deepspeed_rs.h`).
//!
//! The crate is layered: the modules below are plain Rust with no FFI concerns, and
//! [`ffi`] is a thin skin that exposes them as `extern "C"` functions with the conventions
//! documented in `docs/c-api.md`.
//!
//! * [`accelerator`] — the [`Accelerator`](accelerator::Accelerator) trait (DeepSpeed's
//!   accelerator surface), the factory that detects and selects one
//!   (`DSRS_ACCELERATOR` override), the CPU accelerator, CUDA detection, device buffers,
//!   streams, events and the Philox random-number generator.
//! * [`ops`] — the op-builder registry and its JIT: C++ ops compiled by the system compiler,
//!   CUDA ops by NVRTC, cached per user (verified by SHA-256, built once under a per-key
//!   lock), or compiled in ahead of time (`DSRS_BUILD_OPS=1`).
//! * [`report`] — the environment report behind `dsrs report`.
//! * [`log`] — the library's logging (stderr by default, or a host callback).
//! * [`dtype`] and [`dlpack`] — data types and the DLPack structures tensors cross the ABI as.
//!
//! ```
//! use deepspeed_rs::accelerator::{self, MemoryKind};
//!
//! let cpu = accelerator::create("cpu", None).unwrap();
//! let buf = accelerator::Buffer::new(&cpu, 4096, 0, MemoryKind::Device).unwrap();
//! buf.write(0, &[1, 2, 3, 4]).unwrap();
//! let mut back = [0u8; 4];
//! buf.read(0, &mut back).unwrap();
//! assert_eq!(back, [1, 2, 3, 4]);
//! assert!(cpu.memory_allocated(None).unwrap() >= 4096);
//! ```

#![warn(missing_docs)]
// DLPack's constants keep their standard names (`kDLCPU`, `kDLFloat`, ...).
#![allow(non_upper_case_globals)]

pub mod accelerator;
pub mod dlpack;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod log;
pub mod ops;
pub mod report;

pub use error::{Error, ErrorKind, Result};

/// The crate version, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The C ABI version. Bumped on every incompatible change to `include/deepspeed_rs.h`;
/// bindings refuse to run against a library whose ABI version differs from theirs.
pub const ABI_VERSION: u32 = 1;
