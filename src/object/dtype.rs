//! Element types, named as in safetensors headers.

use std::fmt;

macro_rules! dtypes {
    ($($variant:ident = $code:literal, $name:literal, $bits:literal;)*) => {
        /// A safetensors element type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum DType { $(#[doc = $name] $variant,)* }

        impl DType {
            /// Every dtype, in code order.
            pub const ALL: &'static [DType] = &[$(DType::$variant,)*];

            /// The stable one-byte code used in object bodies.
            pub fn code(self) -> u8 {
                match self { $(DType::$variant => $code,)* }
            }

            /// The safetensors name, e.g. `BF16`.
            pub fn name(self) -> &'static str {
                match self { $(DType::$variant => $name,)* }
            }

            /// Bits per element.
            pub fn bits(self) -> u32 {
                match self { $(DType::$variant => $bits,)* }
            }
        }
    };
}

dtypes! {
    BOOL = 1, "BOOL", 8;
    U8 = 2, "U8", 8;
    I8 = 3, "I8", 8;
    F8_E5M2 = 4, "F8_E5M2", 8;
    F8_E4M3 = 5, "F8_E4M3", 8;
    I16 = 6, "I16", 16;
    U16 = 7, "U16", 16;
    F16 = 8, "F16", 16;
    BF16 = 9, "BF16", 16;
    I32 = 10, "I32", 32;
    U32 = 11, "U32", 32;
    F32 = 12, "F32", 32;
    F64 = 13, "F64", 64;
    I64 = 14, "I64", 64;
    U64 = 15, "U64", 64;
    F8_E8M0 = 16, "F8_E8M0", 8;
    F8_E4M3FNUZ = 17, "F8_E4M3FNUZ", 8;
    F8_E5M2FNUZ = 18, "F8_E5M2FNUZ", 8;
    C64 = 19, "C64", 64;
    F4 = 20, "F4", 4;
    F6_E2M3 = 21, "F6_E2M3", 6;
    F6_E3M2 = 22, "F6_E3M2", 6;
}

/// Bit layout of an IEEE-style float type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatLayout {
    /// Exponent bits.
    pub exponent: u32,
    /// Mantissa (fraction) bits.
    pub mantissa: u32,
}

impl DType {
    /// Inverse of [`DType::code`].
    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.code() == code)
    }

    /// Parses a safetensors dtype name.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Bytes per codec element: the element size, or 1 for packed sub-byte types.
    pub fn width(self) -> usize {
        (self.bits() as usize / 8).max(1)
    }

    /// Exponent/mantissa split for float types whose bits the delta codecs understand.
    pub fn float_layout(self) -> Option<FloatLayout> {
        let (exponent, mantissa) = match self {
            DType::BF16 => (8, 7),
            DType::F16 => (5, 10),
            DType::F32 => (8, 23),
            DType::F64 => (11, 52),
            DType::F8_E4M3 | DType::F8_E4M3FNUZ => (4, 3),
            DType::F8_E5M2 | DType::F8_E5M2FNUZ => (5, 2),
            _ => return None,
        };
        Some(FloatLayout { exponent, mantissa })
    }

    /// Bytes needed for `elements` values, or None on overflow or a partial byte.
    pub fn byte_len(self, elements: u64) -> Option<u64> {
        let bits = elements.checked_mul(self.bits() as u64)?;
        (bits % 8 == 0).then_some(bits / 8)
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
    fn codes_and_names_round_trip() {
        for &d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        assert_eq!(DType::from_name("F128"), None);
    }

    #[test]
    fn sub_byte_lengths_must_fill_bytes() {
        assert_eq!(DType::F4.byte_len(3), None);
        assert_eq!(DType::F4.byte_len(4), Some(2));
        assert_eq!(DType::F32.byte_len(u64::MAX), None);
    }
}
