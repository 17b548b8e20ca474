//! Byte grouping: splitting element words into streams of like bytes.
//!
//! Floats split into exponent planes and sign+mantissa planes (the sign moved to the top of
//! the mantissa field), because exponents are highly repetitive and compress well apart
//! from the near-random low mantissa bits. Other types split into plain byte planes.

use crate::object::DType;

/// How a dtype's words are cut into planes.
#[derive(Debug, Clone, Copy)]
pub struct Grouping {
    width: usize,
    /// Mantissa bits, or None for plain byte planes.
    mantissa: Option<u32>,
    exp_planes: usize,
    sm_planes: usize,
}

impl Grouping {
    /// The grouping for `dtype`.
    pub fn of(dtype: DType) -> Grouping {
        let width = dtype.width();
        match dtype.float_layout() {
            Some(l) => Grouping {
                width,
                mantissa: Some(l.mantissa),
                exp_planes: l.exponent.div_ceil(8) as usize,
                sm_planes: (l.mantissa + 1).div_ceil(8) as usize,
            },
            None => Grouping { width, mantissa: None, exp_planes: 0, sm_planes: width },
        }
    }

    /// Number of streams produced.
    pub fn planes(&self) -> usize {
        self.exp_planes + self.sm_planes
    }

    /// Bytes per element.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Splits little-endian words into planes. `data.len()` must be a multiple of the width.
    pub fn split(&self, data: &[u8]) -> Vec<Vec<u8>> {
        match self.width {
            1 => self.split_words::<1>(data),
            2 => self.split_words::<2>(data),
            4 => self.split_words::<4>(data),
            _ => self.split_words::<8>(data),
        }
    }

    /// Inverse of [`Grouping::split`]; `planes` must hold `elements` bytes each.
    pub fn join(&self, planes: &[Vec<u8>], elements: usize, out: &mut Vec<u8>) {
        match self.width {
            1 => self.join_words::<1>(planes, elements, out),
            2 => self.join_words::<2>(planes, elements, out),
            4 => self.join_words::<4>(planes, elements, out),
            _ => self.join_words::<8>(planes, elements, out),
        }
    }

    /// Maps a word to (exponent field, sign+mantissa field); identity split for non-floats.
    #[inline]
    fn fields<const W: usize>(&self, word: u64) -> (u64, u64) {
        match self.mantissa {
            Some(m) => {
                let sign_shift = W as u32 * 8 - 1;
                let sign = word >> sign_shift;
                let exp = (word >> m) & ((1u64 << (sign_shift - m)) - 1);
                (exp, (sign << m) | (word & ((1u64 << m) - 1)))
            }
            None => (0, word),
        }
    }

    #[inline]
    fn unfields<const W: usize>(&self, exp: u64, sm: u64) -> u64 {
        match self.mantissa {
            Some(m) => {
                let sign_shift = W as u32 * 8 - 1;
                ((sm >> m) << sign_shift) | (exp << m) | (sm & ((1u64 << m) - 1))
            }
            None => sm,
        }
    }

    fn split_words<const W: usize>(&self, data: &[u8]) -> Vec<Vec<u8>> {
        let n = data.len() / W;
        let mut planes: Vec<Vec<u8>> = (0..self.planes()).map(|_| Vec::with_capacity(n)).collect();
        let (exp_planes, sm_planes) = planes.split_at_mut(self.exp_planes);
        for c in data.chunks_exact(W) {
            let (exp, sm) = self.fields::<W>(load::<W>(c));
            for (k, p) in exp_planes.iter_mut().enumerate() {
                p.push((exp >> (8 * k)) as u8);
            }
            for (k, p) in sm_planes.iter_mut().enumerate() {
                p.push((sm >> (8 * k)) as u8);
            }
        }
        planes
    }

    fn join_words<const W: usize>(&self, planes: &[Vec<u8>], elements: usize, out: &mut Vec<u8>) {
        out.reserve(elements * W);
        let (exp_planes, sm_planes) = planes.split_at(self.exp_planes);
        for i in 0..elements {
            let exp = exp_planes.iter().enumerate().fold(0u64, |a, (k, p)| a | (p[i] as u64) << (8 * k));
            let sm = sm_planes.iter().enumerate().fold(0u64, |a, (k, p)| a | (p[i] as u64) << (8 * k));
            out.extend_from_slice(&self.unfields::<W>(exp, sm).to_le_bytes()[..W]);
        }
    }
}

/// Reads a little-endian word of `W` bytes.
#[inline]
pub fn load<const W: usize>(c: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..W].copy_from_slice(&c[..W]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn split_join_round_trips_every_dtype(seed in proptest::collection::vec(any::<u8>(), 0..512), which in 0usize..DType::ALL.len()) {
            let dtype = DType::ALL[which];
            let g = Grouping::of(dtype);
            let n = seed.len() / g.width();
            let data = &seed[..n * g.width()];
            let planes = g.split(data);
            prop_assert!(planes.iter().all(|p| p.len() == n));
            let mut out = Vec::new();
            g.join(&planes, n, &mut out);
            prop_assert_eq!(out, data);
        }
    }

    #[test]
    fn bf16_splits_into_exponent_and_sign_mantissa() {
        let g = Grouping::of(DType::BF16);
        // -1.0 in BF16 is 0xBF80: sign 1, exponent 0x7F, mantissa 0.
        let planes = g.split(&0xBF80u16.to_le_bytes());
        assert_eq!(planes, vec![vec![0x7F], vec![0x80]]);
    }
}
