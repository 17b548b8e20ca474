//! Parsing safetensors headers into a byte-exact layout of the file.
//!
//! The header is kept verbatim elsewhere; this module only finds where every tensor's bytes
//! are and rejects anything that could not be rebuilt exactly or that `safetensors` would
//! refuse for being inconsistent (overlaps, offsets past the end, sizes that overflow).

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::object::DType;

/// Headers larger than this are refused, as the `safetensors` library does.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Why a file is not valid safetensors, and where.
#[derive(Debug, thiserror::Error)]
#[error("invalid safetensors at byte {offset}: {what}")]
pub struct FormatError {
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// Reading failed, or the bytes are not a valid safetensors file.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The bytes are not valid safetensors.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// One tensor's place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpan {
    /// Name in the header.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Absolute byte offset of the first element byte.
    pub start: u64,
    /// Absolute byte offset one past the last element byte.
    pub end: u64,
}

impl TensorSpan {
    /// Element byte length.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One stretch of the data region, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// A tensor's element bytes.
    Tensor(TensorSpan),
    /// Bytes between or after tensors, `start..end`.
    Bytes {
        /// Absolute start offset.
        start: u64,
        /// Absolute end offset.
        end: u64,
    },
}

/// A parsed safetensors file: its header bytes and the spans that tile the rest exactly.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The 8-byte length plus the JSON header, verbatim.
    pub prefix: Vec<u8>,
    /// Data spans in file order, covering `prefix.len()..file_len` with no holes.
    pub spans: Vec<Span>,
}

impl Layout {
    /// The tensors only, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorSpan> {
        self.spans.iter().filter_map(|s| match s {
            Span::Tensor(t) => Some(t),
            Span::Bytes { .. } => None,
        })
    }
}

fn format_error(offset: u64, what: impl Into<String>) -> FormatError {
    FormatError { offset, what: what.into() }
}

/// Reads and validates the header of an open file of length `file_len`.
pub fn read_layout(file: &File, file_len: u64) -> Result<Layout, ParseError> {
    if file_len < 8 {
        return Err(format_error(0, format!("file is {file_len} bytes, shorter than the 8-byte header length")).into());
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact_at(&mut len_bytes, 0)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(
            format_error(0, format!("header length {header_len} exceeds the {MAX_HEADER_LEN}-byte limit")).into()
        );
    }
    if header_len > file_len - 8 {
        return Err(format_error(
            0,
            format!("header length {header_len} runs past the end of the {file_len}-byte file"),
        )
        .into());
    }
    let mut prefix = vec![0u8; 8 + header_len as usize];
    file.read_exact_at(&mut prefix, 0)?;
    let spans = parse_header(&prefix[8..], file_len)?;
    Ok(Layout { prefix, spans })
}

/// Parses header JSON (the bytes after the 8-byte length) for a file of `file_len` bytes.
pub fn parse_header(header: &[u8], file_len: u64) -> Result<Vec<Span>, FormatError> {
    let data_start = 8 + header.len() as u64;
    let data_len = file_len
        .checked_sub(data_start)
        .ok_or_else(|| format_error(0, format!("header runs past the end of the {file_len}-byte file")))?;
    let text = std::str::from_utf8(header)
        .map_err(|e| format_error(8 + e.valid_up_to() as u64, "header is not valid UTF-8"))?;
    let Entries(entries) = serde_json::from_str(text)
        .map_err(|e| format_error(8 + json_offset(text, &e), format!("header is not a JSON object: {e}")))?;
    let mut names = std::collections::HashSet::new();
    if let Some((dup, _)) = entries.iter().find(|(name, _)| !names.insert(name.as_str())) {
        // Loaders disagree on which of the two wins, so neither may.
        return Err(format_error(8, format!("tensor name {dup:?} appears twice in the header")));
    }
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if name == "__metadata__" {
            check_metadata(&value)?;
            continue;
        }
        tensors.push(tensor_span(name, value, data_start, data_len)?);
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    tile(tensors, data_start, file_len)
}

/// A JSON object's members in order, duplicates kept (a map would silently drop them).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(member) = map.next_entry()? {
                    out.push(member);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Members)
    }
}

/// Accepts what `safetensors` accepts: `null` (no metadata) or a map of strings to strings.
fn check_metadata(value: &serde_json::Value) -> Result<(), FormatError> {
    let ok = value.is_null() || value.as_object().is_some_and(|m| m.values().all(serde_json::Value::is_string));
    if ok { Ok(()) } else { Err(format_error(8, "__metadata__ must be null or map strings to strings")) }
}

/// A tensor entry. Unknown keys are ignored, as `safetensors` does; the header is stored
/// verbatim, so they survive a round trip.
#[derive(serde::Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

fn tensor_span(
    name: String,
    value: serde_json::Value,
    data_start: u64,
    data_len: u64,
) -> Result<TensorSpan, FormatError> {
    let info: RawInfo =
        serde_json::from_value(value).map_err(|e| format_error(8, format!("tensor {name:?}: malformed entry: {e}")))?;
    let dtype = DType::from_name(&info.dtype)
        .ok_or_else(|| format_error(8, format!("tensor {name:?}: unknown dtype {:?}", info.dtype)))?;
    let (begin, end) = info.data_offsets;
    if begin > end || end > data_len {
        return Err(format_error(
            data_start.saturating_add(begin),
            format!("tensor {name:?}: data offsets [{begin}, {end}] outside the {data_len}-byte data region"),
        ));
    }
    if info.shape.len() > u8::MAX as usize {
        return Err(format_error(8, format!("tensor {name:?}: {} dimensions is too many", info.shape.len())));
    }
    let expected =
        info.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).and_then(|n| dtype.byte_len(n)).ok_or_else(
            || format_error(8, format!("tensor {name:?}: shape {:?} overflows its byte size", info.shape)),
        )?;
    if expected != end - begin {
        return Err(format_error(
            data_start + begin,
            format!(
                "tensor {name:?}: shape {:?} of {dtype} needs {expected} bytes but offsets span {}",
                info.shape,
                end - begin
            ),
        ));
    }
    Ok(TensorSpan { name, dtype, shape: info.shape, start: data_start + begin, end: data_start + end })
}

/// Orders tensors and fills the holes with byte spans; overlapping tensors are an error.
fn tile(tensors: Vec<TensorSpan>, data_start: u64, file_len: u64) -> Result<Vec<Span>, FormatError> {
    let mut spans = Vec::with_capacity(tensors.len() + 1);
    let mut cursor = data_start;
    for t in tensors {
        if t.start < cursor {
            return Err(format_error(t.start, format!("tensor {:?} overlaps the tensor before it", t.name)));
        }
        if t.start > cursor {
            spans.push(Span::Bytes { start: cursor, end: t.start });
        }
        cursor = t.end;
        spans.push(Span::Tensor(t));
    }
    if cursor < file_len {
        spans.push(Span::Bytes { start: cursor, end: file_len });
    }
    Ok(spans)
}

/// Converts serde_json's line/column into a byte offset in `text`.
fn json_offset(text: &str, e: &serde_json::Error) -> u64 {
    let line_start: usize = text.split_inclusive('\n').take(e.line().saturating_sub(1)).map(str::len).sum();
    (line_start + e.column().saturating_sub(1)) as u64
}

#[cfg(test)]
mod tests;
