//! The block mask of codec 5 (`bitx-diff-mask`): which blocks of [`BLOCK`] elements of a chunk
//! differ from their base. A fine-tune leaves whole runs of weights exactly as they were
//! (embedding rows of tokens its data never had, rows whose updates all round away in BF16),
//! and a coder that sees one element at a time pays for every one of those zeros; the mask
//! names each such block once, and only the elements of the other blocks are coded.

/// Elements per block.
pub const BLOCK: usize = 16;

/// Bytes of the mask of `n` elements: one bit per block, the last block possibly short.
pub fn len_for(n: usize) -> usize {
    n.div_ceil(BLOCK).div_ceil(8)
}

/// The mask of `fine` against `base` (`width`-byte elements, as long as each other): bit `i`
/// (LSB first) is set when block `i` differs.
pub fn of(fine: &[u8], base: &[u8], width: usize) -> Vec<u8> {
    let mut mask = vec![0u8; len_for(fine.len() / width)];
    for (i, (f, b)) in fine.chunks(BLOCK * width).zip(base.chunks(BLOCK * width)).enumerate() {
        if f != b {
            mask[i / 8] |= 1 << (i % 8);
        }
    }
    mask
}

/// Checks a stored mask of `n` elements (its length, and no bit set past the last block) and
/// returns the number of elements in the blocks it sets.
pub fn kept(mask: &[u8], n: usize) -> Result<usize, String> {
    if mask.len() != len_for(n) {
        return Err(format!("block mask of {} bytes for {n} elements", mask.len()));
    }
    let blocks = n.div_ceil(BLOCK);
    if let Some(&last) = mask.last()
        && !blocks.is_multiple_of(8)
        && last >> (blocks % 8) != 0
    {
        return Err("block mask sets blocks past the chunk's end".into());
    }
    let set: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
    // The last block may be short: it counts its own elements only.
    let short = n % BLOCK;
    let last_set = blocks > 0 && is_set(mask, blocks - 1);
    Ok(set * BLOCK - if short > 0 && last_set { BLOCK - short } else { 0 })
}

fn is_set(mask: &[u8], block: usize) -> bool {
    mask.get(block / 8).is_some_and(|b| b >> (block % 8) & 1 == 1)
}

/// The blocks of `data` (`width`-byte elements) that `mask` sets, back to back.
pub fn gather(data: &[u8], mask: &[u8], width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    gather_into(data, mask, 0, width, &mut out);
    out
}

/// Appends to `out` the blocks of `data` that `mask` sets, `data` being the blocks from
/// block `first` on.
pub fn gather_into(data: &[u8], mask: &[u8], first: usize, width: usize, out: &mut Vec<u8>) {
    by_block_bytes!(BLOCK * width, |bytes| gather_sized(data, mask, first, bytes, out))
}

/// Appends to `out` the blocks of `base` (the blocks from block `first` on), those that `mask`
/// sets taken, in order, from `kept` instead; false when `kept` does not hold exactly those.
pub fn scatter_into(base: &[u8], mask: &[u8], first: usize, kept: &[u8], width: usize, out: &mut Vec<u8>) -> bool {
    by_block_bytes!(BLOCK * width, |bytes| scatter_sized(base, mask, first, kept, bytes, out))
}

/// Calls `$f` with the block length `$bytes` as a constant for the element widths there are,
/// so that each block is copied by a few vector moves rather than a call of `memcpy`
/// (a fine-tune's changed blocks alternate with unchanged ones every few blocks).
macro_rules! by_block_bytes {
    ($bytes:expr, |$b:ident| $f:expr) => {
        by_block_bytes!($bytes, |$b| $f, 16, 32, 64, 128)
    };
    ($bytes:expr, |$b:ident| $f:expr, $($n:literal),*) => {
        match $bytes {
            $($n => { let $b = $n; $f })*
            $b => $f,
        }
    };
}
use by_block_bytes;

#[inline(always)]
fn gather_sized(data: &[u8], mask: &[u8], first: usize, bytes: usize, out: &mut Vec<u8>) {
    out.reserve(data.len());
    let blocks = data.chunks_exact(bytes);
    let (tail, whole) = (blocks.remainder(), blocks.len());
    for (i, block) in blocks.enumerate() {
        if is_set(mask, first + i) {
            out.extend_from_slice(block);
        }
    }
    if !tail.is_empty() && is_set(mask, first + whole) {
        out.extend_from_slice(tail);
    }
}

#[inline(always)]
fn scatter_sized(base: &[u8], mask: &[u8], first: usize, kept: &[u8], bytes: usize, out: &mut Vec<u8>) -> bool {
    out.reserve(base.len());
    let mut from = kept;
    let blocks = base.chunks_exact(bytes);
    let (tail, whole) = (blocks.remainder(), blocks.len());
    for (i, block) in blocks.enumerate() {
        if !is_set(mask, first + i) {
            out.extend_from_slice(block);
            continue;
        }
        let Some((mine, rest)) = from.split_at_checked(bytes) else { return false };
        out.extend_from_slice(mine);
        from = rest;
    }
    if !tail.is_empty() {
        if !is_set(mask, first + whole) {
            out.extend_from_slice(tail);
        } else {
            let Some((mine, rest)) = from.split_at_checked(tail.len()) else { return false };
            out.extend_from_slice(mine);
            from = rest;
        }
    }
    from.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scatter(base: &[u8], mask: &[u8], kept: &[u8], width: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        scatter_into(base, mask, 0, kept, width, &mut out).then_some(out)
    }

    proptest! {
        #[test]
        fn gather_and_scatter_invert_and_count_what_they_keep(
            base in proptest::collection::vec(any::<u8>(), 0..2000),
            changes in proptest::collection::vec((any::<usize>(), 1u8..), 0..40),
            width_pick in 0usize..5,
            part_blocks in 1usize..5,
        ) {
            // 3: a width with no block length of its own in `by_block_bytes`.
            let width = [1, 2, 4, 8, 3][width_pick];
            let base = &base[..base.len() / width * width];
            let mut fine = base.to_vec();
            if !fine.is_empty() {
                let len = fine.len();
                changes.iter().for_each(|&(at, by)| fine[at % len] = fine[at % len].wrapping_add(by));
            }
            let n = fine.len() / width;
            let mask = of(&fine, base, width);
            let kept_fine = gather(&fine, &mask, width);
            prop_assert_eq!(kept(&mask, n), Ok(kept_fine.len() / width));
            prop_assert_eq!(scatter(base, &mask, &kept_fine, width), Some(fine.clone()));
            // Part by part, as a chain decodes, each part's kept blocks gathered and scattered.
            let (mut by_parts, mut kept_from) = (Vec::new(), 0);
            for (k, part) in base.chunks(part_blocks * BLOCK * width).enumerate() {
                let mut kept_base = Vec::new();
                gather_into(part, &mask, k * part_blocks, width, &mut kept_base);
                let mine = &kept_fine[kept_from..kept_from + kept_base.len()];
                prop_assert!(scatter_into(part, &mask, k * part_blocks, mine, width, &mut by_parts));
                kept_from += kept_base.len();
            }
            prop_assert_eq!(by_parts, fine.clone());
            // Every block left out is the base's own.
            let left_out = (0..n.div_ceil(BLOCK)).filter(|&i| !is_set(&mask, i));
            for i in left_out {
                let span = i * BLOCK * width..((i + 1) * BLOCK * width).min(fine.len());
                prop_assert_eq!(&fine[span.clone()], &base[span]);
            }
        }
    }

    #[test]
    fn hostile_masks_are_refused() {
        // 40 elements: three blocks, the last of 8.
        assert_eq!(kept(&[0b101], 40), Ok(16 + 8));
        assert!(kept(&[0b1000], 40).is_err(), "a block past the end");
        assert!(kept(&[0, 0], 40).is_err(), "a byte too many");
        assert!(kept(&[], 40).is_err(), "too short");
        assert_eq!(kept(&[], 0), Ok(0));
        assert_eq!(scatter(&[0; 40], &[0b1], &[1; 15], 1), None, "kept too short");
        assert_eq!(scatter(&[0; 40], &[0b1], &[1; 17], 1), None, "kept too long");
    }
}
