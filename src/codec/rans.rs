//! TEMPORARY stand-in until the real rANS coder lands.
#[derive(Debug, thiserror::Error)]
pub enum RansError {
    #[error("truncated")]
    Truncated,
}
pub fn encode(symbols: &[u8], _contexts: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(symbols, 3).unwrap_or_default()
}
pub fn decode(data: &[u8], _contexts: &[u8], out: &mut [u8]) -> Result<(), RansError> {
    let v = zstd::bulk::decompress(data, out.len()).map_err(|_| RansError::Truncated)?;
    if v.len() != out.len() {
        return Err(RansError::Truncated);
    }
    out.copy_from_slice(&v);
    Ok(())
}
pub struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}
impl BitWriter {
    pub fn with_capacity(c: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(c),
            acc: 0,
            n: 0,
        }
    }
    pub fn push(&mut self, v: u64, nbits: u32) {
        for i in 0..nbits {
            self.acc |= ((v >> i) & 1) << self.n;
            self.n += 1;
            if self.n == 64 {
                self.out.extend_from_slice(&self.acc.to_le_bytes());
                self.acc = 0;
                self.n = 0;
            }
        }
    }
    pub fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.extend_from_slice(&self.acc.to_le_bytes());
        }
        self.out
    }
}
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}
impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }
    pub fn read(&mut self, nbits: u32) -> Result<u64, RansError> {
        let mut v = 0;
        for i in 0..nbits {
            let byte = self.pos / 8;
            let b = *self.data.get(byte).ok_or(RansError::Truncated)?;
            v |= (((b >> (self.pos % 8)) & 1) as u64) << i;
            self.pos += 1;
        }
        Ok(v)
    }
}
