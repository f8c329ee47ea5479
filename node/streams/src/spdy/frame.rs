//! SPDY/3.1 frame codec: the eight-byte frame header, every frame type kubectl's peer
//! (moby/spdystream) sends or expects, and the zlib header blocks.
//!
//! All input is untrusted network data: every length is checked against the bytes present and
//! against limits before anything is allocated, and a malformed frame is an error, never a panic.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::headers::{HeaderDecoder, HeaderEncoder, HeaderError, Headers};

/// The only SPDY version spoken.
pub const VERSION: u16 = 3;
/// FLAG_FIN on SYN_STREAM, SYN_REPLY, HEADERS and DATA frames.
pub const FLAG_FIN: u8 = 0x01;

/// Largest control frame payload accepted. kubectl's control frames are a few hundred bytes;
/// the limit keeps a hostile peer from making the server buffer 16 MiB per header.
pub const MAX_CONTROL_PAYLOAD: usize = 64 * 1024;
/// Largest data frame payload accepted (the 24-bit length field allows 16 MiB).
pub const MAX_DATA_PAYLOAD: usize = 1024 * 1024;

/// RST_STREAM and GOAWAY status codes used here (SPDY/3 §2.4.2).
pub mod status {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
}

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value) triples.
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type this implementation does not know; SPDY/3 says to ignore it.
    Unknown {
        frame_type: u16,
    },
}

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("reading frame: {0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported spdy version {0}")]
    Version(u16),
    #[error("{kind} frame payload of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        kind: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("{kind} frame has a payload of {len} bytes, expected {expected}")]
    BadLength {
        kind: &'static str,
        len: usize,
        expected: &'static str,
    },
    #[error("{kind} frame for stream 0")]
    StreamZero { kind: &'static str },
    #[error("window update with a delta of 0 or above 2^31-1")]
    BadWindowDelta,
    #[error("header block: {0}")]
    Headers(#[from] HeaderError),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The fixed eight bytes that start every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub control: bool,
    /// Control: the frame type. Data: unused.
    pub frame_type: u16,
    /// Data: the stream id. Control: the version.
    pub stream_id_or_version: u32,
    pub flags: u8,
    pub length: usize,
}

impl FrameHeader {
    pub fn parse(b: [u8; 8]) -> FrameHeader {
        let control = b[0] & 0x80 != 0;
        let length = ((b[5] as usize) << 16) | ((b[6] as usize) << 8) | b[7] as usize;
        if control {
            FrameHeader {
                control,
                frame_type: u16::from_be_bytes([b[2], b[3]]),
                stream_id_or_version: u32::from(u16::from_be_bytes([b[0] & 0x7f, b[1]])),
                flags: b[4],
                length,
            }
        } else {
            FrameHeader {
                control,
                frame_type: 0,
                stream_id_or_version: be32(&b[..4]) & 0x7fff_ffff,
                flags: b[4],
                length,
            }
        }
    }

    /// Rejects lengths over the limits before the payload is read.
    pub fn check(&self) -> Result<(), FrameError> {
        if self.control {
            if self.stream_id_or_version != u32::from(VERSION) {
                return Err(FrameError::Version(self.stream_id_or_version as u16));
            }
            if self.length > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::TooLarge {
                    kind: "control",
                    len: self.length,
                    limit: MAX_CONTROL_PAYLOAD,
                });
            }
        } else if self.length > MAX_DATA_PAYLOAD {
            return Err(FrameError::TooLarge {
                kind: "data",
                len: self.length,
                limit: MAX_DATA_PAYLOAD,
            });
        }
        Ok(())
    }
}

/// Encodes and decodes frames for one session: it owns the two zlib contexts, which SPDY
/// shares across every header block of a direction for the whole connection.
#[derive(Default)]
pub struct Codec {
    decoder: HeaderDecoder,
    encoder: HeaderEncoder,
}

impl Codec {
    pub fn new() -> Codec {
        Codec::default()
    }

    /// Reads one frame. Returns `Ok(None)` on a clean end of stream between frames.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Frame>, FrameError> {
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < head.len() {
            let n = r.read(&mut head[got..]).await?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            got += n;
        }
        let header = FrameHeader::parse(head);
        header.check()?;
        let mut payload = vec![0u8; header.length];
        r.read_exact(&mut payload).await?;
        self.decode(header, Bytes::from(payload)).map(Some)
    }

    /// Decodes a frame from its header and complete payload.
    pub fn decode(&mut self, h: FrameHeader, p: Bytes) -> Result<Frame, FrameError> {
        h.check()?;
        if p.len() != h.length {
            return Err(FrameError::BadLength {
                kind: "any",
                len: p.len(),
                expected: "the header's length",
            });
        }
        if !h.control {
            if h.stream_id_or_version == 0 {
                return Err(FrameError::StreamZero { kind: "data" });
            }
            return Ok(Frame::Data {
                stream_id: h.stream_id_or_version,
                flags: h.flags,
                data: p,
            });
        }
        let need = |kind: &'static str, ok: bool, expected: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(FrameError::BadLength {
                    kind,
                    len: p.len(),
                    expected,
                })
            }
        };
        let stream = |kind: &'static str, id: u32| {
            if id == 0 {
                Err(FrameError::StreamZero { kind })
            } else {
                Ok(id)
            }
        };
        Ok(match h.frame_type {
            TYPE_SYN_STREAM => {
                need("syn_stream", p.len() >= 10, "at least 10")?;
                let stream_id = stream("syn_stream", be32(&p[0..4]) & 0x7fff_ffff)?;
                let headers = self.decoder.decode(&p[10..])?;
                Frame::SynStream {
                    stream_id,
                    associated_to: be32(&p[4..8]) & 0x7fff_ffff,
                    priority: p[8] >> 5,
                    flags: h.flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let kind = if h.frame_type == TYPE_SYN_REPLY {
                    "syn_reply"
                } else {
                    "headers"
                };
                need(kind, p.len() >= 4, "at least 4")?;
                let stream_id = stream(kind, be32(&p[0..4]) & 0x7fff_ffff)?;
                let headers = self.decoder.decode(&p[4..])?;
                if h.frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags: h.flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags: h.flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need("rst_stream", p.len() == 8, "8")?;
                Frame::RstStream {
                    stream_id: stream("rst_stream", be32(&p[0..4]) & 0x7fff_ffff)?,
                    status: be32(&p[4..8]),
                }
            }
            TYPE_SETTINGS => {
                need("settings", p.len() >= 4, "at least 4")?;
                let count = be32(&p[0..4]) as usize;
                need(
                    "settings",
                    count.checked_mul(8).and_then(|n| n.checked_add(4)) == Some(p.len()),
                    "4 + 8 per entry",
                )?;
                let entries = p[4..]
                    .chunks_exact(8)
                    .map(|e| {
                        (
                            e[0],
                            u32::from_be_bytes([0, e[1], e[2], e[3]]),
                            be32(&e[4..8]),
                        )
                    })
                    .collect();
                Frame::Settings {
                    flags: h.flags,
                    entries,
                }
            }
            TYPE_PING => {
                need("ping", p.len() == 4, "4")?;
                Frame::Ping { id: be32(&p) }
            }
            TYPE_GOAWAY => {
                need("goaway", p.len() == 8, "8")?;
                Frame::GoAway {
                    last_good_stream_id: be32(&p[0..4]) & 0x7fff_ffff,
                    status: be32(&p[4..8]),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need("window_update", p.len() == 8, "8")?;
                let delta = be32(&p[4..8]) & 0x7fff_ffff;
                if delta == 0 {
                    return Err(FrameError::BadWindowDelta);
                }
                Frame::WindowUpdate {
                    stream_id: be32(&p[0..4]) & 0x7fff_ffff,
                    delta,
                }
            }
            other => Frame::Unknown { frame_type: other },
        })
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        fn control(out: &mut BytesMut, ty: u16, flags: u8, payload: &[u8]) {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(ty);
            out.put_u8(flags);
            out.put_uint(payload.len() as u64, 3);
            out.put_slice(payload);
        }
        let mut p = BytesMut::new();
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                p.put_u32(*stream_id);
                p.put_u32(*associated_to);
                p.put_u8(priority << 5);
                p.put_u8(0);
                p.put_slice(&self.encoder.encode(headers)?);
                control(out, TYPE_SYN_STREAM, *flags, &p);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                p.put_u32(*stream_id);
                p.put_slice(&self.encoder.encode(headers)?);
                let ty = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                control(out, ty, *flags, &p);
            }
            Frame::RstStream { stream_id, status } => {
                p.put_u32(*stream_id);
                p.put_u32(*status);
                control(out, TYPE_RST_STREAM, 0, &p);
            }
            Frame::Settings { flags, entries } => {
                p.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    p.put_u8(*f);
                    p.put_uint(u64::from(*id), 3);
                    p.put_u32(*value);
                }
                control(out, TYPE_SETTINGS, *flags, &p);
            }
            Frame::Ping { id } => control(out, TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                p.put_u32(*last_good_stream_id);
                p.put_u32(*status);
                control(out, TYPE_GOAWAY, 0, &p);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                p.put_u32(*stream_id);
                p.put_u32(*delta);
                control(out, TYPE_WINDOW_UPDATE, 0, &p);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u8(*flags);
                out.put_uint(data.len() as u64, 3);
                out.put_slice(data);
            }
            Frame::Unknown { .. } => {}
        }
        Ok(())
    }
}
