//! Bounds-checked little-endian readers and writers shared by every binary format.

/// Data that ended early or held an impossible value.
#[derive(Debug, thiserror::Error)]
#[error("{what} at byte {offset}")]
pub struct DecodeError {
    /// What was wrong.
    pub what: String,
    /// Byte offset into the structure being decoded.
    pub offset: usize,
}

/// A cursor over untrusted bytes: every read checks the remaining length first.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Current offset from the start.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// An error located at the current position.
    pub fn error(&self, what: impl Into<String>) -> DecodeError {
        DecodeError { what: what.into(), offset: self.pos }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.error(format!("truncated: wanted {n} bytes, {} left", self.remaining())));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A u64 length that must fit in what is left of the input (`unit` bytes per item).
    pub fn len_u64(&mut self, unit: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        self.check_len(n, unit)
    }

    /// A u32 count that must fit in what is left of the input (`unit` bytes per item).
    pub fn len_u32(&mut self, unit: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as u64;
        self.check_len(n, unit)
    }

    fn check_len(&self, n: u64, unit: usize) -> Result<usize, DecodeError> {
        match n.checked_mul(unit as u64) {
            Some(total) if total <= self.remaining() as u64 => Ok(n as usize),
            _ => Err(self.error(format!("length {n} exceeds the {} bytes left", self.remaining()))),
        }
    }

    /// A 32-byte object id.
    pub fn id(&mut self) -> Result<crate::ObjectId, DecodeError> {
        Ok(crate::ObjectId(self.array()?))
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error(format!("{} unexpected trailing bytes", self.remaining())))
        }
    }
}

/// Little-endian appends onto a byte vector.
pub trait Writer {
    /// Appends a u16.
    fn put_u16(&mut self, v: u16);
    /// Appends a u32.
    fn put_u32(&mut self, v: u32);
    /// Appends a u64.
    fn put_u64(&mut self, v: u64);
}

impl Writer for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}
