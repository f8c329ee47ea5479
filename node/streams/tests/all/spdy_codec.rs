//! The SPDY/3.1 codec and session on their own: header blocks, malformed input, flow control.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use skiff_streams::spdy::flow::{INITIAL_WINDOW, RecvWindow, SendWindow};
use skiff_streams::spdy::frame::{FLAG_FIN, status};
use skiff_streams::spdy::headers::{DICTIONARY, dictionary_id};
use skiff_streams::spdy::{Codec, Frame, FrameError, HeaderDecoder, HeaderEncoder, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn dictionary_is_the_spdy3_one() {
    // The DICTID kubectl's (Go's) zlib header carries for the SPDY/3 dictionary.
    assert_eq!(DICTIONARY.len(), 1423);
    assert_eq!(dictionary_id(), 0xe3c6_a7c2);
}

#[test]
fn header_blocks_round_trip_through_one_shared_context() {
    let mut enc = HeaderEncoder::default();
    let mut dec = HeaderDecoder::default();
    let blocks = [
        headers(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ]),
        headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
        headers(&[]),
        headers(&[("x-long", &"v".repeat(100_000))]),
    ];
    for (i, block) in blocks.iter().enumerate() {
        let wire = enc.encode(block).unwrap();
        if i == 0 {
            // zlib header with FDICT and the dictionary's id, as SPDY/3 peers expect.
            assert_eq!(wire[0] & 0x0f, 8);
            assert_ne!(wire[1] & 0x20, 0);
            assert_eq!(wire[2..6], dictionary_id().to_be_bytes());
        }
        // Each block ends with a sync flush so the peer can decode it alone.
        assert_eq!(wire[wire.len() - 4..], [0, 0, 0xff, 0xff]);
        assert_eq!(&dec.decode(&wire).unwrap(), block);
    }
}

#[test]
fn header_blocks_from_another_zlib_decode() {
    // Two consecutive blocks from C zlib (CPython's zlib.compressobj(zdict=DICTIONARY),
    // Z_SYNC_FLUSH after each), as kubectl would send for a port-forward stream pair.
    let mut dec = HeaderDecoder::default();
    let first = hex(
        "78bbe3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff",
    );
    let second = hex("c2aa19540e2512d60b000000ffff");
    assert_eq!(
        dec.decode(&first).unwrap(),
        headers(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0")
        ])
    );
    assert_eq!(
        dec.decode(&second).unwrap(),
        headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
    );
}

#[test]
fn malformed_header_blocks_are_errors() {
    let raw_block = |raw: &[u8]| {
        // A valid zlib stream around arbitrary (malformed) header block bytes.
        let mut c = flate2::Compress::new(flate2::Compression::default(), true);
        c.set_dictionary(DICTIONARY).unwrap();
        let mut out = Vec::with_capacity(raw.len() + 128);
        c.compress_vec(raw, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        HeaderDecoder::default()
            .decode(&out)
            .unwrap_err()
            .to_string()
    };
    // Claims a million headers in 4 bytes.
    assert_eq!(
        raw_block(&1_000_000u32.to_be_bytes()),
        "header block is truncated"
    );
    // A name longer than the block.
    assert_eq!(
        raw_block(&[0, 0, 0, 1, 0, 0, 1, 0, b'a', 0, 0, 0, 0]),
        "header block is truncated"
    );
    assert_eq!(
        raw_block(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        "header block has an empty name"
    );
    assert_eq!(
        raw_block(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0]),
        "header block has a name or value that is not utf-8"
    );
    assert_eq!(
        raw_block(&[0, 0, 0, 0, 7]),
        "header block has 1 trailing bytes"
    );
    // Not zlib at all.
    let err = HeaderDecoder::default()
        .decode(b"this is not zlib")
        .unwrap_err();
    assert!(err.to_string().starts_with("zlib: "), "{err}");
    // zlib asking for some other dictionary.
    let mut other = flate2::Compress::new(flate2::Compression::default(), true);
    other.set_dictionary(b"another dictionary").unwrap();
    let mut out = Vec::with_capacity(128);
    other
        .compress_vec(&[0, 0, 0, 0], &mut out, flate2::FlushCompress::Sync)
        .unwrap();
    let err = HeaderDecoder::default().decode(&out).unwrap_err();
    assert!(
        err.to_string().contains("not the spdy/3 dictionary"),
        "{err}"
    );
}

async fn decode_bytes(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    let mut r = bytes;
    Codec::new().read_frame(&mut r).await
}

fn control(ty: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80, 3];
    f.extend_from_slice(&ty.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn frames_round_trip() {
    let frames = [
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 2,
            flags: FLAG_FIN,
            headers: headers(&[("streamtype", "stdin")]),
        },
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: headers(&[]),
        },
        Frame::RstStream {
            stream_id: 3,
            status: status::CANCEL,
        },
        Frame::Settings {
            flags: 0,
            entries: vec![(0, 7, 1 << 20), (1, 4, 100)],
        },
        Frame::Ping { id: 7 },
        Frame::GoAway {
            last_good_stream_id: 5,
            status: 0,
        },
        Frame::Headers {
            stream_id: 5,
            flags: 0,
            headers: headers(&[("a", "b")]),
        },
        Frame::WindowUpdate {
            stream_id: 0,
            delta: 1000,
        },
        Frame::Data {
            stream_id: 9,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"payload"),
        },
    ];
    let mut enc = Codec::new();
    let mut wire = BytesMut::new();
    for frame in &frames {
        enc.encode(frame, &mut wire).unwrap();
    }
    let mut dec = Codec::new();
    let mut r = &wire[..];
    for frame in &frames {
        assert_eq!(&dec.read_frame(&mut r).await.unwrap().unwrap(), frame);
    }
    assert!(dec.read_frame(&mut r).await.unwrap().is_none());
}

#[tokio::test]
async fn malformed_frames_are_errors() {
    let err = |r: Result<Option<Frame>, FrameError>| r.unwrap_err().to_string();
    assert_eq!(
        err(decode_bytes(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]).await),
        "unsupported spdy version 2"
    );
    assert_eq!(
        err(decode_bytes(&control(3, 0, &[0, 0, 0, 1])).await),
        "rst_stream frame has a payload of 4 bytes, expected 8"
    );
    assert_eq!(
        err(decode_bytes(&control(3, 0, &[0, 0, 0, 0, 0, 0, 0, 1])).await),
        "rst_stream frame for stream 0"
    );
    assert_eq!(
        err(decode_bytes(&control(9, 0, &[0, 0, 0, 1, 0, 0, 0, 0])).await),
        "window update with a delta of 0 or above 2^31-1"
    );
    assert_eq!(
        err(decode_bytes(&control(4, 0, &[0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1])).await),
        "settings frame has a payload of 12 bytes, expected 4 + 8 per entry"
    );
    assert_eq!(
        err(decode_bytes(&control(1, 0, &[0, 0, 0, 1])).await),
        "syn_stream frame has a payload of 4 bytes, expected at least 10"
    );
    // A SYN_STREAM whose header block is garbage.
    let mut syn = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    syn.extend_from_slice(b"garbage");
    assert!(err(decode_bytes(&control(1, 0, &syn)).await).starts_with("header block: zlib"));
    // A control frame announcing 16 MiB: refused before anything is read or allocated.
    assert_eq!(
        err(decode_bytes(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff]).await),
        "control frame payload of 16777215 bytes exceeds the limit of 65536"
    );
    // Cut short inside the payload or the header.
    assert!(err(decode_bytes(&[0, 0, 0, 1, 0, 0, 0, 10, 1, 2]).await).starts_with("reading frame"));
    assert!(err(decode_bytes(&[0x80, 3, 0]).await).starts_with("reading frame"));
    assert_eq!(
        err(decode_bytes(&[0, 0, 0, 0, 0, 0, 0, 1, b'x']).await),
        "data frame for stream 0"
    );
    // Unknown control frame types are skipped, as SPDY/3 asks.
    assert_eq!(
        decode_bytes(&control(42, 0, b"xyz")).await.unwrap(),
        Some(Frame::Unknown { frame_type: 42 })
    );
}

#[test]
fn receive_window_announces_consumed_data_at_half_window() {
    let mut w = RecvWindow::new();
    assert!(w.received(30_000));
    assert_eq!(w.consumed(30_000), None);
    assert!(w.received(10_000));
    assert_eq!(w.consumed(10_000), Some(40_000));
    assert_eq!(w.available(), i64::from(INITIAL_WINDOW));
    // Overrunning the window is reported (not enforced: spdystream ignores windows).
    assert!(!w.received(INITIAL_WINDOW as usize + 1));
}

#[tokio::test]
async fn send_window_blocks_until_reopened() {
    let w = SendWindow::new();
    assert_eq!(w.take(100_000).await, INITIAL_WINDOW as usize);
    let mut pending = Box::pin(w.take(10));
    assert!((&mut pending).now_or_never().is_none(), "window is closed");
    w.grow(4).unwrap();
    assert_eq!(pending.await, 4);
    assert!(
        SendWindow::new().grow(0x7fff_ffff).is_err(),
        "window past 2^31-1"
    );
    // A smaller initial window makes the window negative until updates cover it.
    w.set_initial(1000);
    assert_eq!(w.available(), 1000 - i64::from(INITIAL_WINDOW));
}

/// A raw SPDY client over an in-memory pipe, for session tests.
struct Client {
    io: DuplexStream,
    codec: Codec,
}

impl Client {
    fn start() -> (Client, Session) {
        let (client, server) = tokio::io::duplex(1 << 20);
        (
            Client {
                io: client,
                codec: Codec::new(),
            },
            Session::start(server),
        )
    }
    async fn send(&mut self, frame: Frame) {
        let mut wire = BytesMut::new();
        self.codec.encode(&frame, &mut wire).unwrap();
        self.io.write_all(&wire).await.unwrap();
    }
    async fn recv(&mut self) -> Frame {
        tokio::time::timeout(Duration::from_secs(30), self.codec.read_frame(&mut self.io))
            .await
            .expect("a frame arrives")
            .unwrap()
            .expect("session still open")
    }
}

fn syn(stream_id: u32, pairs: &[(&str, &str)]) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers: headers(pairs),
    }
}

#[tokio::test]
async fn session_replies_routes_data_and_answers_ping() {
    let (mut client, mut session) = Client::start();
    client.send(syn(1, &[("streamtype", "data")])).await;
    assert_eq!(
        client.recv().await,
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: vec![]
        }
    );
    let mut stream = session.accept().await.unwrap();
    assert_eq!(stream.header("streamtype"), Some("data"));

    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.recv().await, Frame::Ping { id: 1 });

    client
        .send(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"to the server"),
        })
        .await;
    let mut got = String::new();
    stream.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "to the server");

    stream.write_all(b"to the client").await.unwrap();
    drop(stream);
    assert_eq!(
        client.recv().await,
        Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"to the client")
        }
    );
    assert_eq!(
        client.recv().await,
        Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::new()
        }
    );
}

#[tokio::test]
async fn session_reopens_windows_as_data_is_consumed() {
    let (mut client, mut session) = Client::start();
    client.send(syn(1, &[])).await;
    client.recv().await; // SYN_REPLY
    let mut stream = session.accept().await.unwrap();
    let chunk = Bytes::from(vec![7u8; 20_000]);
    for _ in 0..2 {
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: chunk.clone(),
            })
            .await;
    }
    let mut buf = vec![0u8; 40_000];
    stream.read_exact(&mut buf).await.unwrap();
    let mut updates = Vec::new();
    while updates.len() < 2 {
        if let Frame::WindowUpdate { stream_id, delta } = client.recv().await {
            updates.push((stream_id, delta));
        }
    }
    updates.sort();
    assert_eq!(updates, [(0, 40_000), (1, 40_000)]);
}

#[tokio::test]
async fn session_rejects_bad_streams_and_ends_on_malformed_frames() {
    let (mut client, mut session) = Client::start();
    // DATA for a stream that was never opened.
    client
        .send(Frame::Data {
            stream_id: 5,
            flags: 0,
            data: Bytes::from_static(b"x"),
        })
        .await;
    assert_eq!(
        client.recv().await,
        Frame::RstStream {
            stream_id: 5,
            status: status::INVALID_STREAM
        }
    );
    // A malformed frame ends the session with GOAWAY(PROTOCOL_ERROR).
    client.io.write_all(&control(6, 0, &[1, 2])).await.unwrap();
    assert_eq!(
        client.recv().await,
        Frame::GoAway {
            last_good_stream_id: 0,
            status: status::PROTOCOL_ERROR
        }
    );
    let err = session.closed().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "spdy protocol error: ping frame has a payload of 2 bytes, expected 4"
    );
}

#[tokio::test]
async fn session_refuses_even_or_reused_stream_ids() {
    let (mut client, mut session) = Client::start();
    client.send(syn(3, &[])).await;
    client.recv().await;
    client.send(syn(1, &[])).await;
    assert_eq!(
        client.recv().await,
        Frame::GoAway {
            last_good_stream_id: 3,
            status: status::PROTOCOL_ERROR
        }
    );
    assert!(session.accept().await.is_some());
    assert!(session.closed().await.is_err());
}

#[tokio::test]
async fn session_keeps_the_send_window_of_a_client_that_keeps_windows() {
    let (mut client, mut session) = Client::start();
    // SETTINGS_INITIAL_WINDOW_SIZE = 10: the client keeps windows (kubectl's never does).
    client
        .send(Frame::Settings {
            flags: 0,
            entries: vec![(0, 7, 10)],
        })
        .await;
    client.send(syn(1, &[])).await;
    client.recv().await; // SYN_REPLY
    let mut stream = session.accept().await.unwrap();
    stream
        .write_all(b"more than ten bytes of output")
        .await
        .unwrap();
    drop(stream);
    let Frame::Data { data, flags, .. } = client.recv().await else {
        panic!("data expected");
    };
    assert_eq!((&data[..], flags), (&b"more than "[..], 0));
    client
        .send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 100,
        })
        .await;
    let mut rest = Vec::new();
    loop {
        let Frame::Data { data, flags, .. } = client.recv().await else {
            panic!("data expected");
        };
        rest.extend_from_slice(&data);
        if flags & FLAG_FIN != 0 {
            break;
        }
    }
    assert_eq!(rest, b"ten bytes of output");
}
