//! SPDY/3 header blocks: a name/value list compressed with zlib, primed with the dictionary of
//! the SPDY/3 draft (§2.6.10.1). Each direction of a session has ONE zlib stream for all its
//! blocks, each block ending with a sync flush, so the contexts live as long as the session.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The 1423-byte header compression dictionary of the SPDY/3 draft §2.6.10.1 (protocol data).
pub const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

/// Largest decompressed header block accepted.
pub const MAX_BLOCK: usize = 256 * 1024;

/// Header names and values in wire order. Names are lowercase on the wire; several values of one
/// name travel NUL-joined in one value.
pub type Headers = Vec<(String, String)>;

/// Looks up a header by (lowercase) name.
pub fn get<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("zlib: {0}")]
    Zlib(String),
    #[error("header block asks for dictionary {0:#x}, not the spdy/3 dictionary")]
    WrongDictionary(u32),
    #[error("decompressed header block exceeds {MAX_BLOCK} bytes")]
    TooLarge,
    #[error("header block is truncated")]
    Truncated,
    #[error("header block has {0} trailing bytes")]
    Trailing(usize),
    #[error("header block has an empty name")]
    EmptyName,
    #[error("header block has a name or value that is not utf-8")]
    NotUtf8,
}

/// Inflates header blocks of one direction.
pub struct HeaderDecoder {
    inflate: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            inflate: Decompress::new(true),
        }
    }
}

impl HeaderDecoder {
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let raw = self.inflate(block)?;
        parse_block(&raw)
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(256.max(input.len() * 4));
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity());
            }
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - in0) as usize;
            let produced = self.inflate.total_out() - out0;
            input = &input[used..];
            match result {
                Ok(Status::StreamEnd) => {
                    // SPDY never ends the zlib stream: later blocks would have no context.
                    return Err(HeaderError::Zlib("zlib stream ended".into()));
                }
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(id) if id == dictionary_id() => {
                        self.inflate
                            .set_dictionary(DICTIONARY)
                            .map_err(|e| HeaderError::Zlib(e.to_string()))?;
                        continue;
                    }
                    Some(id) => return Err(HeaderError::WrongDictionary(id)),
                    None => return Err(HeaderError::Zlib(e.to_string())),
                },
            }
            if out.len() > MAX_BLOCK {
                return Err(HeaderError::TooLarge);
            }
            // Done when all input is consumed and zlib had room to spare: nothing is pending.
            if input.is_empty() && out.capacity() - out.len() >= 64 {
                return Ok(out);
            }
            if used == 0 && produced == 0 {
                return Err(HeaderError::Truncated);
            }
        }
    }
}

/// Adler-32 of the dictionary, the DICTID a zlib header names.
pub fn dictionary_id() -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in DICTIONARY {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// Deflates header blocks of one direction.
pub struct HeaderEncoder {
    deflate: Compress,
    primed: bool,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        HeaderEncoder {
            deflate: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl HeaderEncoder {
    pub fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, HeaderError> {
        if !self.primed {
            self.deflate
                .set_dictionary(DICTIONARY)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            self.primed = true;
        }
        let raw = serialize_block(headers);
        let mut input = &raw[..];
        let mut out = Vec::with_capacity(raw.len() + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity());
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.capacity() - out.len() >= 64 {
                break;
            }
        }
        Ok(out)
    }
}

fn serialize_block(headers: &Headers) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
        raw.extend_from_slice(value.as_bytes());
    }
    raw
}

fn parse_block(mut raw: &[u8]) -> Result<Headers, HeaderError> {
    fn take<'a>(raw: &mut &'a [u8], n: usize) -> Result<&'a [u8], HeaderError> {
        if raw.len() < n {
            return Err(HeaderError::Truncated);
        }
        let (head, rest) = raw.split_at(n);
        *raw = rest;
        Ok(head)
    }
    fn take_u32(raw: &mut &[u8]) -> Result<usize, HeaderError> {
        let b = take(raw, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let count = take_u32(&mut raw)?;
    // Each entry needs at least 8 bytes: a count larger than that is a lie, not a reason to
    // allocate.
    if count > raw.len() / 8 {
        return Err(HeaderError::Truncated);
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = take_u32(&mut raw)?;
        if n == 0 {
            return Err(HeaderError::EmptyName);
        }
        let name = std::str::from_utf8(take(&mut raw, n)?).map_err(|_| HeaderError::NotUtf8)?;
        let n = take_u32(&mut raw)?;
        let value = std::str::from_utf8(take(&mut raw, n)?).map_err(|_| HeaderError::NotUtf8)?;
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    if !raw.is_empty() {
        return Err(HeaderError::Trailing(raw.len()));
    }
    Ok(headers)
}
