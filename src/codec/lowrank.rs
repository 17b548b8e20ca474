//! Codec 6, `bitx-lowrank`: a fine-tune whose difference from its base is a low-rank matrix.
//!
//! Merging a LoRA adapter adds `B·A` (rank 8 to 64) to a weight matrix. Element by element
//! that difference looks like noise (an FP32 merge costs codec 3 about 20 bits per weight), but
//! as a matrix it is a few rows of factors. A chunk of a matrix is predicted as its base plus
//! `U·V`, and only what the prediction misses (nothing but rounding, mostly) is coded, as
//! codec 3 against the prediction. Layout and the exact prediction in `docs/FORMAT.md`.

use half::f16;
use nalgebra::DMatrix;

use super::convert::{bf16_of_f32, read};
use super::difference_size;
use crate::object::DType;

/// Where a chunk's elements sit in their tensor seen as a matrix: rows of `cols` elements
/// (the last dimension), the chunk's first element in column `col0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Elements per row.
    pub cols: usize,
    /// Column of the chunk's first element.
    pub col0: usize,
}

impl Geometry {
    /// Rows the chunk's `n` elements touch.
    fn rows(self, n: usize) -> Option<usize> {
        self.col0.checked_add(n)?.checked_add(self.cols - 1).map(|x| x / self.cols)
    }
}

/// The factors of a chunk's predicted difference: `u` is rows × rank, `v` rank × cols.
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    geometry: Geometry,
    rank: usize,
    u: Vec<f32>,
    v: Vec<f32>,
}

/// Bytes of the factor stream before the factors: cols, col0, rank.
const HEADER: usize = 4 + 4 + 1;

/// True for the dtypes codec 6 predicts.
pub fn applies(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

impl Factors {
    /// The factor stream: `u32 cols, u32 col0, u8 rank`, then `u` and `v` as little-endian f32.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 4 * (self.u.len() + self.v.len()));
        out.extend_from_slice(&(self.geometry.cols as u32).to_le_bytes());
        out.extend_from_slice(&(self.geometry.col0 as u32).to_le_bytes());
        out.push(self.rank as u8);
        for x in self.u.iter().chain(&self.v) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Parses the factor stream of a chunk of `n` elements, refusing any length but the one
    /// its header implies.
    pub fn parse(bytes: &[u8], n: usize) -> Result<Factors, String> {
        let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let (Some(cols), Some(col0), Some(&rank)) = (word(0), word(4), bytes.get(8)) else {
            return Err("low-rank factors: short header".into());
        };
        let rank = usize::from(rank);
        if cols == 0 || col0 >= cols || rank == 0 {
            return Err(format!("low-rank factors: {cols} columns, first column {col0}, rank {rank}"));
        }
        let geometry = Geometry { cols, col0 };
        let rows = geometry.rows(n).ok_or("low-rank factors: too many rows")?;
        let expected = rows
            .checked_add(cols)
            .and_then(|x| x.checked_mul(rank))
            .and_then(|x| x.checked_mul(4))
            .and_then(|x| x.checked_add(HEADER));
        if expected != Some(bytes.len()) {
            return Err(format!(
                "low-rank factors: {} bytes for {rows} rows, {cols} columns, rank {rank}",
                bytes.len()
            ));
        }
        let floats: Vec<f32> = bytes[HEADER..].as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)).collect();
        let (u, v) = floats.split_at(rows * rank);
        Ok(Factors { geometry, rank, u: u.to_vec(), v: v.to_vec() })
    }

    /// The predicted elements of the chunk on `base` (its elements, `dtype`): each is
    /// `base + Σ_k u[row][k]·v[k][col]`, summed in f32 in order of `k` from 0 (no fused
    /// multiply-add: the decoder must get the encoder's bits on every machine), rounded to
    /// `dtype` to nearest even; the base element itself where the sum is not finite.
    pub fn predict(&self, dtype: DType, base: &[u8]) -> Vec<u8> {
        let (w, cols, rank) = (dtype.width(), self.geometry.cols, self.rank);
        let n = base.len() / w;
        let mut out = Vec::with_capacity(n * w);
        let mut acc = vec![0f32; cols];
        let (mut done, mut row) = (0, 0);
        while done < n {
            let lo = if row == 0 { self.geometry.col0 } else { 0 };
            let hi = cols.min(lo + (n - done));
            let acc = &mut acc[lo..hi];
            acc.fill(0.0);
            for k in 0..rank {
                let uk = self.u[row * rank + k];
                for (a, &x) in acc.iter_mut().zip(&self.v[k * cols + lo..k * cols + hi]) {
                    *a += uk * x;
                }
            }
            for (a, b) in acc.iter().zip(base[done * w..(done + hi - lo) * w].chunks_exact(w)) {
                push_predicted(dtype, b, *a, &mut out);
            }
            done += hi - lo;
            row += 1;
        }
        out
    }
}

/// One predicted element: base element `b` plus `delta`, rounded to `dtype`.
#[inline(always)]
fn push_predicted(dtype: DType, b: &[u8], delta: f32, out: &mut Vec<u8>) {
    match dtype {
        DType::F32 => {
            let s = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) + delta;
            if s.is_finite() { out.extend_from_slice(&s.to_le_bytes()) } else { out.extend_from_slice(b) }
        }
        DType::BF16 => {
            let s = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16) + delta;
            if s.is_finite() { out.extend_from_slice(&bf16_of_f32(s.to_bits())) } else { out.extend_from_slice(b) }
        }
        _ => {
            let s = f16::from_le_bytes([b[0], b[1]]).to_f32() + delta;
            if s.is_finite() {
                out.extend_from_slice(&f16::from_f32(s).to_le_bytes())
            } else {
                out.extend_from_slice(b)
            }
        }
    }
}

/// Rows sampled to find the factors, rows held out to judge them, and the rank of the
/// first, cheap look.
const FIT_ROWS: usize = 48;
const HELD_ROWS: usize = 16;
const GATE_RANK: usize = 16;
/// Rows, held-out rows and columns the gate looks at.
const GATE_ROWS: usize = 32;
const GATE_HELD: usize = 8;
const GATE_COLS: usize = 256;
/// A chunk is only factored when the gate's factors capture at least this much of the held
/// rows' difference: merged LoRA adapters of MiniLM 0.90-1.00 (BF16, where rounding adds
/// noise) and 1.00 (FP32), the chunks of its full fine-tunes 0.02-0.92 (their updates are
/// of low rank too, but not low enough to pay for factors).
const GATE_CAPTURE: f64 = 0.85;
/// The factors are used only when they look this much smaller than the plain difference.
const WORTH: f64 = 0.9;
/// Ranks tried, each judged by what it would store.
const RANKS: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// Factors for a chunk of `fine` on `base` (`dtype` elements, same length), if a low-rank
/// prediction looks smaller than the plain difference: the rank is the one whose factors plus
/// codec 3 of the held-out rows on their prediction, scaled to the chunk, is least. None
/// quickly when the difference is not low rank (one small eigenproblem on a few rows).
pub fn fit(dtype: DType, fine: &[u8], base: &[u8], geometry: Geometry) -> Option<Factors> {
    let (w, cols) = (dtype.width(), geometry.cols);
    let n = fine.len() / w;
    if !applies(dtype) || cols < 16 || base.len() != fine.len() || geometry.col0 >= cols {
        return None;
    }
    let rows = geometry.rows(n)?;
    // Element range of row r, when the chunk holds all of it.
    let full = |r: usize| {
        let start = (r * cols).checked_sub(geometry.col0)?;
        (start + cols <= n).then_some(start..start + cols)
    };
    let full_rows: Vec<usize> = (0..rows).filter(|&r| full(r).is_some()).collect();
    if full_rows.len() < 32 {
        return None;
    }
    let pick = |count: usize, offset: usize| -> Vec<usize> {
        (0..count).map(|i| full_rows[(i * full_rows.len() + offset) / count]).collect()
    };
    let fit_rows = pick(FIT_ROWS.min(full_rows.len() * 2 / 3), 0);
    let held_rows: Vec<usize> = pick(HELD_ROWS.min(full_rows.len() / 3), full_rows.len() / 2)
        .into_iter()
        .filter(|r| !fit_rows.contains(r))
        .collect();
    // Columns `cols` of difference row r (all of it without a range).
    let diff_cols = |r: usize, part: std::ops::Range<usize>| -> Vec<f64> {
        let row = full(r).unwrap_or(0..0);
        let (start, end) = ((row.start + part.start).min(row.end), (row.start + part.end).min(row.end));
        let (f, b) = (&fine[start * w..end * w], &base[start * w..end * w]);
        f.chunks_exact(w)
            .zip(b.chunks_exact(w))
            .map(|(f, b)| read(dtype, f) - read(dtype, b))
            .map(finite_or_zero)
            .collect()
    };
    let diff_row = |r: usize| diff_cols(r, 0..cols);
    // The gate: on the first few hundred columns of a few rows (a low-rank matrix is low rank
    // in any of its columns), so that the chunks of a full fine-tune cost little.
    let gate_cols = 0..cols.min(GATE_COLS);
    let gate_rows = &fit_rows[..fit_rows.len().min(GATE_ROWS)];
    let a = DMatrix::from_row_iterator(
        gate_rows.len(),
        gate_cols.len(),
        gate_rows.iter().flat_map(|&r| diff_cols(r, gate_cols.clone())),
    );
    let gate_basis = right_singular_vectors(&a, GATE_RANK.min(gate_rows.len() / 2))?;
    let gate_held: Vec<Vec<f64>> = held_rows.iter().take(GATE_HELD).map(|&r| diff_cols(r, gate_cols.clone())).collect();
    if captured(&gate_basis, GATE_RANK, &gate_held)? < GATE_CAPTURE {
        return None;
    }
    let a = DMatrix::from_row_iterator(fit_rows.len(), cols, fit_rows.iter().flat_map(|&r| diff_row(r)));
    let basis = right_singular_vectors(&a, RANKS[RANKS.len() - 1].min(fit_rows.len() / 2))?;
    let held: Vec<Vec<f64>> = held_rows.iter().map(|&r| diff_row(r)).collect();
    // The held rows' own bytes, and the factors' prediction of them at each rank.
    let bytes_of = |data: &[u8]| -> Vec<u8> {
        held_rows
            .iter()
            .flat_map(|&r| full(r).map(|x| &data[x.start * w..x.end * w]).unwrap_or_default())
            .copied()
            .collect()
    };
    let (held_fine, held_base) = (bytes_of(fine), bytes_of(base));
    let scale = |bytes: usize| bytes as f64 * rows as f64 / held_rows.len() as f64;
    let plain = scale(difference_size(dtype, &held_fine, &held_base));
    let mut best: Option<(f64, usize)> = None;
    for rank in RANKS.into_iter().filter(|&r| r <= basis.len()) {
        let v = f32_rows(&basis, rank);
        let u: Vec<f32> = held.iter().flat_map(|d| project(&v, rank, d)).collect();
        let factors = Factors { geometry: Geometry { cols, col0: 0 }, rank, u, v };
        let size = scale(difference_size(dtype, &held_fine, &factors.predict(dtype, &held_base)))
            + (4 * rank * (rows + cols)) as f64;
        if best.is_none_or(|(s, _)| size < s) {
            best = Some((size, rank));
        }
    }
    let (size, rank) = best?;
    // A small gain is not worth a second full encoding of the chunk.
    if size >= plain * WORTH {
        return None;
    }
    let v = f32_rows(&basis, rank);
    let u = (0..rows)
        .flat_map(|r| if full(r).is_some() { project(&v, rank, &diff_row(r)) } else { vec![0.0; rank] })
        .collect();
    Some(Factors { geometry, rank, u, v })
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// Up to `max_rank` leading right singular vectors of `a`, from the eigenvectors of the small
/// Gram matrix `a·aᵀ`; fewer when `a` has fewer that are not numerically zero.
fn right_singular_vectors(a: &DMatrix<f64>, max_rank: usize) -> Option<Vec<Vec<f64>>> {
    let gram = a * a.transpose();
    let eigen = gram.symmetric_eigen();
    let mut order: Vec<usize> = (0..eigen.eigenvalues.len()).collect();
    order.sort_by(|&i, &j| eigen.eigenvalues[j].total_cmp(&eigen.eigenvalues[i]));
    let top = eigen.eigenvalues[*order.first()?];
    if top.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let kept: Vec<usize> =
        order.into_iter().take(max_rank).take_while(|&i| eigen.eigenvalues[i] > top * 1e-14).collect();
    let at = a.transpose();
    // v = aᵀ·w / sqrt(λ): unit length, orthogonal to the others.
    Some(
        kept.iter()
            .map(|&i| (&at * eigen.eigenvectors.column(i) / eigen.eigenvalues[i].sqrt()).as_slice().to_vec())
            .collect(),
    )
}

/// The fraction of the rows' squared length that the first `rank` basis rows capture.
fn captured(basis: &[Vec<f64>], rank: usize, rows: &[Vec<f64>]) -> Option<f64> {
    let (mut total, mut kept) = (0.0, 0.0);
    for d in rows {
        total += d.iter().map(|x| x * x).sum::<f64>();
        for v in basis.iter().take(rank) {
            let c: f64 = v.iter().zip(d).map(|(v, x)| v * x).sum();
            kept += c * c;
        }
    }
    (total > 0.0).then(|| kept / total)
}

/// The first `rank` basis rows as f32, row after row: the stored `v`.
fn f32_rows(basis: &[Vec<f64>], rank: usize) -> Vec<f32> {
    basis.iter().take(rank).flatten().map(|&x| x as f32).collect()
}

/// The coefficients of difference row `d` on the rows of `v` (rank × cols, orthonormal).
fn project(v: &[f32], rank: usize, d: &[f64]) -> Vec<f32> {
    let cols = d.len();
    (0..rank)
        .map(|k| v[k * cols..(k + 1) * cols].iter().zip(d).map(|(&v, x)| f64::from(v) * x).sum::<f64>() as f32)
        .collect()
}
