//! `mlv diff`: per file, which tensors were added, removed or changed, and by how much;
//! unified diffs for text files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

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
        changed: p.changed.iter().map(|(o, n)| compare(repo, o, n)).collect::<Result<_>>()?,
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
        let (ow, nw) = (d.old.width(), d.new.width());
        for (i, (x, y)) in old.chunks_exact(ow).zip(new.chunks_exact(nw)).enumerate() {
            let values_differ = value(d.old, x).to_bits() != value(d.new, y).to_bits();
            // What the new element is compared with: the old one, as the new dtype holds it.
            let (reference, ref_dtype) = match rounded {
                Some(r) => (&r[i * nw..(i + 1) * nw], d.new),
                None => (x, d.old),
            };
            let changed = if ref_dtype == d.new { reference != y } else { values_differ };
            if !changed {
                self.rounding_only += u64::from(values_differ);
                continue;
            }
            self.changed += 1;
            let delta = (value(ref_dtype, reference) - value(d.new, y)).abs();
            if delta.is_finite() {
                self.max_abs_diff = self.max_abs_diff.max(delta);
                self.sum_abs_diff += delta;
            }
            if ref_dtype == d.new && low_mantissa_only(d.new, reference, y) {
                self.low_mantissa_only += 1;
            }
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

fn compare(repo: &Repository, o: &SideTensor, n: &SideTensor) -> Result<TensorChange> {
    let (from, to) = (o.t.dtype, n.t.dtype);
    let d = Dtypes { old: from, new: to, rounds: from != to && convert::can_convert(from, to) };
    let (ow, nw) = (from.width() as u64, to.width() as u64);
    let elements = (byte_len(&o.t) / ow).min(byte_len(&n.t) / nw);
    let mut tally = Tally::default();
    let mut pos = 0;
    while pos < elements {
        let end = (pos + WINDOW_ELEMS).min(elements);
        let a = read(repo, o, pos * ow, end * ow)?;
        let b = read(repo, n, pos * nw, end * nw)?;
        let rounded = if d.rounds { convert::convert(&a, from, to) } else { None };
        tally.add(d, &a, rounded.as_deref(), &b);
        pos = end;
    }
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

/// Same sign and exponent, mantissas differing only in their lower half.
fn low_mantissa_only(dtype: DType, x: &[u8], y: &[u8]) -> bool {
    let Some(l) = dtype.float_layout() else { return false };
    let diff = word(x) ^ word(y);
    diff != 0 && diff >> l.mantissa.div_ceil(2) == 0
}

/// True for the dtypes [`value`] gives a number for.
fn has_value(dtype: DType) -> bool {
    !value(dtype, &[0; 8]).is_nan()
}

/// An element's numeric value (NaN for types without a simple one).
pub fn value(dtype: DType, b: &[u8]) -> f64 {
    let w = word(b);
    match dtype {
        DType::F64 => f64::from_bits(w),
        DType::F32 => f32::from_bits(w as u32) as f64,
        DType::F16 => half::f16::from_bits(w as u16).to_f64(),
        DType::BF16 => half::bf16::from_bits(w as u16).to_f64(),
        DType::F8_E4M3 => small_float(w as u8, 4, 3, 7),
        DType::F8_E5M2 => small_float(w as u8, 5, 2, 15),
        DType::I8 => w as u8 as i8 as f64,
        DType::I16 => w as u16 as i16 as f64,
        DType::I32 => w as u32 as i32 as f64,
        DType::I64 => w as i64 as f64,
        DType::U8 | DType::BOOL | DType::U16 | DType::U32 | DType::U64 => w as f64,
        _ => f64::NAN,
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
