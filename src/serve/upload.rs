//! Receiving an uploaded pack: the body is streamed to a temporary file beside the packs while
//! it is hashed, and checked against the name it was sent under before anything reads it.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::pack::{PACK_HEADER_LEN, PackName, TRAILER_LEN, UnindexedPack};

/// How long an upload may send nothing before the server gives up on it.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(120);

/// Why an upload was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The body is larger than the server accepts.
    #[error("the pack is larger than this server accepts ({0} bytes); raise --max-pack-bytes")]
    TooLarge(u64),
    /// The bytes are not the pack the name says.
    #[error("{0}")]
    Damaged(String),
    /// The client stopped sending or went away.
    #[error("the upload broke off: {0}")]
    BrokenOff(String),
    /// Writing the temporary file failed.
    #[error("cannot stage the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// BLAKE3 of everything but the last 32 bytes, which are kept aside: a pack's name is the
/// hash of its bytes before the trailer, and the trailer repeats it.
pub struct TrailerHasher {
    hasher: blake3::Hasher,
    tail: Vec<u8>,
    len: u64,
}

const TAIL: usize = TRAILER_LEN as usize;

impl Default for TrailerHasher {
    fn default() -> Self {
        TrailerHasher { hasher: blake3::Hasher::new(), tail: Vec::with_capacity(TAIL), len: 0 }
    }
}

impl TrailerHasher {
    /// Adds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        if self.tail.len() + data.len() <= TAIL {
            self.tail.extend_from_slice(data);
        } else if data.len() >= TAIL {
            self.hasher.update(&self.tail);
            self.hasher.update(&data[..data.len() - TAIL]);
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - TAIL..]);
        } else {
            let keep = TAIL - data.len();
            let cut = self.tail.len() - keep;
            self.hasher.update(&self.tail[..cut]);
            self.tail.drain(..cut);
            self.tail.extend_from_slice(data);
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash of all but the last 32 bytes, and those bytes (fewer if fewer were seen).
    pub fn finish(&self) -> ([u8; 32], &[u8]) {
        (*self.hasher.finalize().as_bytes(), &self.tail)
    }
}

/// Streams `body` into a temporary file in `dir` and checks it is the pack `name`, at most
/// `max` bytes. The file is removed if anything fails, or if this future is dropped.
pub async fn stage(body: Body, dir: &Path, name: PackName, max: u64) -> Result<UnindexedPack, UploadError> {
    let (file, path) = tempfile::Builder::new().prefix(".tmp-upload-").tempfile_in(dir)?.into_parts();
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let mut hasher = TrailerHasher::default();
    let mut stream = body.into_data_stream();
    loop {
        let next = tokio::time::timeout(UPLOAD_IDLE, stream.next()).await;
        let chunk = match next {
            Err(_) => return Err(UploadError::BrokenOff(format!("nothing arrived for {} s", UPLOAD_IDLE.as_secs()))),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(UploadError::BrokenOff(e.to_string())),
            Ok(Some(Ok(chunk))) => chunk,
        };
        if hasher.len() + chunk.len() as u64 > max {
            return Err(UploadError::TooLarge(max));
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    out.into_inner().sync_all().await?;
    let len = hasher.len();
    if len < PACK_HEADER_LEN + TRAILER_LEN {
        return Err(UploadError::Damaged(format!("{len} bytes is too short to be a pack")));
    }
    let (hash, trailer) = hasher.finish();
    if hash != name.0 || trailer != name.0 {
        return Err(UploadError::Damaged(format!(
            "the bytes received are not {name}: their hash differs from the name, so they were damaged on the way"
        )));
    }
    Ok(UnindexedPack { file: path, name, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trailer_is_kept_out_of_the_hash_however_the_bytes_are_cut() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let want = *blake3::hash(&data[..data.len() - TAIL]).as_bytes();
        for cuts in [vec![300], vec![1; 300], vec![31, 1, 32, 33, 200, 3], vec![10, 10, 10, 270], vec![299, 1]] {
            let mut h = TrailerHasher::default();
            let mut pos = 0;
            for c in cuts {
                h.update(&data[pos..pos + c]);
                pos += c;
            }
            let (hash, tail) = h.finish();
            assert_eq!(hash, want);
            assert_eq!(tail, &data[data.len() - TAIL..]);
            assert_eq!(h.len(), 300);
        }
    }

    #[test]
    fn short_inputs_are_all_tail() {
        let mut h = TrailerHasher::default();
        h.update(b"abc");
        let (hash, tail) = h.finish();
        assert_eq!(tail, b"abc");
        assert_eq!(hash, *blake3::hash(b"").as_bytes());
    }
}
