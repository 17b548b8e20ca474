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
