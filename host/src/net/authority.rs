//! Repairs the `:authority` that etcd 3.4-era Go clients send, before HTTP/2 parsing sees it.
//!
//! Given `--endpoints=http://host:port` (and always with `etcdctl ... --cluster`, which uses
//! the members' client URLs), clientv3 3.4 dials `host:port` but sends the whole URL as the
//! HTTP/2 `:authority` pseudo-header: `http://host:port`. Go's server ignores it; the Rust
//! HTTP/2 stack (h2) rejects the request as malformed and resets the stream. Without this
//! filter, `etcdctl --endpoints=http://...` from Debian's etcd-client fails against Cairn.
//!
//! The filter sits between the TCP socket and the HTTP/2 server and rewrites, in HEADERS
//! frames, an `:authority` value `scheme://rest` to `scheme:x@rest`: a valid authority (the
//! scheme becomes userinfo, which nothing reads) of the **same length**. The length matters:
//! HPACK's dynamic table counts entry sizes, and the client's encoder and our decoder must
//! agree on them for later header references to resolve. A rewritten value is re-encoded as a
//! plain (non-Huffman) string and the frame length adjusted. Everything else passes through
//! byte for byte, and a connection that does not start with the HTTP/2 preface (HTTP/1.1) is
//! not touched at all.
//!
//! Being the first to see a connection's bytes, the filter also ends connections that never
//! begin to speak: a client that has not sent the HTTP/2 preface and a first frame (or any
//! HTTP/1.1 bytes) within [`HANDSHAKE_TIMEOUT`] is disconnected, as grpc-go's server does
//! with its connection timeout, instead of holding a socket and a task for ever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE: a rewritten frame must not outgrow it.
const MAX_FRAME: usize = 16_384;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// `:authority` in HPACK's static table.
const AUTHORITY_INDEX: u64 = 1;
/// How long a new connection may take to start speaking (grpc-go allows 120 s; a client that
/// connects and is silent for this long is not coming).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preface,
    /// Between frames.
    Frames,
    /// Passing through the rest of a frame that is not rewritten.
    Payload(usize),
    /// Not HTTP/2 with prior knowledge: pass everything.
    Passthrough,
}

/// A byte stream whose inbound HTTP/2 HEADERS frames get their `:authority` repaired.
pub struct AuthorityRepair<S> {
    inner: S,
    phase: Phase,
    /// Bytes read from `inner`, not yet examined.
    pending: Vec<u8>,
    /// Bytes examined and ready for the reader; `out_pos` of them already handed over.
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
    /// Where reads from `inner` land: allocated (and zeroed) once per connection, not on
    /// every read.
    chunk: Box<[u8]>,
    /// True once the client has started to speak (see [`HANDSHAKE_TIMEOUT`]).
    greeted: bool,
    /// The handshake deadline, armed on the first read (inside the runtime).
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> AuthorityRepair<S> {
    pub fn new(inner: S) -> Self {
        AuthorityRepair {
            inner,
            phase: Phase::Preface,
            pending: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            greeted: false,
            handshake: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves what can be decided from `pending` to `out`. Walks `pending` with a cursor and
    /// removes what it consumed once at the end, so a read of many frames moves the rest of
    /// the buffer once, not once per frame.
    fn examine(&mut self) {
        let mut pos = 0;
        loop {
            let rest = &self.pending[pos..];
            match self.phase {
                Phase::Passthrough => {
                    self.greeted |= !rest.is_empty();
                    self.out.extend_from_slice(rest);
                    pos = self.pending.len();
                    break;
                }
                Phase::Preface => {
                    let n = rest.len().min(PREFACE.len());
                    if rest[..n] != PREFACE[..n] {
                        self.phase = Phase::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        break;
                    }
                    self.out.extend_from_slice(PREFACE);
                    pos += PREFACE.len();
                    self.phase = Phase::Frames;
                }
                Phase::Payload(left) => {
                    if rest.is_empty() {
                        break;
                    }
                    let n = left.min(rest.len());
                    self.out.extend_from_slice(&rest[..n]);
                    pos += n;
                    self.phase = if n == left {
                        Phase::Frames
                    } else {
                        Phase::Payload(left - n)
                    };
                }
                Phase::Frames => {
                    if rest.len() < FRAME_HEADER {
                        break;
                    }
                    let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
                    self.greeted = true; // a first frame after the preface
                    if rest[3] != HEADERS {
                        self.out.extend_from_slice(&rest[..FRAME_HEADER]);
                        pos += FRAME_HEADER;
                        self.phase = Phase::Payload(len);
                        continue;
                    }
                    if rest.len() < FRAME_HEADER + len {
                        break;
                    }
                    let frame = &rest[..FRAME_HEADER + len];
                    match repair_headers_frame(frame) {
                        Some(fixed) => self.out.extend_from_slice(&fixed),
                        None => self.out.extend_from_slice(frame),
                    }
                    pos += FRAME_HEADER + len;
                }
            }
        }
        self.pending.drain(..pos);
    }
}

/// The frame with its `:authority` repaired, or `None` to pass it unchanged.
fn repair_headers_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let flags = frame[4];
    if flags & END_HEADERS == 0 {
        return None; // a header block continued in CONTINUATION frames: leave it alone
    }
    let payload = &frame[FRAME_HEADER..];
    let mut start = 0;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*payload.first()?);
        start = 1;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    let end = payload.len().checked_sub(pad)?;
    let block = payload.get(start..end)?;
    let fixed = repair_block(block)?;
    let mut new_payload = payload[..start].to_vec();
    new_payload.extend_from_slice(&fixed);
    new_payload.extend_from_slice(&payload[end..]);
    if new_payload.len() > MAX_FRAME {
        return None;
    }
    let len = (new_payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3]];
    out.extend_from_slice(&frame[3..FRAME_HEADER]);
    out.extend_from_slice(&new_payload);
    Some(out)
}

/// Reads an HPACK integer with an `n`-bit prefix at `pos`.
fn read_int(buf: &[u8], pos: &mut usize, n: u32) -> Option<u64> {
    let mask = (1u64 << n) - 1;
    let mut value = u64::from(*buf.get(*pos)?) & mask;
    *pos += 1;
    if value < mask {
        return Some(value);
    }
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        value = value.checked_add(u64::from(b & 0x7f).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
}

fn write_int(out: &mut Vec<u8>, first_bits: u8, n: u32, mut value: u64) {
    let mask = (1u64 << n) - 1;
    if value < mask {
        out.push(first_bits | value as u8);
        return;
    }
    out.push(first_bits | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an HPACK string literal at `pos`: its decoded bytes.
fn read_string(buf: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    let huffman = *buf.get(*pos)? & 0x80 != 0;
    let len = usize::try_from(read_int(buf, pos, 7)?).ok()?;
    let raw = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    if !huffman {
        return Some(raw.to_vec());
    }
    let mut decoded = Vec::new();
    httlib_huffman::decode(raw, &mut decoded, httlib_huffman::DecoderSpeed::FourBits).ok()?;
    Some(decoded)
}

/// `scheme://rest` → `scheme:x@rest` (same length), for a value that has a scheme.
fn repaired_authority(value: &[u8]) -> Option<Vec<u8>> {
    let at = value.windows(3).position(|w| w == b"://")?;
    let mut out = value[..at].to_vec();
    out.extend_from_slice(b":x@");
    out.extend_from_slice(&value[at + 3..]);
    Some(out)
}

/// The header block with `:authority` repaired, or `None` if nothing needed it (or the block
/// could not be parsed, in which case h2 will judge it).
fn repair_block(block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len() + 16);
    let mut changed = false;
    let mut pos = 0;
    while pos < block.len() {
        let first = block[pos];
        let begin = pos;
        let prefix_bits = if first & 0x80 != 0 {
            read_int(block, &mut pos, 7)?; // indexed field
            out.extend_from_slice(&block[begin..pos]);
            continue;
        } else if first & 0xc0 == 0x40 {
            6 // literal with incremental indexing
        } else if first & 0xe0 == 0x20 {
            read_int(block, &mut pos, 5)?; // dynamic table size update
            out.extend_from_slice(&block[begin..pos]);
            continue;
        } else {
            4 // literal without indexing, or never indexed
        };
        let index = read_int(block, &mut pos, prefix_bits)?;
        let is_authority = if index == 0 {
            read_string(block, &mut pos)? == b":authority"
        } else {
            index == AUTHORITY_INDEX
        };
        let name_end = pos;
        let value = read_string(block, &mut pos)?;
        match is_authority.then(|| repaired_authority(&value)).flatten() {
            Some(fixed) => {
                out.extend_from_slice(&block[begin..name_end]);
                write_int(&mut out, 0x00, 7, fixed.len() as u64);
                out.extend_from_slice(&fixed);
                changed = true;
            }
            None => out.extend_from_slice(&block[begin..pos]),
        }
    }
    changed.then_some(out)
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.greeted {
            let deadline = this
                .handshake
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(HANDSHAKE_TIMEOUT)));
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not start speaking HTTP in time",
                )));
            }
        } else {
            this.handshake = None;
        }
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever never formed a whole frame goes out as it came.
                if this.pending.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.out.append(&mut this.pending);
                continue;
            }
            let mut read = ReadBuf::new(&mut this.chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.pending.extend_from_slice(read.filled());
                        this.examine();
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityRepair<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A HEADERS frame on stream 1 with END_HEADERS and the given block.
    fn headers_frame(block: &[u8], extra_flags: u8) -> Vec<u8> {
        let len = (block.len() as u32).to_be_bytes();
        let mut f = vec![
            len[1],
            len[2],
            len[3],
            HEADERS,
            END_HEADERS | extra_flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(block);
        f
    }

    /// `:authority` as Go's encoder writes it: indexed name 1, Huffman value, incremental
    /// indexing; then `:path` from the static table.
    fn go_block(authority: &str) -> Vec<u8> {
        let mut value = Vec::new();
        httlib_huffman::encode(authority.as_bytes(), &mut value).expect("huffman");
        let mut block = Vec::new();
        write_int(&mut block, 0x40, 6, AUTHORITY_INDEX);
        write_int(&mut block, 0x80, 7, value.len() as u64);
        block.extend_from_slice(&value);
        block.push(0x84); // indexed: `:path /`
        block
    }

    async fn filtered(input: Vec<u8>) -> Vec<u8> {
        let mut repaired = AuthorityRepair::new(&input[..]);
        let mut out = Vec::new();
        repaired.read_to_end(&mut out).await.expect("read");
        out
    }

    fn authority_of(frame_block: &[u8]) -> Vec<u8> {
        let mut pos = 0;
        read_int(frame_block, &mut pos, 6).expect("name index");
        read_string(frame_block, &mut pos).expect("value")
    }

    #[tokio::test]
    async fn a_url_authority_becomes_a_valid_one_of_the_same_length() {
        // Proves the scheme of a URL-shaped :authority moves into userinfo, the value keeps its
        // length, the result parses as an authority, and the rest of the stream is intact.
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // empty SETTINGS
        input.extend(headers_frame(&go_block("http://127.0.0.1:2379"), 0));
        input.extend_from_slice(&[0, 0, 2, 0x0, 0x1, 0, 0, 0, 1, b'h', b'i']); // DATA
        let out = filtered(input).await;
        assert_eq!(
            &out[..PREFACE.len() + 9],
            &{
                let mut p = PREFACE.to_vec();
                p.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
                p
            }[..]
        );
        let frame = &out[PREFACE.len() + 9..];
        let len = u32::from_be_bytes([0, frame[0], frame[1], frame[2]]) as usize;
        let block = &frame[9..9 + len];
        let authority = authority_of(block);
        assert_eq!(authority, b"http:x@127.0.0.1:2379");
        assert_eq!(authority.len(), "http://127.0.0.1:2379".len());
        let parsed: http::uri::Authority = String::from_utf8(authority)
            .expect("utf8")
            .parse()
            .expect("valid authority");
        assert_eq!(parsed.host(), "127.0.0.1");
        assert_eq!(parsed.port_u16(), Some(2379));
        assert_eq!(block[block.len() - 1], 0x84, ":path kept");
        assert_eq!(
            &frame[9 + len..],
            &[0, 0, 2, 0x0, 0x1, 0, 0, 0, 1, b'h', b'i']
        );
    }

    #[tokio::test]
    async fn everything_else_passes_byte_for_byte() {
        // Proves a plain authority, padded and prioritized frames, HTTP/1.1 and a truncated
        // stream come through unchanged.
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&go_block("127.0.0.1:2379"), 0));
        let mut padded = vec![2, 0, 0, 0, 0, 0]; // pad length, then a priority block
        padded.extend(go_block("127.0.0.1:2379"));
        padded.extend_from_slice(&[0, 0]);
        input.extend(headers_frame(&padded, PADDED | PRIORITY));
        input.extend_from_slice(&[0, 0, 9, HEADERS]); // cut short
        assert_eq!(filtered(input.clone()).await, input);
        let http1 = b"POST /v3/kv/range HTTP/1.1\r\nHost: http://x\r\n\r\n".to_vec();
        assert_eq!(filtered(http1.clone()).await, http1);
    }

    #[tokio::test]
    async fn padded_and_prioritized_frames_are_repaired_too() {
        // Proves the padding and priority fields are kept around the repaired block.
        let mut payload = vec![3, 0, 0, 0, 1, 16];
        payload.extend(go_block("http://h:1"));
        payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&payload, PADDED | PRIORITY));
        let out = filtered(input).await;
        let frame = &out[PREFACE.len()..];
        let len = u32::from_be_bytes([0, frame[0], frame[1], frame[2]]) as usize;
        let payload = &frame[9..9 + len];
        assert_eq!(&payload[..6], &[3, 0, 0, 0, 1, 16]);
        assert_eq!(&payload[len - 3..], &[0, 0, 0]);
        assert_eq!(authority_of(&payload[6..len - 3]), b"http:x@h:1");
    }
}
