//! Decoding the resize channel: a stream of JSON `TerminalSize` objects, one per resize,
//! without framing (kubectl writes them with a JSON encoder, newline-terminated).

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::exec::TerminalSize;

/// Largest partial resize message buffered before it is thrown away as garbage.
const MAX_PENDING: usize = 4096;

#[derive(Debug, Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

impl ResizeDecoder {
    /// Feeds bytes and returns every complete size they finish.
    pub fn feed(&mut self, data: &[u8]) -> Vec<TerminalSize> {
        self.pending.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut stream =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<TerminalSize>();
        let mut consumed = 0;
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    consumed = stream.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // Not a size: drop everything buffered and start over.
                    consumed = self.pending.len();
                    break;
                }
                None => {
                    consumed = self.pending.len();
                    break;
                }
            }
        }
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_PENDING {
            self.pending.clear();
        }
        sizes
    }
}

/// Reads sizes from a byte stream into `tx` until the stream ends. A full channel drops sizes:
/// a resize that is not read yet is about to be superseded.
pub async fn pump<R: AsyncRead + Unpin>(mut r: R, tx: mpsc::Sender<TerminalSize>) {
    let mut decoder = ResizeDecoder::default();
    let mut buf = [0u8; 512];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        for size in decoder.feed(&buf[..n]) {
            let _ = tx.try_send(size);
        }
    }
}
