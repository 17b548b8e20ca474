//! The object model: typed, content-addressed objects and their canonical encodings.
//!
//! An object's id depends only on its kind and canonical body (see `docs/FORMAT.md`),
//! never on how a pack happens to store it.

mod chunked;
mod commit;
mod dtype;
mod id;
mod tensor_file;
mod tree;

pub use chunked::ChunkedFile;
pub use commit::{Commit, GitProvenance, Signature, Tag};
pub use dtype::DType;
pub use id::{BadId, ID_LEN, IdHasher, ObjectId};
pub use tensor_file::{Segment, TensorFile};
pub use tree::{EntryKind, MAX_TREE_DEPTH, Tree, TreeEntry, is_valid_name};

use crate::encoding::DecodeError;

/// The kinds of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// Opaque file bytes.
    Blob,
    /// One tensor: dtype, shape and element bytes.
    Tensor,
    /// A safetensors file: its header verbatim and its tensors in data order.
    TensorFile,
    /// A directory listing.
    Tree,
    /// A snapshot with history.
    Commit,
    /// An annotated tag.
    Tag,
    /// A large file that is not safetensors, as content-defined chunks (blobs).
    ChunkedFile,
}

impl ObjectKind {
    /// The name used in the id preamble and in output.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Blob => "blob",
            ObjectKind::Tensor => "tensor",
            ObjectKind::TensorFile => "tensor-file",
            ObjectKind::Tree => "tree",
            ObjectKind::Commit => "commit",
            ObjectKind::Tag => "tag",
            ObjectKind::ChunkedFile => "chunked-file",
        }
    }

    /// The one-byte code stored in packs and indexes.
    pub fn code(self) -> u8 {
        match self {
            ObjectKind::Blob => 1,
            ObjectKind::Tensor => 2,
            ObjectKind::TensorFile => 3,
            ObjectKind::Tree => 4,
            ObjectKind::Commit => 5,
            ObjectKind::Tag => 6,
            ObjectKind::ChunkedFile => 7,
        }
    }

    /// Inverse of [`ObjectKind::code`].
    pub fn from_code(code: u8) -> Option<ObjectKind> {
        Some(match code {
            1 => ObjectKind::Blob,
            2 => ObjectKind::Tensor,
            3 => ObjectKind::TensorFile,
            4 => ObjectKind::Tree,
            5 => ObjectKind::Commit,
            6 => ObjectKind::Tag,
            7 => ObjectKind::ChunkedFile,
            _ => return None,
        })
    }
}

/// A tensor's identity-bearing metadata; its body is this header followed by the element bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<u64>,
    /// Length of the element bytes.
    pub data_len: u64,
}

impl TensorMeta {
    /// The canonical header that precedes the element bytes in the hashed body.
    pub fn canonical_header(&self) -> Vec<u8> {
        use crate::encoding::Writer;
        let mut out = Vec::with_capacity(6 + 8 * self.shape.len());
        out.push(self.dtype.code());
        out.push(self.shape.len() as u8);
        for d in &self.shape {
            out.put_u64(*d);
        }
        out
    }

    /// Length of the whole canonical body.
    pub fn body_len(&self) -> u64 {
        2 + 8 * self.shape.len() as u64 + self.data_len
    }

    /// Starts an id hasher already fed with the header; feed the element bytes next.
    pub fn hasher(&self) -> IdHasher {
        let mut h = IdHasher::new(ObjectKind::Tensor, self.body_len());
        h.update(&self.canonical_header());
        h
    }

    /// Number of elements (bytes for sub-byte dtypes).
    pub fn elements(&self) -> u64 {
        self.data_len / self.dtype.width() as u64
    }

    /// Parses a canonical header from the start of `r`.
    pub fn decode_header(r: &mut crate::encoding::Reader<'_>, data_len: u64) -> Result<Self, DecodeError> {
        let code = r.u8()?;
        let dtype = DType::from_code(code).ok_or_else(|| r.error(format!("unknown dtype code {code}")))?;
        let ndim = r.u8()? as usize;
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            shape.push(r.u64()?);
        }
        Ok(TensorMeta { dtype, shape, data_len })
    }
}
