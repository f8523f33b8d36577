//! Host-side values for the multi-tensor CUDA optimizer tests, shared by the host-emulation
//! tests in `src/ops/optim/cuda.rs` and the GPU tests in `tests/cuda_optim.rs` (each
//! includes this file with `#[path]`; the including module has `DType`, `GradsRef` and
//! `ParamsMut` in scope): a small random generator, arrays of fp32, fp16 or bf16 values with
//! their little-endian bytes, and the (parameter, gradient) dtype pairs the kernels take.

#![allow(dead_code)]

use half::{bf16, f16};

use super::{DType, GradsRef, ParamsMut};

/// Every (parameter dtype, gradient dtype) pair the kernels support.
pub const PAIRS: [(DType, DType); 7] = [
    (DType::F32, DType::F32),
    (DType::F32, DType::F16),
    (DType::F32, DType::BF16),
    (DType::F16, DType::F16),
    (DType::F16, DType::F32),
    (DType::BF16, DType::BF16),
    (DType::BF16, DType::F32),
];

/// xorshift64, uniform floats in [-1, 1).
pub struct Rng(pub u64);

impl Rng {
    /// A generator whose state is spread from a small seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Host values of one array in its dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum HostVec {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl HostVec {
    /// `n` values uniform in [-scale, scale), rounded to `dtype` (fp32, fp16 or bf16).
    pub fn random(dtype: DType, n: usize, rng: &mut Rng, scale: f32) -> HostVec {
        let v = (0..n).map(|_| rng.next() * scale);
        match dtype {
            DType::F32 => HostVec::F32(v.collect()),
            DType::F16 => HostVec::F16(v.map(f16::from_f32).collect()),
            DType::BF16 => HostVec::BF16(v.map(bf16::from_f32).collect()),
            other => panic!("{other:?}"),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            HostVec::F32(_) => DType::F32,
            HostVec::F16(_) => DType::F16,
            HostVec::BF16(_) => DType::BF16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostVec::F32(v) => v.len(),
            HostVec::F16(v) => v.len(),
            HostVec::BF16(v) => v.len(),
        }
    }

    /// The little-endian bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            HostVec::F32(v) => f32_bytes(v),
            HostVec::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            HostVec::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        }
    }

    /// From little-endian bytes.
    pub fn from_bytes(dtype: DType, b: &[u8]) -> HostVec {
        let halves = || {
            b.chunks_exact(2)
                .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
        };
        match dtype {
            DType::F32 => HostVec::F32(f32_from_bytes(b)),
            DType::F16 => HostVec::F16(halves().map(f16::from_bits).collect()),
            DType::BF16 => HostVec::BF16(halves().map(bf16::from_bits).collect()),
            other => panic!("{other:?}"),
        }
    }

    pub fn params_mut(&mut self) -> ParamsMut<'_> {
        match self {
            HostVec::F32(v) => ParamsMut::F32(v),
            HostVec::F16(v) => ParamsMut::F16(v),
            HostVec::BF16(v) => ParamsMut::BF16(v),
        }
    }

    pub fn grads(&self) -> GradsRef<'_> {
        match self {
            HostVec::F32(v) => GradsRef::F32(v),
            HostVec::F16(v) => GradsRef::F16(v),
            HostVec::BF16(v) => GradsRef::BF16(v),
        }
    }

    /// (bits, value) of element i.
    pub fn at(&self, i: usize) -> (u32, f64) {
        match self {
            HostVec::F32(v) => (v[i].to_bits(), f64::from(v[i])),
            HostVec::F16(v) => (u32::from(v[i].to_bits()), f64::from(v[i].to_f32())),
            HostVec::BF16(v) => (u32::from(v[i].to_bits()), f64::from(v[i].to_f32())),
        }
    }
}

/// The little-endian bytes of fp32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// fp32 values from little-endian bytes.
pub fn f32_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
