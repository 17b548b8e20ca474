//! Appends a new pack's bytes to its file past the page cache (`O_DIRECT`) where the
//! filesystem allows it, and through it otherwise, on a thread of its own.
//!
//! A pack is written once and read later, if at all, by another command. Copying it into the
//! page cache cost the large fine-tune's ingest up to a tenth of its CPU on the machine of
//! docs/BENCHMARKS.md (0.06–0.37 s of system time for 134 MB, mostly first touches of pages
//! the VM had given back), and the 1.6 GB pack of the 2 GB base 4.2–4.5 s; a direct write
//! costs a few hundredths of that and the device's time, which the thread takes off the
//! encoders. Durability is unchanged: the pack is still synced before it is installed.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Alignment of a direct write's memory, offset and length (a page; every device's logical
/// block divides it).
const ALIGN: usize = 4096;

/// Bytes gathered before each write: large enough that the device's latency is paid rarely.
const BLOCK: usize = 4 << 20;

/// `BLOCK` bytes of memory aligned to `ALIGN`, the first `filled` of them written to.
struct Block {
    buf: Vec<u8>,
    start: usize,
    filled: usize,
}

impl Block {
    fn new() -> Block {
        let buf = vec![0u8; BLOCK + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Block { buf, start, filled: 0 }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.filled]
    }

    /// Copies as much of `bytes` as fits; returns how much.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(BLOCK - self.filled);
        let at = self.start + self.filled;
        self.buf[at..at + n].copy_from_slice(&bytes[..n]);
        self.filled += n;
        n
    }
}

/// The thread that writes full blocks, in order, and hands each back empty.
struct Writer {
    blocks: SyncSender<Block>,
    /// In a mutex only to be `Sync`, as the pack writer is shared; taken through `&mut`.
    written: Mutex<Receiver<io::Result<Block>>>,
    thread: JoinHandle<()>,
}

impl Writer {
    fn spawn(file: Arc<File>, direct: Arc<AtomicBool>) -> io::Result<Writer> {
        let (blocks, to_write) = sync_channel::<Block>(1);
        let (done, written) = sync_channel(1);
        let thread = std::thread::Builder::new().name("pack-writer".into()).spawn(move || {
            for mut block in to_write {
                let result = write_out(&file, &direct, block.bytes());
                block.filled = 0;
                if done.send(result.map(|()| block)).is_err() {
                    break;
                }
            }
        })?;
        Ok(Writer { blocks, written: Mutex::new(written), thread })
    }
}

/// A `Write` to the end of a file. Call [`Write::flush`] before syncing: the last partial
/// block stays in memory until then. At most two blocks exist: one filled here while the
/// other is written out.
pub struct Appender {
    file: Arc<File>,
    block: Block,
    /// Started at the first full block (a small pack never needs it).
    writer: Option<Writer>,
    /// A block is being written out.
    in_flight: bool,
    /// Writes bypass the page cache.
    direct: Arc<AtomicBool>,
}

impl Appender {
    /// Appends to `file` from its current position, through the page cache.
    pub fn new(file: File) -> Appender {
        let direct = Arc::new(AtomicBool::new(false));
        Appender { file: Arc::new(file), block: Block::new(), writer: None, in_flight: false, direct }
    }

    /// From now on whole blocks bypass the page cache, if the filesystem lets them.
    pub fn bypass_cache(&mut self) {
        self.direct.store(set_direct(&self.file, true).is_ok(), Ordering::Relaxed);
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Hands the full block to the writer and takes an empty one.
    fn send_full(&mut self) -> io::Result<()> {
        let empty = if self.in_flight { self.wait()? } else { Block::new() };
        let full = std::mem::replace(&mut self.block, empty);
        let writer = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(Writer::spawn(self.file.clone(), self.direct.clone())?),
        };
        writer.blocks.send(full).map_err(|_| stopped())?;
        self.in_flight = true;
        Ok(())
    }

    /// Waits for the block in flight to be written; returns it, empty.
    fn wait(&mut self) -> io::Result<Block> {
        self.in_flight = false;
        let writer = self.writer.as_mut().ok_or_else(stopped)?;
        let written = writer.written.get_mut().map_err(|_| stopped())?;
        written.recv().map_err(|_| stopped())?
    }
}

impl Write for Appender {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.block.fill(bytes);
        if self.block.filled == BLOCK {
            self.send_full()?;
        }
        Ok(n)
    }

    /// Writes out everything: waits for the block in flight, then writes the last partial
    /// block here, through the page cache, as a direct write must be whole blocks.
    fn flush(&mut self) -> io::Result<()> {
        if self.in_flight {
            self.wait()?;
        }
        if self.block.filled > 0 {
            if self.direct.swap(false, Ordering::Relaxed) {
                set_direct(&self.file, false)?;
            }
            write_out(&self.file, &self.direct, self.block.bytes())?;
            self.block.filled = 0;
        }
        Ok(())
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        if let Some(Writer { blocks, written, thread }) = self.writer.take() {
            drop((blocks, written));
            let _ = thread.join();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the pack writer thread stopped")
}

/// Writes `bytes` at the file's position. A direct write the filesystem refuses (`EINVAL`:
/// it does not take this alignment) is done again through the page cache, from where the
/// refused one stopped.
fn write_out(mut file: &File, direct: &AtomicBool, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && direct.swap(false, Ordering::Relaxed) => {
                set_direct(file, false)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Turns `O_DIRECT` on or off for `file`.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` keeps open; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on { Err(io::ErrorKind::Unsupported.into()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;

    /// Bytes of every value, in writes of many lengths around the block size.
    fn data() -> (Vec<u8>, Vec<usize>) {
        let data: Vec<u8> = (0..3 * BLOCK + 12345).map(|i| (i * 31 % 251) as u8).collect();
        let lens = vec![16, 1, BLOCK - 17, 2 * BLOCK + 5, 100, 7];
        (data, lens)
    }

    fn append(file: File, direct: bool, data: &[u8], lens: &[usize], cache_after: Option<usize>) {
        let mut out = Appender::new(file);
        if direct {
            out.bypass_cache();
        }
        let mut at = 0;
        for (k, &len) in lens.iter().enumerate() {
            if cache_after == Some(k) {
                out.flush().unwrap();
            }
            let end = (at + len).min(data.len());
            out.write_all(&data[at..end]).unwrap();
            at = end;
        }
        out.write_all(&data[at..]).unwrap();
        out.flush().unwrap();
    }

    #[test]
    fn every_byte_lands_in_order_direct_or_not() {
        let (data, lens) = data();
        for (direct, cache_after) in [(true, None), (false, None), (true, Some(3))] {
            let tmp = tempfile::NamedTempFile::new().unwrap();
            append(tmp.reopen().unwrap(), direct, &data, &lens, cache_after);
            assert!(std::fs::read(tmp.path()).unwrap() == data, "direct {direct}, cached after {cache_after:?}");
        }
    }

    #[test]
    fn a_file_the_device_cannot_take_directly_is_written_through_the_cache() {
        // A file position that is not block aligned makes a direct write fail with EINVAL.
        let (data, lens) = data();
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut file = tmp.reopen().unwrap();
        file.write_all(b"x").unwrap();
        assert_eq!(file.stream_position().unwrap(), 1);
        append(file, true, &data, &lens, None);
        let written = std::fs::read(tmp.path()).unwrap();
        assert!(written[0] == b'x' && written[1..] == data[..]);
    }

    #[test]
    fn dropping_an_unfinished_appender_stops_its_writer() {
        let (data, _) = data();
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut out = Appender::new(tmp.reopen().unwrap());
        out.bypass_cache();
        out.write_all(&data).unwrap();
        assert!(out.in_flight, "a block is being written");
        drop(out);
        let written = std::fs::read(tmp.path()).unwrap();
        assert!(written.len() < data.len() && data.starts_with(&written));
    }
}
