//! The tree object: one directory level, entries sorted by name.

use super::{ObjectId, ObjectKind};
use crate::encoding::{DecodeError, Reader, Writer};

/// What a tree entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A plain file stored as a blob.
    Blob,
    /// A safetensors file stored as a tensor-file object.
    TensorFile,
    /// A subdirectory.
    Tree,
    /// A large file that is not safetensors, stored as content-defined chunks.
    ChunkedFile,
}

impl EntryKind {
    fn code(self) -> u8 {
        match self {
            EntryKind::Blob => 1,
            EntryKind::TensorFile => 2,
            EntryKind::Tree => 3,
            EntryKind::ChunkedFile => 4,
        }
    }
}

/// One named entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// A single path component.
    pub name: String,
    /// What `id` names.
    pub kind: EntryKind,
    /// True for an executable file.
    pub executable: bool,
    /// The object.
    pub id: ObjectId,
    /// Logical size in bytes (for a tree, the sum of its files).
    pub size: u64,
}

/// A directory: entries with unique names in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// Sorted by name.
    pub entries: Vec<TreeEntry>,
}

/// The deepest directory nesting a tree may have: deeper is a hostile tree, not a checkpoint.
pub const MAX_TREE_DEPTH: usize = 256;

/// True for a name that is safe to create inside a directory.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name != ".mlv"
        && name.len() <= u16::MAX as usize
        && !name.contains(['/', '\\', '\0'])
}

impl Tree {
    /// Canonical body; entries must already be sorted and unique.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u32(self.entries.len() as u32);
        for e in &self.entries {
            out.push(e.kind.code());
            out.push(e.executable as u8);
            out.put_u16(e.name.len() as u16);
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(&e.id.0);
            out.put_u64(e.size);
        }
        out
    }

    /// Parses and validates a canonical body: names must be safe path components, sorted and unique.
    pub fn decode(body: &[u8]) -> Result<Tree, DecodeError> {
        let mut r = Reader::new(body);
        let count = r.len_u32(44)?;
        let mut entries: Vec<TreeEntry> = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = match r.u8()? {
                1 => EntryKind::Blob,
                2 => EntryKind::TensorFile,
                3 => EntryKind::Tree,
                4 => EntryKind::ChunkedFile,
                k => return Err(r.error(format!("unknown tree entry kind {k}"))),
            };
            let executable = match r.u8()? {
                0 => false,
                1 => true,
                m => return Err(r.error(format!("unknown mode {m}"))),
            };
            let len = r.u16()? as usize;
            let name =
                std::str::from_utf8(r.bytes(len)?).map_err(|_| r.error("tree entry name is not UTF-8"))?.to_string();
            if !is_valid_name(&name) {
                return Err(r.error(format!("unsafe tree entry name {name:?}")));
            }
            if entries.last().is_some_and(|prev| prev.name >= name) {
                return Err(r.error(format!("tree entries not sorted or duplicated at {name:?}")));
            }
            let id = r.id()?;
            let size = r.u64()?;
            entries.push(TreeEntry { name, kind, executable, id, size });
        }
        r.finish()?;
        Ok(Tree { entries })
    }

    /// The object id.
    pub fn id(&self) -> ObjectId {
        ObjectId::hash(ObjectKind::Tree, &self.encode())
    }

    /// Looks an entry up by name.
    pub fn get(&self, name: &str) -> Option<&TreeEntry> {
        self.entries.binary_search_by(|e| e.name.as_str().cmp(name)).ok().map(|i| &self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> TreeEntry {
        TreeEntry { name: name.into(), kind: EntryKind::Blob, executable: false, id: ObjectId([3; 32]), size: 1 }
    }

    #[test]
    fn round_trip() {
        let t = Tree { entries: vec![entry("a"), entry("b.safetensors")] };
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        assert_eq!(t.get("a").map(|e| e.size), Some(1));
    }

    #[test]
    fn rejects_path_traversal_and_unsorted_names() {
        for bad in ["..", "a/b", ".mlv", ""] {
            let t = Tree { entries: vec![entry(bad)] };
            assert!(Tree::decode(&t.encode()).is_err(), "{bad:?} accepted");
        }
        let t = Tree { entries: vec![entry("b"), entry("a")] };
        assert!(Tree::decode(&t.encode()).is_err());
    }
}
