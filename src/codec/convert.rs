//! Converting a base tensor's elements to a fine-tune's float dtype (round to nearest even),
//! so a BF16 or F16 fine-tune can be predicted from an F32 base.

use half::{bf16, f16};

use crate::object::DType;

fn is_convertible(d: DType) -> bool {
    matches!(d, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
}

/// True if [`convert`] can map `from` elements to `to`.
pub fn can_convert(from: DType, to: DType) -> bool {
    from == to || (is_convertible(from) && is_convertible(to))
}

/// One element of a float dtype (F64, F32, F16; anything else as BF16) as f64, exactly.
pub fn read(d: DType, c: &[u8]) -> f64 {
    match d {
        DType::F64 => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        DType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
        DType::F16 => f16::from_le_bytes([c[0], c[1]]).to_f64(),
        _ => bf16::from_le_bytes([c[0], c[1]]).to_f64(),
    }
}

fn write(d: DType, v: f64, out: &mut Vec<u8>) {
    match d {
        DType::F64 => out.extend_from_slice(&v.to_le_bytes()),
        DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        DType::F16 => out.extend_from_slice(&f16::from_f64(v).to_le_bytes()),
        _ => out.extend_from_slice(&bf16::from_f64(v).to_le_bytes()),
    }
}

/// Converts `data` (elements of `from`) to elements of `to`; None if the pair is unsupported.
pub fn convert(data: &[u8], from: DType, to: DType) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / from.width() * to.width());
    convert_into(data, from, to, &mut out).then_some(out)
}

/// [`convert`], appending to `out`; false (and nothing appended) if the pair is unsupported.
pub fn convert_into(data: &[u8], from: DType, to: DType, out: &mut Vec<u8>) -> bool {
    if from == to {
        out.extend_from_slice(data);
        return true;
    }
    if !can_convert(from, to) {
        return false;
    }
    // F32 -> BF16 is the common case (an F32 base of a BF16 fine-tune): do it without f64.
    if from == DType::F32 && to == DType::BF16 {
        f32_to_bf16(data, out);
        return true;
    }
    for c in data.chunks_exact(from.width()) {
        write(to, read(from, c), out);
    }
    true
}

/// F32 to BF16 with round to nearest even, in integer arithmetic so the loop vectorises;
/// NaNs stay NaN (quiet bit set), as `half` does. Compiled for each x86-64 level too (the
/// portable build has only SSE2, a quarter of AVX-512's width), chosen at run time.
#[multiversion::multiversion(targets = "simd")]
fn f32_to_bf16(data: &[u8], out: &mut Vec<u8>) {
    let words = data.as_chunks::<4>().0;
    let from = out.len();
    out.resize(from + 2 * words.len(), 0);
    for (o, w) in out[from..].as_chunks_mut::<2>().0.iter_mut().zip(words) {
        *o = bf16_of_f32(u32::from_le_bytes(*w));
    }
}

/// One F32 (as bits) rounded to BF16, in integer arithmetic so that loops over it vectorise.
#[inline(always)]
pub fn bf16_of_f32(u: u32) -> [u8; 2] {
    let rounded = (u.wrapping_add(0x7FFF + ((u >> 16) & 1)) >> 16) as u16;
    let nan = (u >> 16) as u16 | 0x40;
    // Select without a branch.
    let is_nan = 0u16.wrapping_sub(((u & 0x7FFF_FFFF) > 0x7F80_0000) as u16);
    (rounded ^ ((rounded ^ nan) & is_nan)).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_to_bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between two BF16 values: ties to even (1.0).
        let v = f32::from_bits(0x3F80_8000);
        let out = convert(&v.to_le_bytes(), DType::F32, DType::BF16).unwrap();
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), 0x3F80);
        let v = f32::from_bits(0x3F81_8000);
        let out = convert(&v.to_le_bytes(), DType::F32, DType::BF16).unwrap();
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), 0x3F82);
    }

    #[test]
    fn f32_to_bf16_fast_path_matches_general_path() {
        let specials = [1.5f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, 3.0e-39, 65504.0, -1.0e-3, f32::MAX];
        let payloads = [0x7F80_0001u32, 0xFFC0_1234, 0x7FFF_FFFF, 0x7F7F_FFFF, 0x0000_8000, 0x8000_7FFF];
        let words = specials
            .iter()
            .map(|v| v.to_bits())
            .chain(payloads)
            .chain((0..20_000u32).map(|i| i.wrapping_mul(2_654_435_761)));
        let vals: Vec<u8> = words.flat_map(|v| v.to_le_bytes()).collect();
        let fast = convert(&vals, DType::F32, DType::BF16).unwrap();
        let mut slow = Vec::new();
        for c in vals.chunks_exact(4) {
            slow.extend_from_slice(&half::bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes());
        }
        assert_eq!(fast, slow);
    }

    #[test]
    fn integer_types_do_not_convert() {
        assert!(convert(&[0; 8], DType::I64, DType::F32).is_none());
        assert!(can_convert(DType::U8, DType::U8));
    }
}
