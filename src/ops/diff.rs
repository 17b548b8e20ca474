//! `mlv diff`: per file, which tensors were added, removed or changed, and by how much;
//! unified diffs for text files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde::Serialize;

use super::status::{ChangeKind, tracked_files};
use super::tensors::{NamedTensor, named_tensors};
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
#[derive(Debug, Serialize)]
pub struct TensorChange {
    /// Name.
    pub name: String,
    /// Dtype (of the new side).
    pub dtype: String,
    /// Shape of the old and new side.
    pub shape: (Vec<u64>, Vec<u64>),
    /// Elements compared.
    pub elements: u64,
    /// Elements whose bits differ.
    pub changed: u64,
    /// Largest absolute difference (floats and integers).
    pub max_abs_diff: f64,
    /// Mean absolute difference over all elements.
    pub mean_abs_diff: f64,
    /// Changed elements with the same sign and exponent whose mantissa differs only in its lower half.
    pub low_mantissa_only: u64,
}

/// Tensor-level differences of one safetensors file.
#[derive(Debug, Serialize, Default)]
pub struct TensorsDiff {
    /// Names only in the new side.
    pub added: Vec<String>,
    /// Names only in the old side.
    pub removed: Vec<String>,
    /// Same name, different content.
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
    let mut d = TensorsDiff::default();
    for n in &new {
        match old.iter().find(|o| o.t.name == n.t.name) {
            None => d.added.push(n.t.name.clone()),
            Some(o) if o.t.id == n.t.id => d.unchanged += 1,
            Some(o) => d.changed.push(compare(repo, o, n)?),
        }
    }
    d.removed = old.iter().filter(|o| !new.iter().any(|n| n.t.name == o.t.name)).map(|o| o.t.name.clone()).collect();
    Ok(d)
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

fn compare(repo: &Repository, o: &SideTensor, n: &SideTensor) -> Result<TensorChange> {
    let (ow, nw) = (o.t.dtype.width() as u64, n.t.dtype.width() as u64);
    let elements = (byte_len(&o.t) / ow).min(byte_len(&n.t) / nw);
    let mut c = TensorChange {
        name: n.t.name.clone(),
        dtype: n.t.dtype.to_string(),
        shape: (o.t.shape.clone(), n.t.shape.clone()),
        elements,
        changed: 0,
        max_abs_diff: 0.0,
        mean_abs_diff: 0.0,
        low_mantissa_only: 0,
    };
    let same_dtype = o.t.dtype == n.t.dtype;
    let mut sum = 0.0;
    let mut pos = 0;
    while pos < elements {
        let end = (pos + WINDOW_ELEMS).min(elements);
        let a = read(repo, o, pos * ow, end * ow)?;
        let b = read(repo, n, pos * nw, end * nw)?;
        for (x, y) in a.chunks_exact(ow as usize).zip(b.chunks_exact(nw as usize)) {
            let (vx, vy) = (value(o.t.dtype, x), value(n.t.dtype, y));
            // Same dtype: any bit differs. Across dtypes (an F32 base, a BF16 fine-tune): the value.
            let changed = if same_dtype { x != y } else { vx.to_bits() != vy.to_bits() };
            if !changed {
                continue;
            }
            c.changed += 1;
            let delta = (vx - vy).abs();
            if delta.is_finite() {
                c.max_abs_diff = c.max_abs_diff.max(delta);
                sum += delta;
            }
            if same_dtype && low_mantissa_only(n.t.dtype, x, y) {
                c.low_mantissa_only += 1;
            }
        }
        pos = end;
    }
    c.mean_abs_diff = if elements > 0 { sum / elements as f64 } else { 0.0 };
    Ok(c)
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
