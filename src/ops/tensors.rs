//! Naming the tensors of a stored tensor file.

use crate::object::{DType, ObjectId, Segment, TensorFile};
use crate::safetensors::{Span, parse_header};

/// One tensor of a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTensor {
    /// Header name.
    pub name: String,
    /// Tensor object.
    pub id: ObjectId,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<u64>,
}

/// The tensors of a tensor file, in file order, named from its verbatim header.
pub fn named_tensors(tf: &TensorFile) -> Vec<NamedTensor> {
    let Some(header) = tf.prefix.get(8..) else {
        return Vec::new();
    };
    let Ok(spans) = parse_header(header, tf.file_len()) else {
        return Vec::new();
    };
    let ids = tf.segments.iter().filter_map(|s| match s {
        Segment::Tensor { id, .. } => Some(*id),
        Segment::Bytes { .. } => None,
    });
    spans
        .into_iter()
        .filter_map(|s| match s {
            Span::Tensor(t) => Some(t),
            Span::Bytes { .. } => None,
        })
        .zip(ids)
        .map(|(t, id)| NamedTensor { name: t.name, id, dtype: t.dtype, shape: t.shape })
        .collect()
}

/// How the tensors of two versions of a file pair up by name. One definition for `status`
/// and `diff`: a tensor is changed when both versions have its name and its content (bytes,
/// dtype or shape) differs.
#[derive(Debug)]
pub struct Pairing<'a, T> {
    /// Names only in the new version, in its order.
    pub added: Vec<&'a T>,
    /// Names only in the old version, in its order.
    pub removed: Vec<&'a T>,
    /// Same name, different content: (old, new), in the new version's order.
    pub changed: Vec<(&'a T, &'a T)>,
    /// Same name and content.
    pub unchanged: usize,
}

/// Pairs `old` and `new` tensors by name; `key` gives a tensor's name and object id.
pub fn pair_by_name<'a, T>(old: &'a [T], new: &'a [T], key: impl Fn(&T) -> (&str, ObjectId)) -> Pairing<'a, T> {
    let old_by_name: std::collections::HashMap<&str, &T> = old.iter().map(|t| (key(t).0, t)).collect();
    let new_names: std::collections::HashSet<&str> = new.iter().map(|t| key(t).0).collect();
    let mut p = Pairing { added: Vec::new(), removed: Vec::new(), changed: Vec::new(), unchanged: 0 };
    for n in new {
        let (name, id) = key(n);
        match old_by_name.get(name) {
            None => p.added.push(n),
            Some(o) if key(o).1 == id => p.unchanged += 1,
            Some(o) => p.changed.push((o, n)),
        }
    }
    p.removed = old.iter().filter(|o| !new_names.contains(key(o).0)).collect();
    p
}

/// How many tensors of a file changed, appeared and disappeared (see [`Pairing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TensorCounts {
    /// Same name, different content.
    pub changed: usize,
    /// Only in the new version.
    pub added: usize,
    /// Only in the old version.
    pub removed: usize,
}

impl<T> Pairing<'_, T> {
    /// The counts of this pairing.
    pub fn counts(&self) -> TensorCounts {
        TensorCounts { changed: self.changed.len(), added: self.added.len(), removed: self.removed.len() }
    }
}
