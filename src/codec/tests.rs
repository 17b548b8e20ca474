use super::*;
use proptest::prelude::*;

fn id() -> ObjectId {
    ObjectId([7; 32])
}

fn decode(stored: &[u8], dtype: DType, base: Option<&[u8]>) -> Result<Vec<u8>, CodecError> {
    ChunkView::parse(stored)?.decode(dtype, base)
}

proptest! {
    #[test]
    fn every_codec_round_trips_every_dtype(
        which in 0usize..DType::ALL.len(),
        pairs in proptest::collection::vec(any::<(u64, u64)>(), 0..300),
        codec_pick in 0usize..6,
    ) {
        let dtype = DType::ALL[which];
        let w = dtype.width();
        let fine: Vec<u8> = pairs.iter().flat_map(|p| p.0.to_le_bytes()[..w].to_vec()).collect();
        let base: Vec<u8> = pairs.iter().flat_map(|p| p.1.to_le_bytes()[..w].to_vec()).collect();
        let all = [Codec::Raw, Codec::Grouped, Codec::Xor, Codec::DiffContext, Codec::DiffLow, Codec::DiffMasked];
        let codec = all[codec_pick % all.len()];
        let stored = encode_with(codec, dtype, &fine, Some((id(), &base)), EncodeOptions::default());
        prop_assert_eq!(decode(&stored, dtype, Some(&base)).unwrap(), fine.clone());
        let chosen = encode_chunk(dtype, &fine, None, EncodeOptions::default());
        prop_assert_eq!(decode(&chosen, dtype, None).unwrap(), fine);
    }

    #[test]
    fn hostile_chunks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), which in 0usize..DType::ALL.len()) {
        let dtype = DType::ALL[which];
        let base = vec![0u8; 64];
        let _ = decode(&bytes, dtype, Some(&base));
        let _ = decode(&bytes, dtype, None);
        if let Ok(view) = ChunkView::parse(&bytes) {
            let _ = view.decode_as(dtype, Some(DType::BF16), Some(&base));
        }
    }
}

/// `bf16` elements with each `(element, by)` of `changes` added to that element's bits.
fn nudged(bf16: &[u8], changes: &[(usize, u16)]) -> Vec<u8> {
    let mut out = bf16.to_vec();
    let n = out.len() / 2;
    for &(at, by) in changes {
        let k = 2 * (at % n);
        let v = u16::from_le_bytes([out[k], out[k + 1]]).wrapping_add(by);
        out[k..k + 2].copy_from_slice(&v.to_le_bytes());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A chain of differences (a second fine-tune on a first, on an F32 base chunk or on
    /// elements, and a third on both) decodes a part at a time through every link. A link
    /// that decodes to other bytes under its own checksum makes the top fail, and is named one
    /// `InBase` down.
    #[test]
    fn a_chain_of_differences_decodes_a_part_at_a_time(
        words in proptest::collection::vec(any::<u32>(), 1..40_000),
        first in proptest::collection::vec((any::<usize>(), any::<u16>()), 0..300),
        second in proptest::collection::vec((any::<usize>(), any::<u16>()), 1..300),
        damaged_at in any::<usize>(),
    ) {
        let base: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let rounded = convert::convert(&base, DType::F32, DType::BF16).unwrap();
        let (ft1, opts) = (nudged(&rounded, &first), EncodeOptions::default());
        let ft2 = nudged(&ft1, &second);
        let diff = |fine: &[u8], on: &[u8]| encode_with(Codec::DiffContext, DType::BF16, fine, Some((id(), on)), opts);
        let (d1, d2) = (diff(&ft1, &rounded), diff(&ft2, &ft1));
        let grouped = encode_with(Codec::Grouped, DType::F32, &base, None, opts);
        let (v1, v2) = (ChunkView::parse(&d1).unwrap(), ChunkView::parse(&d2).unwrap());
        let planes = ChunkView::parse(&grouped).unwrap();
        let ft3 = nudged(&ft2, &first);
        let d3 = diff(&ft3, &ft2);
        let v3 = ChunkView::parse(&d3).unwrap();
        for bottom in [Base::GroupedF32(&planes), Base::Elements(&rounded)] {
            let chain = Base::Difference(&v1, Box::new(bottom));
            prop_assert!(chain.in_parts(DType::BF16, ft2.len()));
            prop_assert_eq!(v2.decode_on(DType::BF16, Some(chain.clone())).unwrap(), ft2.clone());
            let longer = Base::Difference(&v2, Box::new(chain));
            prop_assert_eq!(v3.decode_on(DType::BF16, Some(longer)).unwrap(), ft3.clone());
        }
        let mut other = ft1.clone();
        other[2 * (damaged_at % words.len()) + 1] ^= 0x40;
        let mut damaged = diff(&other, &rounded);
        // The checksum follows the codec byte, stream count and length.
        damaged[6..14].copy_from_slice(&d1[6..14]);
        let damaged = ChunkView::parse(&damaged).unwrap();
        let chain = Base::Difference(&damaged, Box::new(Base::GroupedF32(&planes)));
        let result = v2.decode_on(DType::BF16, Some(chain));
        prop_assert!(matches!(&result, Err(CodecError::InBase(e)) if matches!(**e, CodecError::Checksum)), "{result:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// A chain whose links keep only the rows that changed (`bitx-diff-mask`), alone or mixed
    /// with plain differences, decodes a part at a time as it does whole: the parts' kept
    /// blocks end inside the rANS decoder's groups of 64.
    #[test]
    fn a_chain_of_masked_differences_decodes_a_part_at_a_time(
        words in proptest::collection::vec(any::<u32>(), 1..60_000),
        rows in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 1..1300), 3),
        codecs in proptest::collection::vec(any::<bool>(), 3),
        seed in any::<u64>(),
    ) {
        let base: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let rounded = convert::convert(&base, DType::F32, DType::BF16).unwrap();
        let opts = EncodeOptions::default();
        let mut next = xorshift(seed | 1);
        let mut chain = vec![rounded.clone()];
        for changed in &rows {
            let previous = chain.last().map_or(&[][..], |c| &c[..]);
            let changes: Vec<(usize, u16)> = (0..words.len())
                .filter(|k| changed.get(k / 48).copied().unwrap_or(false))
                // Wide enough that the larger links' symbols need wide rANS blocks.
                .map(|k| (k, (next() % 61) as u16))
                .collect();
            chain.push(nudged(previous, &changes));
        }
        let stored: Vec<Vec<u8>> = chain
            .windows(2)
            .zip(&codecs)
            .map(|(pair, &masked)| {
                let codec = if masked { Codec::DiffMasked } else { Codec::DiffContext };
                encode_with(codec, DType::BF16, &pair[1], Some((id(), &pair[0])), opts)
            })
            .collect();
        let views: Vec<ChunkView<'_>> = stored.iter().map(|s| ChunkView::parse(s).unwrap()).collect();
        let grouped = encode_with(Codec::Grouped, DType::F32, &base, None, opts);
        let planes = ChunkView::parse(&grouped).unwrap();
        for bottom in [Base::GroupedF32(&planes), Base::Elements(&rounded)] {
            prop_assert_eq!(views[0].decode_on(DType::BF16, Some(bottom.clone())).unwrap(), chain[1].clone());
            let below = Base::Difference(&views[1], Box::new(Base::Difference(&views[0], Box::new(bottom))));
            prop_assert!(below.in_parts(DType::BF16, chain[3].len()));
            prop_assert_eq!(views[2].decode_on(DType::BF16, Some(below)).unwrap(), chain[3].clone());
        }
    }
}

/// A chain of three fine-tunes of weights over many exponents, each changing every weight by
/// a few units in the last place: their differences code under tables per exponent, so each
/// link must be decoded on the one below it, in order.
#[test]
fn a_chain_of_realistic_differences_decodes_in_order() {
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    let n = 3 * PART_ELEMENTS + 123;
    let octaves: Vec<u32> = (0..n).map(|_| (next() % 12) as u32).collect();
    let base: Vec<u8> = octaves
        .iter()
        .flat_map(|&o| (((next() % 1000) as f32 + 1000.0) * 1e-5 * (1u32 << o) as f32).to_le_bytes())
        .collect();
    let rounded = convert::convert(&base, DType::F32, DType::BF16).unwrap();
    let mut chain = vec![rounded];
    for _ in 0..3 {
        let previous = chain.last().map_or(&[][..], |c| &c[..]);
        // Small weights move by fewer units in the last place than large ones.
        let changes: Vec<(usize, u16)> =
            octaves.iter().enumerate().map(|(k, &o)| (k, (next() % u64::from(1 + 8 * o)) as u16)).collect();
        chain.push(nudged(previous, &changes));
    }
    let opts = EncodeOptions::default();
    let stored: Vec<Vec<u8>> = chain
        .windows(2)
        .map(|pair| encode_with(Codec::DiffContext, DType::BF16, &pair[1], Some((id(), &pair[0])), opts))
        .collect();
    let views: Vec<ChunkView<'_>> = stored.iter().map(|s| ChunkView::parse(s).unwrap()).collect();
    let grouped = encode_with(Codec::Grouped, DType::F32, &base, None, opts);
    let planes = ChunkView::parse(&grouped).unwrap();
    let below = Base::Difference(&views[1], Box::new(Base::Difference(&views[0], Box::new(Base::GroupedF32(&planes)))));
    assert_eq!(views[2].decode_on(DType::BF16, Some(below)).unwrap(), chain[3]);
}

proptest! {
    /// A BF16 difference decoded on the byte planes of its F32 base chunk, rounded a part at a
    /// time, is the one decoded on the whole rounded base; across parts, and on a base that is
    /// not byte-grouped. The base's checksum is checked only when the delta's fails, and then
    /// names the base.
    #[test]
    fn a_difference_decodes_on_the_planes_of_its_f32_base(
        words in proptest::collection::vec(any::<u32>(), 1..40_000),
        changes in proptest::collection::vec((any::<usize>(), 1u16..300), 0..400),
        damaged_at in any::<usize>(),
    ) {
        let base: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let rounded = convert::convert(&base, DType::F32, DType::BF16).unwrap();
        let fine = nudged(&rounded, &changes);
        let opts = EncodeOptions::default();
        let delta = encode_with(Codec::DiffContext, DType::BF16, &fine, Some((id(), &rounded)), opts);
        let delta = ChunkView::parse(&delta).unwrap();
        let on = |stored: &[u8]| delta.decode_on(DType::BF16, Some(Base::GroupedF32(&ChunkView::parse(stored).unwrap())));
        let grouped = encode_with(Codec::Grouped, DType::F32, &base, None, opts);
        prop_assert_eq!(on(&grouped).unwrap(), fine.clone());
        prop_assert_eq!(on(&encode_with(Codec::Raw, DType::F32, &base, None, opts)).unwrap(), fine.clone());
        // A wrong checksum on intact planes changes nothing decoded: the delta's checksum holds.
        let mut wrong_sum = grouped.clone();
        // The checksum follows the codec byte, stream count and length.
        wrong_sum[6] ^= 1;
        prop_assert_eq!(on(&wrong_sum).unwrap(), fine);
        // Planes of another base under this base's checksum: the delta fails, the base is named.
        let mut other = base.clone();
        other[4 * (damaged_at % words.len()) + 3] ^= 0x40;
        let mut damaged = encode_with(Codec::Grouped, DType::F32, &other, None, opts);
        damaged[6..14].copy_from_slice(&grouped[6..14]);
        prop_assert_eq!(ChunkView::parse(&damaged).unwrap().checksum(), ChunkView::parse(&grouped).unwrap().checksum());
        let result = on(&damaged);
        prop_assert!(matches!(&result, Err(CodecError::InBase(e)) if matches!(**e, CodecError::Checksum)), "{result:?}");
    }
}

proptest! {
    /// Byte-grouped F32 decoded straight to BF16 (block by block) equals decoding, then
    /// rounding; across block boundaries, and with a wrong checksum refused.
    #[test]
    fn grouped_f32_decodes_as_bf16_block_by_block(words in proptest::collection::vec(any::<u32>(), 0..10_000), extra in 0usize..3) {
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let stored = encode_with(Codec::Grouped, DType::F32, &data, None, EncodeOptions::default());
        let view = ChunkView::parse(&stored).unwrap();
        let expected = convert::convert(&data, DType::F32, DType::BF16).unwrap();
        prop_assert_eq!(view.decode_as(DType::F32, Some(DType::BF16), None).unwrap(), expected);
        prop_assert_eq!(view.decode_as(DType::F32, Some(DType::F32), None).unwrap(), data.clone());
        prop_assert_eq!(view.decode_as(DType::F32, Some(DType::F16), None).unwrap(), convert::convert(&data, DType::F32, DType::F16).unwrap());
        for flip in [extra * 7 % stored.len().max(1), stored.len() / 2, stored.len().saturating_sub(1 + extra)] {
            let mut damaged = stored.clone();
            if let Some(b) = damaged.get_mut(flip) {
                *b ^= 0x5A;
            }
            if let Ok(view) = ChunkView::parse(&damaged) {
                let _ = view.decode_as(DType::F32, Some(DType::BF16), None);
            }
        }
        let mut wrong = stored.clone();
        // The checksum follows the codec byte, stream count and length.
        wrong[6 + extra] ^= 1;
        let wrong = ChunkView::parse(&wrong).unwrap();
        prop_assert!(matches!(wrong.decode_as(DType::F32, Some(DType::BF16), None), Err(CodecError::Checksum)));
    }
}

/// A deterministic xorshift64 generator.
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// BF16 weights near 0.02 in magnitude, and a fine-tune that nudges them by a few ULPs.
fn bf16_pair(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    let (mut base, mut fine) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let r = next();
        let v = ((r % 2000) as f32 - 1000.0) * 2e-5;
        let b = half::bf16::from_f32(v);
        let f = half::bf16::from_bits(b.to_bits().wrapping_add(((r >> 32) % 5) as u16).wrapping_sub(2));
        base.extend_from_slice(&b.to_le_bytes());
        fine.extend_from_slice(&f.to_le_bytes());
    }
    (fine, base)
}

#[test]
fn delta_beats_standalone_on_a_small_update() {
    let (fine, base) = bf16_pair(100_000);
    let opts = EncodeOptions::default();
    let delta = encode_chunk(DType::BF16, &fine, Some((id(), &base)), opts);
    let alone = encode_chunk(DType::BF16, &fine, None, opts);
    assert!(delta.len() * 2 < alone.len(), "delta {} standalone {}", delta.len(), alone.len());
    assert_eq!(ChunkView::parse(&delta).unwrap().codec, Codec::DiffContext);
    assert_eq!(decode(&delta, DType::BF16, Some(&base)).unwrap(), fine);
}

#[test]
fn unrelated_base_falls_back_to_standalone() {
    let (fine, _) = bf16_pair(50_000);
    let noise: Vec<u8> = (0..fine.len()).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let stored = encode_chunk(DType::BF16, &fine, Some((id(), &noise)), EncodeOptions::default());
    assert!(!ChunkView::parse(&stored).unwrap().codec.is_delta());
}

#[test]
fn incompressible_data_is_stored_raw() {
    let noise: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let stored = encode_chunk(DType::U8, &noise, None, EncodeOptions::default());
    assert!(stored.len() <= noise.len() + RAW_OVERHEAD);
    assert_eq!(decode(&stored, DType::U8, None).unwrap(), noise);
}

#[test]
fn flipped_bits_are_detected() {
    let (fine, base) = bf16_pair(4096);
    let stored = encode_chunk(DType::BF16, &fine, Some((id(), &base)), EncodeOptions::default());
    for pos in (14 + 32..stored.len()).step_by(97) {
        let mut bad = stored.clone();
        bad[pos] ^= 0x10;
        assert!(decode(&bad, DType::BF16, Some(&base)).is_err(), "flip at {pos} went unnoticed");
    }
}

#[test]
fn delta_chunk_without_base_is_an_error() {
    let (fine, base) = bf16_pair(100);
    let stored = encode_with(Codec::Xor, DType::BF16, &fine, Some((id(), &base)), EncodeOptions::default());
    assert!(decode(&stored, DType::BF16, None).is_err());
    assert!(decode(&stored, DType::BF16, Some(&base[2..])).is_err());
}

/// Decode speed of a BF16 fine-tune chunk, per stage, for measuring decoder changes.
#[test]
#[ignore = "benchmark; run with --release --nocapture"]
fn delta_decode_throughput() {
    let (fine, base) = bf16_pair(1 << 20);
    let mut next = xorshift(7);
    // As in the large ft-1: about 8% of elements move by more than 3 ULPs (they carry raw bits).
    let fine: Vec<u8> = fine
        .chunks_exact(2)
        .flat_map(|c| {
            let r = next();
            let v = u16::from_le_bytes([c[0], c[1]]);
            let v = if r % 100 < 8 { v.wrapping_add((r >> 32) as u16 % 40) } else { v };
            v.to_le_bytes()
        })
        .collect();
    let stored = encode_with(Codec::DiffContext, DType::BF16, &fine, Some((id(), &base)), EncodeOptions::default());
    let view = ChunkView::parse(&stored).unwrap();
    let rounds = 50;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        assert_eq!(view.decode(DType::BF16, Some(&base)).unwrap().len(), fine.len());
    }
    let whole = t.elapsed().as_secs_f64();
    let coded = view.stream(0, usize::MAX).unwrap();
    let raw_bits = view.stream(1, usize::MAX).unwrap();
    let contexts = delta::contexts(DType::BF16, &base);
    let mut symbols = vec![0u8; fine.len() / 2];
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        rans::decode(&coded, &contexts, &mut symbols).unwrap();
    }
    let rans = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        delta::unsymbolise_diff(DType::BF16, &symbols, &raw_bits, &base).unwrap();
    }
    let unsym = t.elapsed().as_secs_f64();
    let mb = (fine.len() * rounds) as f64 / 1e6;
    println!(
        "decode {:.0} MB/s; rANS {:.0} MB/s; unsymbolise {:.0} MB/s ({} of {} bytes raw bits)",
        mb / whole,
        mb / rans,
        mb / unsym,
        raw_bits.len(),
        fine.len()
    );
}

/// An FP32 fine-tune as decoupled weight decay leaves it: every step multiplies each weight
/// by `1 − lr·wd` in FP32, which rounds to a whole number of ULPs that depends on the weight's
/// mantissa, so weights that got no gradient (most embedding rows) end up moved by one of a few
/// amounts; one row in ten also gets updates of its own.
fn decayed_f32_pair(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    let (mut base, mut fine) = (Vec::new(), Vec::new());
    for i in 0..n {
        let r = next();
        let b = ((r % 20_001) as f32 - 10_000.0) * 4e-6;
        let trained = (i / 384) % 10 == 0;
        let f = (0..60).fold(b, |w, step| {
            let update = if trained { ((r >> (step % 40)) % 7) as f32 * 1e-7 - 3e-7 } else { 0.0 };
            w * (1.0 - 8e-7) + update
        });
        base.extend_from_slice(&b.to_le_bytes());
        fine.extend_from_slice(&f.to_le_bytes());
    }
    (fine, base)
}

#[test]
fn decay_only_fp32_rows_are_coded_by_their_low_bytes() {
    let (fine, base) = decayed_f32_pair(1 << 16);
    assert_trial_picks(Codec::DiffLow, DType::F32, &fine, &base);
}

/// The codecs' trial picks `want` for `fine` on `base`, which stores it in under 80% of what
/// codec 3 needs and decodes it back.
fn assert_trial_picks(want: Codec, dtype: DType, fine: &[u8], base: &[u8]) {
    let opts = EncodeOptions::default();
    let plain = encode_with(Codec::DiffContext, dtype, fine, Some((id(), base)), opts);
    let chosen = encode_chunk(dtype, fine, Some((id(), base)), opts);
    assert_eq!(ChunkView::parse(&chosen).unwrap().codec, want);
    assert!(chosen.len() * 10 < plain.len() * 8, "{} {} vs diff-ctx {}", want.name(), chosen.len(), plain.len());
    assert_eq!(decode(&chosen, dtype, Some(base)).unwrap(), fine);
}

/// F32 weights spread like a trained layer's (roughly normal, scale 0.02): `rows` distinct
/// rows of 256, repeated to `n` elements (all distinct when `rows` is large enough).
fn weights(n: usize, rows: usize) -> Vec<u8> {
    let mut next = xorshift(0xD1B5_4A32_D192_ED03);
    let mut weight = || (0..4).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).sum::<f32>() * 0.02;
    let distinct: Vec<u8> = (0..rows.min(n.div_ceil(256)) * 256).flat_map(|_| weight().to_le_bytes()).collect();
    distinct.iter().copied().cycle().take(4 * n).collect()
}

/// Stored bytes of the exponent plane of `words` coded as float planes are, and at level 1.
fn exponent_plane_sizes(words: &[u8]) -> (usize, usize) {
    let exponents = Grouping::of(DType::F32).split(words).swap_remove(0);
    (code_stream(exponents.clone(), Zstd::Literals(1)).1.len(), code_stream(exponents, Zstd::Level(1)).1.len())
}

#[test]
fn float_planes_are_left_to_the_literal_coder_but_long_repeats_still_match() {
    let (literals, level1) = exponent_plane_sizes(&weights(1 << 20, usize::MAX));
    assert!(literals * 100 < level1 * 95, "distinct weights: literals {literals} vs level 1 {level1}");
    for rows in [8, 64] {
        let (literals, level1) = exponent_plane_sizes(&weights(1 << 20, rows));
        assert!(literals <= level1 + level1 / 10, "{rows} repeated rows: literals {literals} vs level 1 {level1}");
    }
    // Small planes are coded both ways, so never larger than at the level.
    for n in [64, 1000, 20_000] {
        let (literals, level1) = exponent_plane_sizes(&weights(n, usize::MAX));
        assert!(literals <= level1, "{n} weights: literals {literals} vs level 1 {level1}");
    }
    let (coding, zeros) = code_stream(vec![0; 1 << 20], Zstd::Literals(1));
    assert!(coding == STREAM_ZSTD && zeros.len() < 1024, "{} bytes", zeros.len());
}

/// `base` (random elements of `dtype`, `n` of them) and a fine-tune of it that leaves whole
/// rows of 48 elements as they were, except rows picked by `changed`, whose elements move by a
/// few ULPs (or, for `wild`, to anything).
fn row_sparse_pair(dtype: DType, n: usize, changed: &[bool], wild: bool, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut next = xorshift(seed | 1);
    let w = dtype.width();
    let base: Vec<u8> = (0..n).flat_map(|_| next().to_le_bytes()[..w].to_vec()).collect();
    let mut fine = base.clone();
    for (i, e) in fine.chunks_exact_mut(w).enumerate() {
        if changed.get(i / 48).copied().unwrap_or(false) {
            let r = next();
            let moved = if wild {
                r
            } else {
                u64::from_le_bytes(std::array::from_fn(|k| e.get(k).copied().unwrap_or(0))).wrapping_add(r % 5)
            };
            e.copy_from_slice(&moved.to_le_bytes()[..w]);
        }
    }
    (fine, base)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The masked difference round-trips whatever rows changed, for every dtype and length
    /// (blocks cut across rows and the chunk's end), and none or all of them.
    #[test]
    fn the_masked_difference_round_trips_rows_left_as_they_were(
        which in 0usize..DType::ALL.len(),
        n in 0usize..3000,
        changed in proptest::collection::vec(any::<bool>(), 0..70),
        wild in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dtype = DType::ALL[which];
        let (fine, base) = row_sparse_pair(dtype, n, &changed, wild, seed);
        let stored = encode_with(Codec::DiffMasked, dtype, &fine, Some((id(), &base)), EncodeOptions::default());
        prop_assert_eq!(decode(&stored, dtype, Some(&base)).unwrap(), fine.clone());
        let chosen = encode_chunk(dtype, &fine, Some((id(), &base)), EncodeOptions::default());
        prop_assert_eq!(decode(&chosen, dtype, Some(&base)).unwrap(), fine);
    }
}

#[test]
fn rows_left_as_they_were_cost_a_bit_per_block_not_per_element() {
    // A quarter of the rows trained, as a word embedding whose data had a quarter of the tokens.
    let changed: Vec<bool> = (0..4096).map(|r| r % 4 == 1).collect();
    let (fine, base) = row_sparse_pair(DType::BF16, 48 * 4096, &changed, false, 3);
    assert_trial_picks(Codec::DiffMasked, DType::BF16, &fine, &base);
    // Where every row changed, the mask would only cost: the plain difference is kept.
    let (fine, base) = row_sparse_pair(DType::BF16, 48 * 4096, &[true; 4096], false, 4);
    let chosen = encode_chunk(DType::BF16, &fine, Some((id(), &base)), EncodeOptions::default());
    assert_eq!(ChunkView::parse(&chosen).unwrap().codec, Codec::DiffContext);
}

#[test]
fn a_damaged_mask_is_refused_never_decoded_to_other_bytes() {
    let changed: Vec<bool> = (0..64).map(|r| r % 3 == 0).collect();
    let (fine, base) = row_sparse_pair(DType::BF16, 48 * 64, &changed, false, 5);
    let stored = encode_with(Codec::DiffMasked, DType::BF16, &fine, Some((id(), &base)), EncodeOptions::default());
    let view = ChunkView::parse(&stored).unwrap();
    let (coding, mask) = view.streams[2];
    assert_eq!(coding, STREAM_RAW, "a mask this small is stored raw");
    let at = stored.len() - mask.len();
    for bit in 0..8 * mask.len() {
        let mut bad = stored.clone();
        bad[at + bit / 8] ^= 1 << (bit % 8);
        assert!(decode(&bad, DType::BF16, Some(&base)).is_err(), "mask bit {bit} flipped was accepted");
    }
    // A mask a byte short or long.
    for cut in [at + mask.len() - 1, at + mask.len() + 1] {
        let mut bad = stored[..cut.min(stored.len())].to_vec();
        bad.resize(cut, 0);
        let stream_len_at = stored.len() - mask.len() - view.streams[1].1.len() - view.streams[0].1.len() - 5 + 1;
        bad[stream_len_at..stream_len_at + 4].copy_from_slice(&((cut - at) as u32).to_le_bytes());
        assert!(decode(&bad, DType::BF16, Some(&base)).is_err(), "a mask of {} bytes was accepted", cut - at);
    }
}

/// A weight matrix of `rows × cols` and the same matrix with a merged rank-`rank` adapter
/// (`W + B·A` in f32, as a LoRA merge computes it), both in `dtype` (rounded to nearest even).
fn lora_pair(dtype: DType, rows: usize, cols: usize, rank: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut next = xorshift(seed | 1);
    let mut normal = || (0..4).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).sum::<f32>();
    let w: Vec<f32> = (0..rows * cols).map(|_| normal() * 0.04).collect();
    let a: Vec<f32> = (0..rank * cols).map(|_| normal() * 0.05).collect();
    let b: Vec<f32> = (0..rows * rank).map(|_| normal() * 0.02).collect();
    let merged: Vec<f32> = (0..rows * cols)
        .map(|e| w[e] + (0..rank).map(|k| b[(e / cols) * rank + k] * a[k * cols + e % cols]).sum::<f32>())
        .collect();
    let bytes = |v: &[f32]| -> Vec<u8> {
        let f32s: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        convert::convert(&f32s, DType::F32, dtype).unwrap()
    };
    (bytes(&merged), bytes(&w))
}

#[test]
fn a_merged_low_rank_adapter_is_stored_as_its_factors() {
    for (dtype, at_most) in [(DType::F32, 0.15), (DType::BF16, 0.7), (DType::F16, 0.6)] {
        let (cols, w) = (192, dtype.width());
        let (fine, base) = lora_pair(dtype, 300, cols, 4, 0xA11CE);
        // A chunk that starts mid-row and ends mid-row, as chunks of large matrices do.
        let (fine, base) = (&fine[50 * w..fine.len() - 70 * w], &base[50 * w..base.len() - 70 * w]);
        let geometry = lowrank::Geometry { cols, col0: 50 };
        let opts = EncodeOptions::default();
        let plain = encode_chunk(dtype, fine, Some((id(), base)), opts);
        let chosen = encode_matrix_chunk(dtype, fine, Some((id(), base)), geometry, opts);
        assert_eq!(ChunkView::parse(&chosen).unwrap().codec, Codec::LowRank, "{dtype}");
        let ratio = chosen.len() as f64 / plain.len() as f64;
        assert!(ratio < at_most, "{dtype}: {} against {} ({ratio:.2})", chosen.len(), plain.len());
        assert_eq!(decode(&chosen, dtype, Some(base)).unwrap(), fine, "{dtype}");
    }
}

#[test]
fn a_difference_that_is_not_low_rank_is_not_factored() {
    let (fine, base) = decayed_f32_pair(1 << 16);
    let geometry = lowrank::Geometry { cols: 256, col0: 0 };
    assert!(lowrank::fit(DType::F32, &fine, &base, geometry).is_none());
    let chosen = encode_matrix_chunk(DType::F32, &fine, Some((id(), &base)), geometry, EncodeOptions::default());
    assert_ne!(ChunkView::parse(&chosen).unwrap().codec, Codec::LowRank);
}

/// Factor streams: `cols`, `col0`, `rank` and the floats, as `docs/FORMAT.md` lays them out.
fn factor_stream(cols: u32, col0: u32, rank: u8, floats: &[f32]) -> Vec<u8> {
    let mut s = [cols.to_le_bytes(), col0.to_le_bytes()].concat();
    s.push(rank);
    s.extend(floats.iter().flat_map(|x| x.to_le_bytes()));
    s
}

/// The prediction is exactly the documented formula: base plus the f32 sum over `k` in order,
/// no fused multiply-add, rounded to the dtype; the base itself where the sum is not finite.
#[test]
fn the_prediction_is_the_documented_formula() {
    let (cols, col0, rank, n) = (50usize, 3usize, 3usize, 900usize);
    let rows = (col0 + n).div_ceil(cols);
    let mut next = xorshift(0xFAC7);
    let mut float = || ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
    let mut floats: Vec<f32> = (0..(rows + cols) * rank).map(|_| float()).collect();
    floats[0] = f32::INFINITY;
    let factors = lowrank::Factors::parse(&factor_stream(50, 3, 3, &floats), n).unwrap();
    let (u, v) = floats.split_at(rows * rank);
    let base: Vec<f32> = (0..n).map(|_| float()).collect();
    let base_bytes: Vec<u8> = base.iter().flat_map(|x| x.to_le_bytes()).collect();
    let got = factors.predict(DType::F32, &base_bytes);
    for (e, b) in base.iter().enumerate() {
        let (row, col) = ((col0 + e) / cols, (col0 + e) % cols);
        let mut acc = 0f32;
        for k in 0..rank {
            acc += u[row * rank + k] * v[k * cols + col];
        }
        let want = if (b + acc).is_finite() { b + acc } else { *b };
        assert_eq!(&got[4 * e..4 * e + 4], &want.to_le_bytes(), "element {e}");
    }
    // Row 0's first factor is infinite: its elements fall back to the base.
    assert_eq!(&got[..8], &base_bytes[..8]);
}

#[test]
fn damaged_factor_streams_are_refused() {
    let n = 10;
    let good = factor_stream(4, 1, 2, &[0.5; (3 + 4) * 2]);
    assert!(lowrank::Factors::parse(&good, n).is_ok());
    for bad in [
        factor_stream(0, 0, 2, &[0.5; 14]),
        factor_stream(4, 4, 2, &[0.5; 14]),
        factor_stream(4, 1, 0, &[]),
        factor_stream(4, 1, 2, &[0.5; 13]),
        factor_stream(4, 1, 2, &[0.5; 15]),
        factor_stream(u32::MAX, u32::MAX - 1, 255, &[]),
        good[..8].to_vec(),
    ] {
        assert!(lowrank::Factors::parse(&bad, n).is_err(), "{bad:?}");
    }
    assert!(lowrank::Factors::parse(&good, usize::MAX).is_err());
}

#[test]
fn a_low_rank_chunk_of_integers_is_refused() {
    let (fine, base) = lora_pair(DType::F32, 64, 32, 2, 3);
    let geometry = lowrank::Geometry { cols: 32, col0: 0 };
    let factors = lowrank::fit(DType::F32, &fine, &base, geometry).unwrap();
    let stored = encode_low_rank(DType::F32, &fine, (id(), &base), &factors, EncodeOptions::default());
    assert_eq!(decode(&stored, DType::F32, Some(&base)).unwrap(), fine);
    assert!(matches!(decode(&stored, DType::I32, Some(&base)), Err(CodecError::Corrupt(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the factors (garbage, NaN and infinity included), a low-rank chunk decodes to
    /// exactly the bytes encoded: the prediction only decides the size.
    #[test]
    fn low_rank_chunks_round_trip_whatever_the_factors(
        which in 0usize..3,
        words in proptest::collection::vec(any::<(u32, u32)>(), 1..400),
        cols in 1usize..40,
        col0_pick in any::<usize>(),
        rank in 1usize..5,
        factor_bits in proptest::collection::vec(any::<u32>(), 0..64),
    ) {
        let dtype = [DType::F32, DType::BF16, DType::F16][which];
        let w = dtype.width();
        let fine: Vec<u8> = words.iter().flat_map(|p| p.0.to_le_bytes()[..w].to_vec()).collect();
        let base: Vec<u8> = words.iter().flat_map(|p| p.1.to_le_bytes()[..w].to_vec()).collect();
        let col0 = col0_pick % cols;
        let rows = (col0 + words.len()).div_ceil(cols);
        let floats: Vec<f32> = (0..(rows + cols) * rank)
            .map(|i| f32::from_bits(factor_bits.get(i % factor_bits.len().max(1)).copied().unwrap_or(0) ^ i as u32))
            .collect();
        let factors = lowrank::Factors::parse(&factor_stream(cols as u32, col0 as u32, rank as u8, &floats), words.len()).unwrap();
        let stored = encode_low_rank(dtype, &fine, (id(), &base), &factors, EncodeOptions::default());
        prop_assert_eq!(decode(&stored, dtype, Some(&base)).unwrap(), fine);
    }

    /// Low-rank adapters of any shape and rank, merged into any of the three float dtypes,
    /// round trip through the chosen encoding.
    #[test]
    fn merged_adapters_round_trip(which in 0usize..3, rows in 1usize..120, cols in 16usize..80, rank in 1usize..9, seed in any::<u64>()) {
        let dtype = [DType::F32, DType::BF16, DType::F16][which];
        let (fine, base) = lora_pair(dtype, rows, cols, rank, seed);
        let stored = encode_matrix_chunk(dtype, &fine, Some((id(), &base)), lowrank::Geometry { cols, col0: 0 }, EncodeOptions::default());
        prop_assert_eq!(decode(&stored, dtype, Some(&base)).unwrap(), fine);
    }
}
