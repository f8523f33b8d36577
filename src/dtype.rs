//! Element types, and their mapping to DLPack's `DLDataType`.

use std::fmt;

use crate::dlpack::{
    DL_MAX_TYPE_CODE, DLDataType, kDLBfloat, kDLBool, kDLComplex, kDLFloat, kDLInt, kDLUInt,
};
use crate::error::{Error, Result};

/// The element types deepspeed_rs understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Boolean stored in one byte.
    Bool,
    /// Complex of two f32.
    C64,
    /// Complex of two f64.
    C128,
}

impl DType {
    /// Every type, in a stable order.
    pub const ALL: [DType; 15] = [
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
        DType::C64,
        DType::C128,
    ];

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 8,
            DType::C128 => 16,
        }
    }

    /// The name used in reports, JSON and Python (`"float32"`, `"bfloat16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
        }
    }

    /// Parses a name as printed by [`DType::name`], plus the common aliases
    /// (`fp32`, `half`, `bf16`, ...).
    pub fn parse(s: &str) -> Result<DType> {
        let t = match s.to_ascii_lowercase().as_str() {
            "float16" | "fp16" | "half" | "f16" => DType::F16,
            "bfloat16" | "bf16" => DType::BF16,
            "float32" | "fp32" | "float" | "f32" => DType::F32,
            "float64" | "fp64" | "double" | "f64" => DType::F64,
            "int8" | "i8" => DType::I8,
            "int16" | "i16" => DType::I16,
            "int32" | "i32" => DType::I32,
            "int64" | "i64" => DType::I64,
            "uint8" | "u8" => DType::U8,
            "uint16" | "u16" => DType::U16,
            "uint32" | "u32" => DType::U32,
            "uint64" | "u64" => DType::U64,
            "bool" => DType::Bool,
            "complex64" => DType::C64,
            "complex128" => DType::C128,
            _ => return Err(Error::invalid(format!("unknown dtype {s:?}"))),
        };
        Ok(t)
    }

    /// Whether the type is a floating-point type (f16, bf16, f32, f64).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// The DLPack description of this type (one lane).
    pub fn to_dl(self) -> DLDataType {
        let (code, bits) = match self {
            DType::F16 => (kDLFloat, 16),
            DType::BF16 => (kDLBfloat, 16),
            DType::F32 => (kDLFloat, 32),
            DType::F64 => (kDLFloat, 64),
            DType::I8 => (kDLInt, 8),
            DType::I16 => (kDLInt, 16),
            DType::I32 => (kDLInt, 32),
            DType::I64 => (kDLInt, 64),
            DType::U8 => (kDLUInt, 8),
            DType::U16 => (kDLUInt, 16),
            DType::U32 => (kDLUInt, 32),
            DType::U64 => (kDLUInt, 64),
            DType::Bool => (kDLBool, 8),
            DType::C64 => (kDLComplex, 64),
            DType::C128 => (kDLComplex, 128),
        };
        DLDataType {
            code,
            bits,
            lanes: 1,
        }
    }

    /// The type a DLPack description denotes; errors name the offending field.
    pub fn from_dl(dt: DLDataType) -> Result<DType> {
        if dt.lanes != 1 {
            return Err(Error::range(format!(
                "dtype.lanes must be 1 (vector types are not supported), got {}",
                dt.lanes
            )));
        }
        if dt.code > DL_MAX_TYPE_CODE {
            return Err(Error::range(format!(
                "dtype.code {} is not a DLPack type code (0..={DL_MAX_TYPE_CODE})",
                dt.code
            )));
        }
        let t = match (dt.code, dt.bits) {
            (kDLFloat, 16) => DType::F16,
            (kDLBfloat, 16) => DType::BF16,
            (kDLFloat, 32) => DType::F32,
            (kDLFloat, 64) => DType::F64,
            (kDLInt, 8) => DType::I8,
            (kDLInt, 16) => DType::I16,
            (kDLInt, 32) => DType::I32,
            (kDLInt, 64) => DType::I64,
            (kDLUInt, 8) => DType::U8,
            (kDLUInt, 16) => DType::U16,
            (kDLUInt, 32) => DType::U32,
            (kDLUInt, 64) => DType::U64,
            (kDLBool, 8) | (kDLUInt, 1) => DType::Bool,
            (kDLComplex, 64) => DType::C64,
            (kDLComplex, 128) => DType::C128,
            (code, bits) => {
                return Err(Error::range(format!(
                    "dtype (code {code}, bits {bits}) is not supported by deepspeed_rs"
                )));
            }
        };
        Ok(t)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips_through_dlpack_and_names() {
        for t in DType::ALL {
            assert_eq!(DType::from_dl(t.to_dl()).unwrap(), t);
            assert_eq!(DType::parse(t.name()).unwrap(), t);
            assert_eq!(usize::from(t.to_dl().bits) / 8, t.size());
        }
    }

    #[test]
    fn bad_dlpack_types_are_rejected_with_the_field() {
        let e = DType::from_dl(DLDataType {
            code: 2,
            bits: 32,
            lanes: 4,
        })
        .unwrap_err();
        assert!(e.to_string().contains("dtype.lanes"));
        let e = DType::from_dl(DLDataType {
            code: 99,
            bits: 32,
            lanes: 1,
        })
        .unwrap_err();
        assert!(e.to_string().contains("dtype.code 99"));
        let e = DType::from_dl(DLDataType {
            code: 2,
            bits: 24,
            lanes: 1,
        })
        .unwrap_err();
        assert!(e.to_string().contains("bits 24"));
    }
}
