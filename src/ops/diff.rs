//! `mlv diff`: per file, which tensors were added, removed or changed, and by how much;
//! unified diffs for text files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use super::status::{ChangeKind, tracked_files};
use super::tensors::{NamedTensor, named_tensors, pair_by_name};
use crate::codec::convert;
use crate::error::Result;
use crate::object::{DType, EntryKind, ObjectId};
use crate::repo::Repository;
use crate::worktree::{self, NoBases};

/// Elements compared per read, to keep memory flat.
const WINDOW_ELEMS: u64 = 1 << 20;
/// Text files larger than this are not diffed line by line.
const MAX_TEXT_DIFF: u64 = 1 << 20;

/// One side of a diff.
pub enum Side {
    /// A commit.
    Commit(ObjectId),
    /// The work tree.
    WorkTree,
    /// Nothing (the parent of a root commit).
    Empty,
}

/// How one tensor changed.
///
/// When the dtypes differ (an F32 base, a BF16 fine-tune), the old side is first rounded to
/// the new dtype as the fine-tune's training would have stored it: an element counts as
/// changed only if it differs from that rounded value, and elements that differ only by the
/// rounding are counted apart.
#[derive(Debug, Serialize)]
pub struct TensorChange {
    /// Name.
    pub name: String,
    /// Dtype of the old side.
    pub old_dtype: String,
    /// Dtype of the new side.
    pub dtype: String,
    /// Shape of the old and new side.
    pub shape: (Vec<u64>, Vec<u64>),
    /// Elements compared.
    pub elements: u64,
    /// Elements that differ (from the old side rounded to the new dtype, across dtypes).
    pub changed: u64,
    /// Elements whose value differs only by the rounding to the new dtype (None: same dtype,
    /// or dtypes that do not convert).
    pub rounding_only: Option<u64>,
    /// Largest absolute difference of a changed element (None: not a numeric dtype).
    pub max_abs_diff: Option<f64>,
    /// Absolute difference summed over the changed elements, divided by all elements
    /// compared (None: not a numeric dtype).
    pub mean_abs_diff: Option<f64>,
    /// Changed elements with the same sign and exponent whose mantissa differs only in its
    /// lower half: the size of a typical fine-tuning step (None: not a float dtype).
    pub low_mantissa_only: Option<u64>,
}

impl TensorChange {
    /// True when some element's value changed; false when only the dtype (by rounding) or
    /// the shape did.
    pub fn values_changed(&self) -> bool {
        self.changed > 0
    }
}

/// Tensor-level differences of one safetensors file.
#[derive(Debug, Serialize, Default)]
pub struct TensorsDiff {
    /// Names only in the new side.
    pub added: Vec<String>,
    /// Names only in the old side.
    pub removed: Vec<String>,
    /// Same name, different content (bytes, dtype or shape): the tensors `status` counts as
    /// changed. Some may have no element changed beyond the rounding to a new dtype.
    pub changed: Vec<TensorChange>,
    /// Same name and content.
    pub unchanged: usize,
}

/// One changed file.
#[derive(Debug, Serialize)]
pub struct FileDiff {
    /// Path.
    pub path: String,
    /// Added, modified or deleted.
    pub change: ChangeKind,
    /// For safetensors files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<TensorsDiff>,
    /// Unified diff for text files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Where a tensor's bytes are.
#[derive(Clone)]
enum Bytes {
    Stored(ObjectId),
    File(PathBuf, u64),
}

struct SideTensor {
    t: NamedTensor,
    bytes: Bytes,
}

/// A file of one side.
#[derive(Clone)]
struct SideFile {
    kind: EntryKind,
    id: ObjectId,
    path: Option<PathBuf>,
}

fn side_files(repo: &Repository, side: &Side) -> Result<Vec<(String, SideFile)>> {
    match side {
        Side::Commit(c) => Ok(repo
            .commit_files(Some(*c))?
            .into_iter()
            .map(|(p, e)| (p, SideFile { kind: e.kind, id: e.id, path: None }))
            .collect()),
        Side::WorkTree => {
            let index = repo.index()?;
            let mut out = Vec::new();
            for f in tracked_files(repo, &index)? {
                let Some(entry) = index.entries.get(&f.rel) else {
                    continue;
                };
                let id = if index.is_stat_clean(&f.rel, &f.stat) {
                    entry.id
                } else {
                    worktree::ingest(&f.abs, &f.rel, None, &mut NoBases)?.id
                };
                out.push((f.rel.clone(), SideFile { kind: entry.kind, id, path: Some(f.abs) }));
            }
            Ok(out)
        }
        Side::Empty => Ok(Vec::new()),
    }
}

/// Compares two sides.
pub fn diff(repo: &Repository, old: &Side, new: &Side) -> Result<Vec<FileDiff>> {
    let old: std::collections::BTreeMap<String, SideFile> = side_files(repo, old)?.into_iter().collect();
    let new: std::collections::BTreeMap<String, SideFile> = side_files(repo, new)?.into_iter().collect();
    let mut out = Vec::new();
    let paths: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for path in paths {
        let (a, b) = (old.get(path), new.get(path));
        let change = match (a, b) {
            (Some(x), Some(y)) if x.id == y.id => continue,
            (Some(_), Some(_)) => ChangeKind::Modified,
            (None, _) => ChangeKind::New,
            (_, None) => ChangeKind::Deleted,
        };
        let is_tensors = [a, b].iter().flatten().all(|f| f.kind == EntryKind::TensorFile);
        let (tensors, text) =
            if is_tensors { (Some(tensor_diff(repo, a, b)?), None) } else { (None, text_diff(repo, path, a, b)?) };
        out.push(FileDiff { path: path.clone(), change, tensors, text });
    }
    Ok(out)
}

fn tensors_of(repo: &Repository, f: Option<&SideFile>) -> Result<Vec<SideTensor>> {
    let Some(f) = f else { return Ok(Vec::new()) };
    match &f.path {
        None => Ok(named_tensors(&repo.odb.tensor_file(&f.id)?)
            .into_iter()
            .map(|t| SideTensor { bytes: Bytes::Stored(t.id), t })
            .collect()),
        Some(path) => {
            let file = File::open(path).map_err(|e| crate::fsutil::with_path(path, e))?;
            let len = file.metadata()?.len();
            let layout = crate::safetensors::read_layout(&file, len)
                .map_err(|e| crate::fsutil::with_path(path, std::io::Error::other(e)))?;
            let ingested = worktree::ingest(path, "x.safetensors", None, &mut NoBases)?;
            Ok(layout
                .tensors()
                .zip(ingested.tensors)
                .map(|(t, o)| SideTensor {
                    t: NamedTensor { name: t.name.clone(), id: o.id, dtype: t.dtype, shape: t.shape.clone() },
                    bytes: Bytes::File(path.clone(), t.start),
                })
                .collect())
        }
    }
}

fn tensor_diff(repo: &Repository, a: Option<&SideFile>, b: Option<&SideFile>) -> Result<TensorsDiff> {
    let (old, new) = (tensors_of(repo, a)?, tensors_of(repo, b)?);
    let p = pair_by_name(&old, &new, |t| (t.t.name.as_str(), t.t.id));
    let names = |ts: &[&SideTensor]| ts.iter().map(|t| t.t.name.clone()).collect();
    Ok(TensorsDiff {
        added: names(&p.added),
        removed: names(&p.removed),
        changed: p.changed.par_iter().map(|(o, n)| compare(repo, o, n)).collect::<Result<_>>()?,
        unchanged: p.unchanged,
    })
}

fn read(repo: &Repository, t: &SideTensor, start: u64, end: u64) -> Result<Vec<u8>> {
    match &t.bytes {
        Bytes::Stored(id) => Ok(repo.odb.read_range(id, &repo.odb.header(id)?, start, end)?),
        Bytes::File(path, offset) => {
            let file = File::open(path)?;
            let mut buf = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut buf, offset + start)?;
            Ok(buf)
        }
    }
}

/// Running totals of one tensor comparison.
#[derive(Default)]
struct Tally {
    changed: u64,
    rounding_only: u64,
    low_mantissa_only: u64,
    max_abs_diff: f64,
    sum_abs_diff: f64,
}

/// The dtypes of a comparison, and whether the old side is rounded to the new dtype first.
#[derive(Clone, Copy)]
struct Dtypes {
    old: DType,
    new: DType,
    rounds: bool,
}

impl Tally {
    /// Adds one window: `old` elements, the same `rounded` to the new dtype (when the dtypes
    /// differ and convert), and `new` elements.
    fn add(&mut self, d: Dtypes, old: &[u8], rounded: Option<&[u8]>, new: &[u8]) {
        // What the new elements are compared with: the old ones, as the new dtype holds them.
        match rounded.or((d.old == d.new).then_some(old)) {
            Some(reference) => match d.new.width() {
                1 => self.add_words::<1>(d, old, rounded.is_some(), reference, new),
                2 => self.add_words::<2>(d, old, rounded.is_some(), reference, new),
                4 => self.add_words::<4>(d, old, rounded.is_some(), reference, new),
                _ => self.add_words::<8>(d, old, rounded.is_some(), reference, new),
            },
            None => self.add_values(d, old, new),
        }
    }

    /// [`Tally::add`] where `reference` holds the old elements in the new dtype, `W` bytes
    /// each (`rounded` from `old`, or `old` itself): elements are compared bit for bit.
    fn add_words<const W: usize>(&mut self, d: Dtypes, old: &[u8], rounded: bool, reference: &[u8], new: &[u8]) {
        let (old_value, new_value) = (value_of(d.old), value_of(d.new));
        let ow = d.old.width();
        let low_half = d.new.float_layout().map(|l| l.mantissa.div_ceil(2));
        let pairs = reference.as_chunks::<W>().0.iter().zip(new.as_chunks::<W>().0);
        for (i, (r, y)) in pairs.enumerate() {
            let (r, y) = (word(r), word(y));
            if r == y {
                if rounded {
                    let x = old.get(i * ow..(i + 1) * ow).map_or(0, word);
                    self.rounding_only += u64::from(old_value(x).to_bits() != new_value(y).to_bits());
                }
                continue;
            }
            self.changed += 1;
            self.add_delta((new_value(r) - new_value(y)).abs());
            // Same sign and exponent, mantissas differing only in their lower half.
            if low_half.is_some_and(|h| (r ^ y) >> h == 0) {
                self.low_mantissa_only += 1;
            }
        }
    }

    /// [`Tally::add`] for dtypes that do not convert into each other: elements are compared by
    /// value.
    fn add_values(&mut self, d: Dtypes, old: &[u8], new: &[u8]) {
        let (old_value, new_value) = (value_of(d.old), value_of(d.new));
        for (x, y) in old.chunks_exact(d.old.width()).zip(new.chunks_exact(d.new.width())) {
            let (x, y) = (old_value(word(x)), new_value(word(y)));
            if x.to_bits() != y.to_bits() {
                self.changed += 1;
                self.add_delta((x - y).abs());
            }
        }
    }

    fn add_delta(&mut self, delta: f64) {
        if delta.is_finite() {
            self.max_abs_diff = self.max_abs_diff.max(delta);
            self.sum_abs_diff += delta;
        }
    }

    /// The totals of two windows.
    fn merge(self, other: Tally) -> Tally {
        Tally {
            changed: self.changed + other.changed,
            rounding_only: self.rounding_only + other.rounding_only,
            low_mantissa_only: self.low_mantissa_only + other.low_mantissa_only,
            max_abs_diff: self.max_abs_diff.max(other.max_abs_diff),
            sum_abs_diff: self.sum_abs_diff + other.sum_abs_diff,
        }
    }

    fn into_change(self, o: &NamedTensor, n: &NamedTensor, d: Dtypes, elements: u64) -> TensorChange {
        let numeric = has_value(d.old) && has_value(d.new) && elements > 0;
        let bitwise = d.old == d.new || d.rounds;
        TensorChange {
            name: n.name.clone(),
            old_dtype: d.old.to_string(),
            dtype: d.new.to_string(),
            shape: (o.shape.clone(), n.shape.clone()),
            elements,
            changed: self.changed,
            rounding_only: d.rounds.then_some(self.rounding_only),
            max_abs_diff: numeric.then_some(self.max_abs_diff),
            mean_abs_diff: numeric.then(|| self.sum_abs_diff / elements as f64),
            low_mantissa_only: (bitwise && d.new.float_layout().is_some()).then_some(self.low_mantissa_only),
        }
    }
}

/// Compares two tensors a window at a time, the windows on all cores.
fn compare(repo: &Repository, o: &SideTensor, n: &SideTensor) -> Result<TensorChange> {
    let (from, to) = (o.t.dtype, n.t.dtype);
    let d = Dtypes { old: from, new: to, rounds: from != to && convert::can_convert(from, to) };
    let (ow, nw) = (from.width() as u64, to.width() as u64);
    let elements = (byte_len(&o.t) / ow).min(byte_len(&n.t) / nw);
    let windows: Vec<u64> = (0..elements).step_by(WINDOW_ELEMS as usize).collect();
    let tallies = windows
        .par_iter()
        .map(|&pos| {
            let end = (pos + WINDOW_ELEMS).min(elements);
            let a = read(repo, o, pos * ow, end * ow)?;
            let b = read(repo, n, pos * nw, end * nw)?;
            let rounded = if d.rounds { convert::convert(&a, from, to) } else { None };
            let mut tally = Tally::default();
            tally.add(d, &a, rounded.as_deref(), &b);
            Ok(tally)
        })
        .collect::<Result<Vec<Tally>>>()?;
    let tally = tallies.into_iter().fold(Tally::default(), Tally::merge);
    Ok(tally.into_change(&o.t, &n.t, d, elements))
}

fn byte_len(t: &NamedTensor) -> u64 {
    t.dtype.byte_len(t.shape.iter().product()).unwrap_or(0)
}

fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
    u64::from_le_bytes(w)
}

/// True for the dtypes [`value`] gives a number for.
fn has_value(dtype: DType) -> bool {
    !value(dtype, &[0; 8]).is_nan()
}

/// An element's numeric value (NaN for types without a simple one).
pub fn value(dtype: DType, b: &[u8]) -> f64 {
    value_of(dtype)(word(b))
}

/// How an element's bits (little-endian, in the low bytes) give its value in `dtype`.
fn value_of(dtype: DType) -> fn(u64) -> f64 {
    match dtype {
        DType::F64 => f64::from_bits,
        DType::F32 => |w| f32::from_bits(w as u32) as f64,
        DType::F16 => |w| half::f16::from_bits(w as u16).to_f64(),
        DType::BF16 => |w| half::bf16::from_bits(w as u16).to_f64(),
        DType::F8_E4M3 => |w| small_float(w as u8, 4, 3, 7),
        DType::F8_E5M2 => |w| small_float(w as u8, 5, 2, 15),
        DType::I8 => |w| w as u8 as i8 as f64,
        DType::I16 => |w| w as u16 as i16 as f64,
        DType::I32 => |w| w as u32 as i32 as f64,
        DType::I64 => |w| w as i64 as f64,
        DType::U8 | DType::BOOL | DType::U16 | DType::U32 | DType::U64 => |w| w as f64,
        _ => |_| f64::NAN,
    }
}

/// Decodes a tiny IEEE-like float (FP8), ignoring NaN/inf conventions.
fn small_float(v: u8, e_bits: u32, m_bits: u32, bias: i32) -> f64 {
    let sign = if v >> 7 == 1 { -1.0 } else { 1.0 };
    let e = ((v >> m_bits) & ((1 << e_bits) - 1) as u8) as i32;
    let m = (v & ((1 << m_bits) - 1) as u8) as f64 / (1u32 << m_bits) as f64;
    if e == 0 { sign * m * 2f64.powi(1 - bias) } else { sign * (1.0 + m) * 2f64.powi(e - bias) }
}

fn text_of(repo: &Repository, f: Option<&SideFile>) -> Result<Option<String>> {
    let Some(f) = f else { return Ok(Some(String::new())) };
    if f.kind == EntryKind::ChunkedFile {
        // Chunked files are larger than any text diff shows.
        return Ok(None);
    }
    let bytes = match &f.path {
        Some(p) => {
            if std::fs::metadata(p)?.len() > MAX_TEXT_DIFF {
                return Ok(None);
            }
            std::fs::read(p)?
        }
        None => {
            if repo.odb.header(&f.id)?.meta.data_len > MAX_TEXT_DIFF {
                return Ok(None);
            }
            repo.odb.read(&f.id)?.1
        }
    };
    Ok(String::from_utf8(bytes).ok())
}

fn text_diff(repo: &Repository, path: &str, a: Option<&SideFile>, b: Option<&SideFile>) -> Result<Option<String>> {
    let (Some(x), Some(y)) = (text_of(repo, a)?, text_of(repo, b)?) else {
        return Ok(None);
    };
    let diff = similar::TextDiff::from_lines(&x, &y);
    Ok(Some(diff.unified_diff().header(&format!("a/{path}"), &format!("b/{path}")).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The comparison element by element, as first written: what the word-at-a-time tally
    /// must agree with.
    fn reference(d: Dtypes, old: &[u8], rounded: Option<&[u8]>, new: &[u8]) -> Tally {
        let mut t = Tally::default();
        let (ow, nw) = (d.old.width(), d.new.width());
        for (i, (x, y)) in old.chunks_exact(ow).zip(new.chunks_exact(nw)).enumerate() {
            let values_differ = value(d.old, x).to_bits() != value(d.new, y).to_bits();
            let (r, ref_dtype) = match rounded {
                Some(r) => (&r[i * nw..(i + 1) * nw], d.new),
                None => (x, d.old),
            };
            let changed = if ref_dtype == d.new { r != y } else { values_differ };
            if !changed {
                t.rounding_only += u64::from(values_differ);
                continue;
            }
            t.changed += 1;
            t.add_delta((value(ref_dtype, r) - value(d.new, y)).abs());
            let diff = word(r) ^ word(y);
            let low = d.new.float_layout().is_some_and(|l| diff >> l.mantissa.div_ceil(2) == 0);
            t.low_mantissa_only += u64::from(ref_dtype == d.new && low);
        }
        t
    }

    const PAIRS: [(DType, DType); 9] = [
        (DType::BF16, DType::BF16),
        (DType::F16, DType::F16),
        (DType::F32, DType::F32),
        (DType::F64, DType::F64),
        (DType::F8_E4M3, DType::F8_E4M3),
        (DType::I32, DType::I32),
        (DType::F32, DType::BF16),
        (DType::BF16, DType::F32),
        (DType::I64, DType::F16),
    ];

    proptest! {
        #[test]
        fn the_word_tally_counts_what_the_element_tally_does(
            pair in 0..PAIRS.len(),
            old in proptest::collection::vec(any::<u8>(), 0..512),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..64),
        ) {
            let (from, to) = PAIRS[pair];
            let d = Dtypes { old: from, new: to, rounds: from != to && convert::can_convert(from, to) };
            let n = old.len() / from.width();
            let old = &old[..n * from.width()];
            // The new side: the old one in the new dtype where it converts, with bytes changed.
            let rounded = if d.rounds { convert::convert(old, from, to) } else { None };
            let mut new = rounded.clone().unwrap_or_else(|| {
                let mut v = old.to_vec();
                v.resize(n * to.width(), 0);
                v
            });
            let len = new.len().max(1);
            for (at, xor) in flips {
                if let Some(b) = new.get_mut(at % len) {
                    *b ^= xor;
                }
            }
            let want = reference(d, old, rounded.as_deref(), &new);
            let mut got = Tally::default();
            got.add(d, old, rounded.as_deref(), &new);
            prop_assert_eq!(
                (got.changed, got.rounding_only, got.low_mantissa_only),
                (want.changed, want.rounding_only, want.low_mantissa_only)
            );
            prop_assert_eq!(got.max_abs_diff.to_bits(), want.max_abs_diff.to_bits());
            prop_assert_eq!(got.sum_abs_diff.to_bits(), want.sum_abs_diff.to_bits());
        }
    }
}
