//! Packs as objects: `packs/<stem>.pack`, then `packs/<stem>.idx`. A pack counts only once its
//! index is there, so a pack cut off mid-upload is never seen; readers list only indexes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::{ObjectStoreExt, PutMode, WriteMultipart};

use super::{Bucket, Failure};
use crate::pack::{PackError, PackIndex, PackName, SealedPack};
use crate::store::{Doomed, MAX_IN_MEMORY, PackInfo, PackStore, StoreError, decode_mark, encode_mark};
use crate::transport::runtime::block_on;

/// Packs up to this size go in one PUT; larger ones in parts.
const SINGLE_PUT_MAX: u64 = 64 << 20;
/// Smallest part of a multipart upload (S3's floor is 5 MiB).
const PART_BYTES: u64 = 16 << 20;
/// Most parts an upload is cut into (S3 allows 10 000).
const MAX_PARTS: u64 = 9_000;
/// Parts uploading at once: memory is about this many parts plus the one being read.
const PARTS_IN_FLIGHT: usize = 2;
/// Bytes per ranged GET when streaming a range out.
const READ_PIECE: u64 = 64 << 20;
/// Extension of a pack's deletion mark.
const DOOMED: &str = "doomed";
/// Largest deletion mark read.
const MAX_MARK: u64 = 64;

/// The packs of an S3 repository.
pub struct S3Packs {
    bucket: Arc<Bucket>,
}

impl S3Packs {
    pub(super) fn new(bucket: Arc<Bucket>) -> S3Packs {
        S3Packs { bucket }
    }

    /// Uploads a local file to `rel`: one PUT if small, else a multipart upload streamed from
    /// the file, which becomes visible only when complete (and is aborted on failure).
    async fn upload(&self, rel: &str, file: &std::path::Path, len: u64) -> Result<(), Failure> {
        let b = &self.bucket;
        let io = |e: std::io::Error| Failure::other(b.show(rel), format!("reading {}: {e}", file.display()));
        if len <= SINGLE_PUT_MAX {
            let bytes = std::fs::read(file).map_err(io)?;
            if bytes.len() as u64 != len {
                return Err(io(std::io::Error::other(format!("{} bytes, expected {len}", bytes.len()))));
            }
            b.put(rel, Bytes::from(bytes), PutMode::Overwrite).await?;
            return Ok(());
        }
        let upload = b.store.put_multipart(&b.path(rel)).await.map_err(b.fail(rel))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size(len) as usize);
        match self.feed(rel, &mut writer, file, len).await {
            Ok(()) => writer.finish().await.map(|_| ()).map_err(b.fail(rel)),
            Err(f) => {
                // Best effort: an upload left behind is invisible, and a bucket lifecycle
                // rule (AbortIncompleteMultipartUpload) reclaims its parts.
                let _ = writer.abort().await;
                Err(f)
            }
        }
    }

    /// Reads `file` part by part into `writer`, with at most [`PARTS_IN_FLIGHT`] uploading.
    async fn feed(
        &self,
        rel: &str,
        writer: &mut WriteMultipart,
        file: &std::path::Path,
        len: u64,
    ) -> Result<(), Failure> {
        let b = &self.bucket;
        let io = |e: std::io::Error| Failure::other(b.show(rel), format!("reading {}: {e}", file.display()));
        let mut f = std::fs::File::open(file).map_err(io)?;
        let part = part_size(len) as usize;
        let mut sent = 0u64;
        loop {
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(b.fail(rel))?;
            let mut buf = vec![0u8; part];
            let n = read_full(&mut f, &mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            sent += n as u64;
            writer.put(Bytes::from(buf));
        }
        if sent != len {
            return Err(io(std::io::Error::other(format!("{sent} bytes, expected {len}"))));
        }
        Ok(())
    }
}

/// The part size for an upload of `len` bytes: [`PART_BYTES`], or larger so that the parts
/// stay within [`MAX_PARTS`]; whole MiB.
fn part_size(len: u64) -> u64 {
    let needed = len.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    needed.max(PART_BYTES)
}

/// Reads until `buf` is full or the file ends; the number of bytes read.
fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `packs/<stem>.<ext>`.
fn pack_rel(pack: &PackName, ext: &str) -> String {
    format!("packs/{}.{ext}", pack.stem())
}

/// The complete packs of a listing of `packs/` (file names and sizes): every index whose
/// name parses, sized by its pack. An index without its pack is an error (`Err` names it).
fn complete_packs<'a>(listing: impl IntoIterator<Item = (&'a str, u64)>) -> Result<Vec<PackInfo>, String> {
    let mut packs: BTreeMap<PackName, (Option<u64>, bool)> = BTreeMap::new();
    for (file, size) in listing {
        let Some((stem, ext)) = file.rsplit_once('.') else { continue };
        let Some(name) = PackName::from_stem(stem) else { continue };
        match ext {
            "pack" => packs.entry(name).or_default().0 = Some(size),
            "idx" => packs.entry(name).or_default().1 = true,
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (name, (len, indexed)) in packs {
        match (len, indexed) {
            (Some(len), true) => out.push(PackInfo { name, len }),
            (None, true) => return Err(format!("{}.idx", name.stem())),
            _ => {}
        }
    }
    Ok(out)
}

impl PackStore for S3Packs {
    fn describe(&self) -> String {
        self.bucket.show("packs")
    }

    fn list(&self) -> Result<Vec<PackInfo>, StoreError> {
        let b = &self.bucket;
        let listing = block_on(b.list("packs"))?;
        let files = listing.iter().filter_map(|m| {
            let rel = b.relative(&m.location)?;
            Some((rel.strip_prefix("packs/")?, m.size))
        });
        complete_packs(files).map_err(|idx| {
            let what = format!("{}: the index is there but its pack is missing", b.show(&format!("packs/{idx}")));
            StoreError::Backend(what)
        })
    }

    fn read_index(&self, pack: &PackName) -> Result<PackIndex, StoreError> {
        let rel = pack_rel(pack, "idx");
        let bytes = block_on(self.bucket.get_whole(&rel, MAX_IN_MEMORY))?;
        let path = std::path::PathBuf::from(self.bucket.show(&rel));
        let index = PackIndex::decode(&path, &bytes)?;
        if index.pack_hash != pack.0 {
            return Err(PackError::corrupt(&path, "the index belongs to another pack").into());
        }
        Ok(index)
    }

    fn read_range(&self, pack: &PackName, start: u64, len: u64) -> Result<Bytes, StoreError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let rel = pack_rel(pack, "pack");
        let end =
            start.checked_add(len).ok_or_else(|| StoreError::Backend(format!("range {start}+{len} overflows")))?;
        let b = &self.bucket;
        Ok(block_on(async { b.collect(&rel, b.get_range(&rel, start..end).await?, len).await })?)
    }

    fn copy_range(&self, pack: &PackName, start: u64, len: u64, out: &mut dyn Write) -> Result<(), StoreError> {
        let rel = pack_rel(pack, "pack");
        let b = &self.bucket;
        let end =
            start.checked_add(len).ok_or_else(|| StoreError::Backend(format!("range {start}+{len} overflows")))?;
        let mut pos = start;
        while pos < end {
            let piece_end = end.min(pos + READ_PIECE);
            block_on(async {
                let mut body = b.get_range(&rel, pos..piece_end).await?.into_stream();
                let mut got = 0u64;
                while let Some(bytes) = body.next().await {
                    let bytes = bytes.map_err(b.fail(&rel))?;
                    got += bytes.len() as u64;
                    if got > piece_end - pos {
                        return Err(Failure::other(b.show(&rel), "the server sent more bytes than asked").into());
                    }
                    out.write_all(&bytes)?;
                }
                if got != piece_end - pos {
                    let what = format!("the body ended after {got} of {} bytes", piece_end - pos);
                    return Err(Failure::other(b.show(&rel), what).into());
                }
                Ok::<_, StoreError>(())
            })?;
            pos = piece_end;
        }
        Ok(())
    }

    fn has_pack(&self, pack: &PackName) -> Result<bool, StoreError> {
        Ok(block_on(self.bucket.size(&pack_rel(pack, "idx")))?.is_some())
    }

    fn doomed(&self) -> Result<Vec<Doomed>, StoreError> {
        let b = &self.bucket;
        let listing = block_on(b.list("packs"))?;
        let names = listing.iter().filter_map(|m| {
            let (stem, ext) = b.relative(&m.location)?.strip_prefix("packs/")?.rsplit_once('.')?;
            (ext == DOOMED).then(|| PackName::from_stem(stem)).flatten()
        });
        let mut out = Vec::new();
        for name in names {
            let rel = pack_rel(&name, DOOMED);
            let text = block_on(b.get_whole(&rel, MAX_MARK))?;
            let marked = decode_mark(&text)
                .ok_or_else(|| StoreError::Backend(format!("{}: not a deletion mark", b.show(&rel))))?;
            out.push(Doomed { name, marked });
        }
        Ok(out)
    }

    fn doom(&self, pack: &PackName, marked: u64) -> Result<(), StoreError> {
        let text = Bytes::from(encode_mark(marked));
        // Create only: a pack marked already keeps its first mark.
        block_on(self.bucket.put(&pack_rel(pack, DOOMED), text, PutMode::Create))?;
        Ok(())
    }

    fn spare(&self, pack: &PackName) -> Result<(), StoreError> {
        Ok(block_on(self.bucket.delete(&pack_rel(pack, DOOMED)))?)
    }

    fn delete(&self, pack: &PackName) -> Result<(), StoreError> {
        let b = &self.bucket;
        block_on(async {
            for ext in ["idx", "pack", DOOMED] {
                b.delete(&pack_rel(pack, ext)).await?;
            }
            Ok::<_, Failure>(())
        })?;
        Ok(())
    }

    fn install(&self, pack: SealedPack) -> Result<(), StoreError> {
        let (pack_key, idx_key) = (pack_rel(&pack.name, "pack"), pack_rel(&pack.name, "idx"));
        let b = &self.bucket;
        block_on(async {
            b.mark().await?;
            // A pack whose upload finished before its index did (an interrupted push) is
            // named by its hash: the same length means the same bytes.
            if b.size(&pack_key).await? != Some(pack.len) {
                self.upload(&pack_key, &pack.file, pack.len).await?;
            }
            b.put(&idx_key, Bytes::from(pack.index.encode()), PutMode::Overwrite).await?;
            Ok::<_, Failure>(())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_indexed_packs_are_listed() {
        let (a, b, c) = (PackName([1; 32]), PackName([2; 32]), PackName([3; 32]));
        let (pa, ia, pb) = (format!("{}.pack", a.stem()), format!("{}.idx", a.stem()), format!("{}.pack", b.stem()));
        let listing = [(pa.as_str(), 100), (ia.as_str(), 7), (pb.as_str(), 50), ("junk.idx", 1), ("x", 2)];
        assert_eq!(complete_packs(listing).unwrap(), vec![PackInfo { name: a, len: 100 }]);
        let orphan = format!("{}.idx", c.stem());
        assert_eq!(complete_packs([(orphan.as_str(), 9)]).unwrap_err(), orphan);
    }

    #[test]
    fn parts_stay_within_the_part_limit() {
        assert_eq!(part_size(100 << 20), PART_BYTES);
        let huge = 500u64 << 30;
        assert!(part_size(huge) * MAX_PARTS >= huge);
        assert_eq!(part_size(huge) % (1 << 20), 0);
    }

    #[test]
    fn pack_keys_are_named_by_stem() {
        let n = PackName([0xab; 32]);
        assert_eq!(pack_rel(&n, "idx"), format!("packs/pack-{}.idx", "ab".repeat(32)));
    }
}
