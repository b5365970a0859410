//! The agents' side of the WebSocket (RFC 6455, server role), framed here rather than by
//! tungstenite, so that an idle connection holds no buffer at all.
//!
//! Why: the relay holds ~20,000 agent sockets that each send about one small text frame a
//! second. tungstenite keeps a read buffer of at least `read_buffer_size` (or the largest
//! frame seen) allocated for every connection for as long as it lives, besides its own state;
//! that was the largest share of the relay's memory per connection (issue 14).
//!
//! How: [`AgentSocket::poll_message`] reads into a scratch buffer that belongs to the worker
//! thread, not to the connection (a read that has to wait took no bytes, so nothing needs
//! keeping), and takes every whole frame out of what came. Only bytes that are not a whole
//! frame yet, or frames that came in the same read after the one handed back, are copied into
//! the connection's own buffer, sized from the frame's header (checked against the message
//! limit before anything is allocated) and let go once it is used up. Fragments of a message
//! are joined in a second buffer that likewise exists only while the message is incomplete;
//! replies and frames to write are queued whole in a third, let go once written. Between frames
//! all three hold no allocation ([`AgentSocket::held_bytes`] is 0).
//!
//! What it checks (the server role): client frames are masked; no reserved bits (no extension
//! is ever negotiated); known opcodes only; control frames at most 125 bytes and never
//! fragmented; continuations only inside a fragmented message and no new message inside one;
//! a message at most `max_message` bytes in total; text (and a close reason) valid UTF-8; a
//! close code one a peer may send; a 64-bit length with its high bit clear. A ping is answered
//! with a pong carrying its payload; a close is answered with a close carrying its code, after
//! which nothing more is read. Server frames go out unmasked, each written through at once.

use futures_util::stream::Stream;
use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest payload a control frame (close, ping, pong) may carry.
const MAX_CONTROL: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Why a frame from the peer was refused, or the socket failed. Each refusal has the close
/// code RFC 6455 gives it in [`FrameError::close_code`].
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a client frame is not masked")]
    Unmasked,
    #[error("reserved bits set in a frame header (first byte {0:#04x}): no extension was agreed")]
    ReservedBits(u8),
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("a 64-bit payload length with its most significant bit set")]
    BadLength,
    #[error("a fragmented control frame")]
    FragmentedControl,
    #[error("a control frame of {0} bytes: at most 125")]
    ControlTooLong(u64),
    #[error("a continuation frame with no fragmented message to continue")]
    UnexpectedContinuation,
    #[error("a new message began before the fragmented one ended")]
    ExpectedContinuation,
    #[error("a message of {size} bytes, over the {max}-byte limit")]
    TooLarge { size: u64, max: usize },
    #[error("a text frame (or close reason) is not valid UTF-8: {0}")]
    BadUtf8(#[source] std::str::Utf8Error),
    #[error("a close frame with {0}")]
    BadClose(&'static str),
    #[error("the WebSocket is closed: nothing more can be sent")]
    Closed,
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// The close code to answer this with (RFC 6455, 7.4.1), or `None` if nobody is left to
    /// tell (the socket failed, or the close was already sent).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            FrameError::TooLarge { .. } => Some(1009),
            FrameError::BadUtf8(_) => Some(1007),
            FrameError::Io(_) | FrameError::Closed => None,
            _ => Some(1002),
        }
    }
}

/// A message from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message, whole (fragments joined), checked to be UTF-8.
    Text(String),
    Binary(Vec<u8>),
    /// A ping: its pong is already queued (and written if the socket took it).
    Ping,
    Pong,
    /// The peer's close, with its code if it gave one; the answer is queued (see
    /// [`AgentSocket::finish`]) and nothing more is read.
    Close(Option<u16>),
}

/// A frame header as it came, checked.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Bytes of the header itself: 6, 8 or 14 (masked).
    len: usize,
    /// Bytes of payload after it: within the message limit (control frames: at most 125).
    payload: usize,
}

impl Header {
    /// Bytes of the whole frame.
    fn frame_len(&self) -> usize {
        self.len + self.payload
    }
}

/// The server's end of one agent's WebSocket, over the connection hyper hands over after the
/// 101 (any byte stream in the tests).
pub struct AgentSocket<S> {
    io: S,
    /// Bytes read but not yet taken: a frame not whole yet, or frames that came after the one
    /// handed back. No allocation while there are none.
    partial: Vec<u8>,
    /// A fragmented message's payload so far. No allocation outside one.
    message: Vec<u8>,
    /// Whole frames to write, of which the first `written` bytes are written. No allocation
    /// once all are written.
    out: Vec<u8>,
    written: usize,
    max_message: usize,
    read_size: usize,
    /// The opcode (text or binary) of the fragmented message under way.
    fragmented: Option<u8>,
    /// Nothing more is read: the peer closed, the stream ended, or a frame was refused.
    read_done: bool,
    /// A close frame is queued or written (ours or the answer to the peer's): nothing is
    /// written after it.
    close_sent: bool,
}

thread_local! {
    /// The one read buffer of each worker thread, shared by every socket it polls (a socket
    /// uses it only inside one `poll_read` and what is done with the bytes right after).
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on the thread's scratch buffer, at least `size` bytes long.
fn with_scratch<R>(size: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    // taken out and put back rather than borrowed: a nested use (none is known) gets a fresh
    // buffer instead of a panic, and so does a thread whose locals are being torn down
    let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
    if buf.len() < size {
        buf.resize(size, 0);
    }
    let result = f(&mut buf[..size]);
    let _ = SCRATCH.try_with(|s| s.set(buf));
    result
}

/// Unmasks (or masks: the same XOR) a payload in place.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let mut four = [0u8; 4];
        four.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u32::from_ne_bytes(four) ^ word).to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// Close codes a peer may send (RFC 6455, 7.4: 1004-1006 and 1015 are never on the wire;
/// below 1000, 1016-2999 and 5000 up are not assigned to anyone).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A data message's payload as the caller gets it.
fn data_message(opcode: u8, payload: Vec<u8>) -> Result<Incoming, FrameError> {
    if opcode == OP_TEXT {
        String::from_utf8(payload)
            .map(Incoming::Text)
            .map_err(|e| FrameError::BadUtf8(e.utf8_error()))
    } else {
        Ok(Incoming::Binary(payload))
    }
}

/// What one read gave.
enum Read {
    /// A message for the caller.
    Message(Incoming),
    /// Bytes, but no whole message yet.
    More,
    /// The peer closed the stream.
    Eof,
}

impl<S> AgentSocket<S> {
    /// A socket over `io`, on which the WebSocket handshake is done. Messages over
    /// `max_message` bytes are refused; at most `read_size` bytes are read per call to the
    /// stream (held by the thread, not the connection).
    pub fn new(io: S, max_message: usize, read_size: usize) -> Self {
        Self {
            io,
            partial: Vec::new(),
            message: Vec::new(),
            out: Vec::new(),
            written: 0,
            max_message,
            read_size: read_size.max(1),
            fragmented: None,
            read_done: false,
            close_sent: false,
        }
    }

    /// Heap bytes this socket holds besides the stream itself: 0 between frames.
    pub fn held_bytes(&self) -> usize {
        self.partial.capacity() + self.message.capacity() + self.out.capacity()
    }

    /// Checks the header at the start of `b`; `None` if it is not all there yet.
    fn header(&self, b: &[u8]) -> Result<Option<Header>, FrameError> {
        let [b0, b1, ..] = *b else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits(b0));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        let control = match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
            OP_CLOSE | OP_PING | OP_PONG => true,
            other => return Err(FrameError::UnknownOpcode(other)),
        };
        if b1 & 0x80 == 0 {
            return Err(FrameError::Unmasked);
        }
        if control && !fin {
            return Err(FrameError::FragmentedControl);
        }
        let extended = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let len = 2 + extended + 4;
        let Some(head) = b.get(..len) else {
            return Ok(None);
        };
        let payload = match extended {
            2 => u64::from(u16::from_be_bytes([head[2], head[3]])),
            8 => {
                let mut eight = [0u8; 8];
                eight.copy_from_slice(&head[2..10]);
                u64::from_be_bytes(eight)
            }
            _ => u64::from(b1 & 0x7f),
        };
        if payload >> 63 != 0 {
            return Err(FrameError::BadLength);
        }
        if control && payload > MAX_CONTROL as u64 {
            return Err(FrameError::ControlTooLong(payload));
        }
        let so_far = match (opcode, self.fragmented) {
            (OP_CONTINUATION, None) => return Err(FrameError::UnexpectedContinuation),
            (OP_CONTINUATION, Some(_)) => self.message.len() as u64,
            (OP_TEXT | OP_BINARY, Some(_)) => return Err(FrameError::ExpectedContinuation),
            _ => 0,
        };
        // the limit is on the whole message, checked before a byte of it is kept
        let size = so_far.saturating_add(payload);
        let max = self.max_message;
        let Some(payload) = usize::try_from(payload).ok().filter(|_| size <= max as u64) else {
            return Err(FrameError::TooLarge { size, max });
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&head[len - 4..]);
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            len,
            payload,
        }))
    }

    /// Takes whole frames from the front of `bytes` until one gives the caller a message;
    /// returns it, if any, and how many bytes were taken.
    fn take_frames(&mut self, bytes: &mut [u8]) -> Result<(Option<Incoming>, usize), FrameError> {
        let mut used = 0;
        loop {
            let rest = &mut bytes[used..];
            let Some(head) = self.header(rest)? else {
                return Ok((None, used));
            };
            let Some(payload) = rest.get_mut(head.len..head.frame_len()) else {
                return Ok((None, used));
            };
            used += head.frame_len();
            if let Some(message) = self.frame(head, payload)? {
                return Ok((Some(message), used));
            }
            if self.read_done {
                return Ok((None, used));
            }
        }
    }

    /// One whole frame: what it gives the caller, if anything.
    fn frame(&mut self, head: Header, payload: &mut [u8]) -> Result<Option<Incoming>, FrameError> {
        unmask(payload, head.mask);
        match head.opcode {
            OP_TEXT | OP_BINARY if head.fin => {
                data_message(head.opcode, payload.to_vec()).map(Some)
            }
            OP_TEXT | OP_BINARY => {
                self.fragmented = Some(head.opcode);
                self.message = payload.to_vec();
                Ok(None)
            }
            OP_CONTINUATION => {
                self.message.extend_from_slice(payload);
                if !head.fin {
                    return Ok(None);
                }
                let Some(opcode) = self.fragmented.take() else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                data_message(opcode, std::mem::take(&mut self.message)).map(Some)
            }
            OP_PING => {
                if !self.close_sent {
                    self.queue(OP_PONG, payload);
                }
                Ok(Some(Incoming::Ping))
            }
            OP_PONG => Ok(Some(Incoming::Pong)),
            _ => {
                let code = match payload {
                    [] => None,
                    [_] => return Err(FrameError::BadClose("a one-byte payload")),
                    [hi, lo, reason @ ..] => {
                        let code = u16::from_be_bytes([*hi, *lo]);
                        if !close_code_allowed(code) {
                            return Err(FrameError::BadClose("a code no peer may send"));
                        }
                        std::str::from_utf8(reason).map_err(FrameError::BadUtf8)?;
                        Some(code)
                    }
                };
                self.read_done = true;
                if !self.close_sent {
                    // the answer echoes the peer's code (an empty close is answered empty)
                    let echo = code.map(u16::to_be_bytes);
                    self.queue(OP_CLOSE, echo.as_ref().map_or(&[][..], |c| &c[..]));
                    self.close_sent = true;
                }
                Ok(Some(Incoming::Close(code)))
            }
        }
    }

    /// Keeps bytes that are not taken yet until the next read, in a buffer sized for the whole
    /// frame they begin (its header was checked against the limit) so it is not grown read by
    /// read.
    fn keep(&mut self, rest: &[u8]) {
        if rest.is_empty() || self.read_done {
            self.partial = Vec::new();
            return;
        }
        // a header that is wrong is refused when it is taken, after the message before it
        let want = match self.header(rest) {
            Ok(Some(head)) => head.frame_len().max(rest.len()),
            _ => rest.len(),
        };
        let mut kept = Vec::with_capacity(want);
        kept.extend_from_slice(rest);
        self.partial = kept;
    }

    /// Takes a message from the bytes kept from earlier reads, if they hold one.
    fn take_kept(&mut self) -> Result<Option<Incoming>, FrameError> {
        let mut kept = std::mem::take(&mut self.partial);
        let (message, used) = self.take_frames(&mut kept)?;
        if used == 0 && !self.read_done {
            // still not a whole frame: keep the buffer, sized for the frame now if its header
            // has just come whole
            if let Some(head) = self.header(&kept)? {
                kept.reserve_exact(head.frame_len().saturating_sub(kept.len()));
            }
            self.partial = kept;
        } else {
            // a fresh buffer for what is left, so a large frame's buffer is not kept for a
            // small remainder
            self.keep(&kept[used..]);
        }
        Ok(message)
    }

    /// Gives up reading after a refusal: the buffers are let go, the error goes to the caller.
    fn fail(&mut self, e: FrameError) -> Poll<Option<Result<Incoming, FrameError>>> {
        self.read_done = true;
        self.partial = Vec::new();
        self.message = Vec::new();
        Poll::Ready(Some(Err(e)))
    }

    /// Queues one whole server frame (unmasked, final) to write.
    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        if self.out.is_empty() {
            self.out.reserve_exact(10 + payload.len());
        }
        self.out.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            self.out.push(len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            self.out.push(126);
            self.out.extend_from_slice(&short.to_be_bytes());
        } else {
            self.out.push(127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.out.extend_from_slice(payload);
    }

    /// Queues a data or ping frame, unless the socket is closing.
    fn queue_data(&mut self, opcode: u8, payload: &[u8]) -> Result<(), FrameError> {
        if self.close_sent {
            return Err(FrameError::Closed);
        }
        self.queue(opcode, payload);
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AgentSocket<S> {
    /// The next message from the peer; `None` once the stream has ended (after a close, the
    /// end of the stream, or an error returned before). Queued replies are written on the way.
    ///
    /// Cancel-safe: everything read is taken within the poll that read it.
    pub fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Incoming, FrameError>>> {
        // a pong (or close answer) still owed goes out first; if the socket cannot take it now
        // it is tried again on the next poll or write
        if let Poll::Ready(Err(e)) = self.poll_owed(cx) {
            // the stream is broken: what was queued will never go
            self.out = Vec::new();
            self.written = 0;
            return self.fail(e.into());
        }
        if self.read_done {
            return Poll::Ready(None);
        }
        if !self.partial.is_empty() {
            match self.take_kept() {
                Ok(Some(message)) => return self.deliver(cx, message),
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
        }
        loop {
            match self.poll_read_some(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Read::Message(message))) => return self.deliver(cx, message),
                Poll::Ready(Ok(Read::More)) => {}
                Poll::Ready(Ok(Read::Eof)) => {
                    // a frame cut off by the end of the stream is as good as none
                    self.read_done = true;
                    self.partial = Vec::new();
                    self.message = Vec::new();
                    return Poll::Ready(None);
                }
                Poll::Ready(Err(e)) => return self.fail(e),
            }
        }
    }

    /// Hands a message over, trying first to write what it queued (a pong, a close answer).
    fn deliver(
        &mut self,
        cx: &mut Context<'_>,
        message: Incoming,
    ) -> Poll<Option<Result<Incoming, FrameError>>> {
        // a failure here shows again on the next poll or write, which will have to write too
        let _ = self.poll_owed(cx);
        Poll::Ready(Some(Ok(message)))
    }

    /// One read into the thread's scratch buffer, and the frames taken out of it.
    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<Result<Read, FrameError>> {
        with_scratch(self.read_size, |scratch| {
            let mut buf = ReadBuf::new(scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(Read::Eof));
            }
            let bytes = &mut scratch[..n];
            let message = if self.partial.is_empty() {
                // the usual case: whole frames straight from the scratch, only a remainder kept
                let (message, used) = self.take_frames(bytes)?;
                self.keep(&bytes[used..]);
                message
            } else {
                self.partial.extend_from_slice(bytes);
                self.take_kept()?
            };
            Poll::Ready(Ok(message.map_or(Read::More, Read::Message)))
        })
    }

    /// Writes and flushes what is queued, if anything (a pong, a close answer, the rest of a
    /// write cut short), while the caller reads: flushed too, since over TLS a written record
    /// may wait in the TLS stream until then.
    fn poll_owed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Writes the queued frames; the buffer is let go once they are all written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes everything queued, then flushes the stream.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        poll_fn(|cx| {
            ready!(self.poll_write_out(cx))?;
            Pin::new(&mut self.io).poll_flush(cx)
        })
        .await?;
        Ok(())
    }

    /// Writes one text frame through to the stream, without flushing it (a batch is flushed
    /// once, by [`AgentSocket::flush`]). A write cut short by the caller (a timeout) leaves
    /// the rest of the frame queued, so frames stay whole on the wire.
    pub async fn feed_text(&mut self, text: &str) -> Result<(), FrameError> {
        self.queue_data(OP_TEXT, text.as_bytes())?;
        poll_fn(|cx| self.poll_write_out(cx)).await?;
        Ok(())
    }

    /// Writes one text frame and flushes.
    pub async fn send_text(&mut self, text: &str) -> Result<(), FrameError> {
        self.queue_data(OP_TEXT, text.as_bytes())?;
        self.flush().await
    }

    /// Writes an empty ping and flushes.
    pub async fn ping(&mut self) -> Result<(), FrameError> {
        self.queue_data(OP_PING, &[])?;
        self.flush().await
    }

    /// Writes our close frame with `code` and `reason` (cut to fit a control frame) and
    /// flushes; if a close was already queued (the answer to the peer's), only that is written.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), FrameError> {
        if !self.close_sent {
            let mut end = reason.len().min(MAX_CONTROL - 2);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            let mut payload = Vec::with_capacity(2 + end);
            payload.extend_from_slice(&code.to_be_bytes());
            payload.extend_from_slice(&reason.as_bytes()[..end]);
            self.queue(OP_CLOSE, &payload);
            self.close_sent = true;
        }
        self.flush().await
    }

    /// Writes whatever is still queued (the answer to the peer's close, a pong) and flushes.
    pub async fn finish(&mut self) -> Result<(), FrameError> {
        self.flush().await
    }
}

/// The messages from the peer (`StreamExt::next`), as [`AgentSocket::poll_message`] says.
impl<S: AsyncRead + AsyncWrite + Unpin> Stream for AgentSocket<S> {
    type Item = Result<Incoming, FrameError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{FutureExt as _, StreamExt as _};
    use std::collections::VecDeque;

    const MAX: usize = 100_000;
    /// The example mask of RFC 6455, 5.7.
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A peer that hands the socket its bytes in the pieces given (a piece larger than the
    /// read is cut), with "nothing yet" (a wake-up and `Pending`) before each piece, then the
    /// end of the stream; it keeps what the socket writes, taking at most `room` more bytes
    /// if that is set (then `Pending`: a peer that stopped reading).
    struct Peer {
        pieces: VecDeque<Vec<u8>>,
        waited: bool,
        written: Vec<u8>,
        room: Option<usize>,
    }

    impl Peer {
        fn new(pieces: impl IntoIterator<Item = Vec<u8>>) -> Self {
            Self {
                pieces: pieces.into_iter().collect(),
                waited: false,
                written: Vec::new(),
                room: None,
            }
        }
    }

    impl AsyncRead for Peer {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if !this.waited {
                this.waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.waited = false;
            if let Some(mut piece) = this.pieces.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    this.pieces.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Peer {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = this.room.map_or(buf.len(), |room| room.min(buf.len()));
            if n == 0 {
                return Poll::Pending;
            }
            if let Some(room) = &mut this.room {
                *room -= n;
            }
            this.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A client frame, masked with [`MASK`].
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            f.push(0x80 | 126);
            f.extend_from_slice(&short.to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&MASK);
        let mut body = payload.to_vec();
        unmask(&mut body, MASK);
        f.extend_from_slice(&body);
        f
    }

    fn text(s: &str) -> Vec<u8> {
        client_frame(true, OP_TEXT, s.as_bytes())
    }

    /// The server frames in `bytes`, as (first byte, payload); each must be unmasked.
    fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[1] & 0x80, 0, "a server frame is masked");
            let (len, at) = match bytes[1] {
                126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
                127 => {
                    let mut eight = [0u8; 8];
                    eight.copy_from_slice(&bytes[2..10]);
                    (u64::from_be_bytes(eight) as usize, 10)
                }
                n => (usize::from(n), 2),
            };
            frames.push((bytes[0], bytes[at..at + len].to_vec()));
            bytes = &bytes[at + len..];
        }
        frames
    }

    fn socket(pieces: impl IntoIterator<Item = Vec<u8>>) -> AgentSocket<Peer> {
        AgentSocket::new(Peer::new(pieces), MAX, 1024)
    }

    async fn next(ws: &mut AgentSocket<Peer>) -> Option<Result<Incoming, FrameError>> {
        tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("the socket should have answered")
    }

    async fn next_ok(ws: &mut AgentSocket<Peer>) -> Incoming {
        match next(ws).await {
            Some(Ok(m)) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn next_err(ws: &mut AgentSocket<Peer>) -> FrameError {
        match next(ws).await {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_masked_text_frame_in_one_read() {
        let mut ws = socket([text("Hello")]);
        assert_eq!(next_ok(&mut ws).await, Incoming::Text("Hello".into()));
        assert_eq!(ws.held_bytes(), 0, "an idle socket holds no buffer");
        assert!(next(&mut ws).await.is_none(), "the stream ended");
    }

    #[tokio::test]
    async fn a_frame_split_at_every_byte_offset() {
        // 300 bytes: a 16-bit length, so the header itself can be cut too
        let payload = "x".repeat(300);
        let frame = text(&payload);
        for cut in 1..frame.len() {
            let mut ws = socket([frame[..cut].to_vec(), frame[cut..].to_vec()]);
            assert_eq!(
                next_ok(&mut ws).await,
                Incoming::Text(payload.clone()),
                "cut at {cut}"
            );
            assert_eq!(ws.held_bytes(), 0, "cut at {cut}");
        }
        // and one byte at a time
        let mut ws = socket(frame.iter().map(|b| vec![*b]));
        assert_eq!(next_ok(&mut ws).await, Incoming::Text(payload));
        assert_eq!(ws.held_bytes(), 0);
    }

    #[tokio::test]
    async fn an_incomplete_frame_is_kept_in_a_buffer_sized_for_it() {
        let frame = text(&"y".repeat(500));
        let mut ws = socket([frame[..100].to_vec()]);
        // the first piece: no message yet, the bytes kept with room for the whole frame
        let pending = ws.next().now_or_never();
        assert!(pending.is_none(), "no message from part of a frame");
        let pending = ws.next().now_or_never();
        assert!(pending.is_none());
        assert_eq!(ws.partial.len(), 100);
        assert_eq!(ws.partial.capacity(), frame.len());
    }

    #[tokio::test]
    async fn two_frames_in_one_read() {
        let mut both = text("one");
        both.extend(text("two"));
        let mut ws = socket([both]);
        assert_eq!(next_ok(&mut ws).await, Incoming::Text("one".into()));
        assert!(
            ws.held_bytes() > 0,
            "the second frame is kept until asked for"
        );
        assert_eq!(next_ok(&mut ws).await, Incoming::Text("two".into()));
        assert_eq!(ws.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_frame_and_part_of_the_next_in_one_read() {
        let mut bytes = text("first");
        let second = text(&"z".repeat(200));
        bytes.extend_from_slice(&second[..7]);
        let mut ws = socket([bytes, second[7..].to_vec()]);
        assert_eq!(next_ok(&mut ws).await, Incoming::Text("first".into()));
        assert_eq!(next_ok(&mut ws).await, Incoming::Text("z".repeat(200)));
        assert_eq!(ws.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_frame_larger_than_a_read_is_assembled() {
        let payload = "w".repeat(5000);
        let mut ws = AgentSocket::new(Peer::new([text(&payload)]), MAX, 256);
        assert_eq!(next_ok(&mut ws).await, Incoming::Text(payload));
        assert_eq!(ws.held_bytes(), 0);
    }

    #[tokio::test]
    async fn fragments_are_joined_and_a_ping_between_them_is_answered() {
        let mut bytes = client_frame(false, OP_TEXT, b"Hel");
        bytes.extend(client_frame(false, OP_CONTINUATION, b"lo, "));
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_CONTINUATION, "wörld".as_bytes()));
        bytes.extend(client_frame(false, OP_BINARY, &[1, 2]));
        bytes.extend(client_frame(true, OP_CONTINUATION, &[3]));
        // in pieces of 5 bytes, so fragments straddle reads as well
        let mut ws = socket(bytes.chunks(5).map(<[u8]>::to_vec));
        assert_eq!(next_ok(&mut ws).await, Incoming::Ping);
        assert_eq!(
            next_ok(&mut ws).await,
            Incoming::Text("Hello, wörld".into())
        );
        assert_eq!(next_ok(&mut ws).await, Incoming::Binary(vec![1, 2, 3]));
        assert_eq!(ws.held_bytes(), 0);
        assert_eq!(server_frames(&ws.io.written), [(0x8A, b"p".to_vec())]);
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_from_its_header() {
        // the header alone announces it: refused before any of it is kept
        let frame = client_frame(true, OP_TEXT, &vec![b'a'; MAX + 1]);
        let mut ws = socket([frame[..20].to_vec()]);
        match next_err(&mut ws).await {
            FrameError::TooLarge { size, max } => {
                assert_eq!((size, max), (MAX as u64 + 1, MAX));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ws.held_bytes(), 0);
        assert!(
            next(&mut ws).await.is_none(),
            "nothing is read after a refusal"
        );

        // a 64-bit length far beyond memory: refused, nothing allocated
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        huge.extend_from_slice(&MASK);
        let mut ws = socket([huge]);
        assert!(matches!(
            next_err(&mut ws).await,
            FrameError::TooLarge { .. }
        ));
        assert_eq!(ws.held_bytes(), 0);
    }

    #[tokio::test]
    async fn fragments_over_the_limit_in_total_are_refused() {
        let half = vec![b'a'; MAX / 2 + 1];
        let mut bytes = client_frame(false, OP_BINARY, &half);
        bytes.extend(client_frame(true, OP_CONTINUATION, &half));
        let mut ws = socket([bytes]);
        match next_err(&mut ws).await {
            FrameError::TooLarge { size, .. } => assert_eq!(size, 2 * half.len() as u64),
            other => panic!("{other:?}"),
        }
        assert_eq!(ws.held_bytes(), 0);
    }

    #[tokio::test]
    async fn an_unmasked_frame_is_refused() {
        let mut frame = text("hi");
        frame[1] &= 0x7f;
        let mut ws = socket([frame]);
        let e = next_err(&mut ws).await;
        assert!(matches!(e, FrameError::Unmasked), "{e:?}");
        assert_eq!(e.close_code(), Some(1002));
    }

    #[tokio::test]
    async fn text_that_is_not_utf8_is_refused() {
        let mut ws = socket([client_frame(true, OP_TEXT, &[b'{', 0xff, 0xfe, b'}'])]);
        let e = next_err(&mut ws).await;
        assert!(matches!(e, FrameError::BadUtf8(_)), "{e:?}");
        assert_eq!(e.close_code(), Some(1007));

        // a character cut between two fragments is fine; a bad one in the whole is not
        let euro = "€".as_bytes();
        let mut bytes = client_frame(false, OP_TEXT, &euro[..1]);
        bytes.extend(client_frame(true, OP_CONTINUATION, &euro[1..]));
        bytes.extend(client_frame(false, OP_TEXT, &euro[..1]));
        bytes.extend(client_frame(true, OP_CONTINUATION, &euro[..1]));
        let mut ws = socket([bytes]);
        assert_eq!(next_ok(&mut ws).await, Incoming::Text("€".into()));
        assert!(matches!(next_err(&mut ws).await, FrameError::BadUtf8(_)));
    }

    #[tokio::test]
    async fn protocol_violations_are_refused() {
        let mut reserved = text("hi");
        reserved[0] |= 0x40;
        let mut unknown = text("hi");
        unknown[0] = 0x83;
        let mut high_bit = vec![0x82, 0x80 | 127];
        high_bit.extend_from_slice(&(1u64 << 63).to_be_bytes());
        high_bit.extend_from_slice(&MASK);
        let mut new_message_inside = client_frame(false, OP_TEXT, b"a");
        new_message_inside.extend(text("b"));
        let cases: [(&str, Vec<u8>); 7] = [
            ("reserved bits", reserved),
            ("unknown opcode", unknown),
            ("64-bit length, high bit", high_bit),
            ("fragmented ping", client_frame(false, OP_PING, b"")),
            ("126-byte ping", client_frame(true, OP_PING, &[0; 126])),
            (
                "lone continuation",
                client_frame(true, OP_CONTINUATION, b"a"),
            ),
            ("new message inside a fragmented one", new_message_inside),
        ];
        for (what, bytes) in cases {
            let mut ws = socket([bytes]);
            let e = next_err(&mut ws).await;
            assert_eq!(e.close_code(), Some(1002), "{what}: {e:?}");
            assert_eq!(ws.held_bytes(), 0, "{what}");
        }
        for (what, payload) in [
            ("one byte", vec![3]),
            ("code 1005", 1005u16.to_be_bytes().to_vec()),
            ("code 999", 999u16.to_be_bytes().to_vec()),
        ] {
            let mut ws = socket([client_frame(true, OP_CLOSE, &payload)]);
            let e = next_err(&mut ws).await;
            assert!(matches!(e, FrameError::BadClose(_)), "{what}: {e:?}");
        }
    }

    #[tokio::test]
    async fn a_ping_is_answered_with_its_payload_and_nothing_is_held_after() {
        let mut ws = socket([client_frame(true, OP_PING, b"are you there")]);
        assert_eq!(next_ok(&mut ws).await, Incoming::Ping);
        assert_eq!(
            server_frames(&ws.io.written),
            [(0x8A, b"are you there".to_vec())]
        );
        assert_eq!(ws.held_bytes(), 0);
        assert!(matches!(
            next_ok(&mut socket([client_frame(true, OP_PONG, b"")])).await,
            Incoming::Pong
        ));
    }

    #[tokio::test]
    async fn a_pong_the_socket_cannot_take_yet_goes_out_at_the_next_poll() {
        let mut ws = socket([client_frame(true, OP_PING, b"1"), text("after")]);
        ws.io.room = Some(0);
        assert_eq!(next_ok(&mut ws).await, Incoming::Ping);
        assert!(ws.io.written.is_empty());
        assert!(ws.held_bytes() > 0, "the pong waits");
        ws.io.room = None;
        assert_eq!(next_ok(&mut ws).await, Incoming::Text("after".into()));
        assert_eq!(server_frames(&ws.io.written), [(0x8A, b"1".to_vec())]);
        assert_eq!(ws.held_bytes(), 0);
    }

    #[tokio::test]
    async fn a_write_cut_short_is_finished_before_the_next_frame() {
        let mut ws = socket([]);
        ws.io.room = Some(100);
        let long = "c".repeat(1000);
        // the caller gives up on it (as a write timeout does) with 100 bytes written
        assert!(ws.feed_text(&long).now_or_never().is_none());
        assert_eq!(ws.io.written.len(), 100);
        ws.io.room = None;
        ws.close(1013, "write timed out").await.unwrap();
        let mut close = 1013u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"write timed out");
        assert_eq!(
            server_frames(&ws.io.written),
            [(0x81, long.into_bytes()), (0x88, close)]
        );
        assert_eq!(ws.held_bytes(), 0);
    }

    #[tokio::test]
    async fn the_peers_close_is_answered_with_its_code() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        // and a frame after it, never read
        let mut bytes = client_frame(true, OP_CLOSE, &payload);
        bytes.extend(text("too late"));
        let mut ws = socket([bytes]);
        assert_eq!(next_ok(&mut ws).await, Incoming::Close(Some(1000)));
        assert!(next(&mut ws).await.is_none());
        ws.finish().await.unwrap();
        assert_eq!(
            server_frames(&ws.io.written),
            [(0x88, 1000u16.to_be_bytes().to_vec())]
        );
        assert_eq!(ws.held_bytes(), 0);
        assert!(matches!(ws.send_text("no").await, Err(FrameError::Closed)));
        // our own close after it adds nothing
        ws.close(1001, "going").await.unwrap();
        assert_eq!(server_frames(&ws.io.written).len(), 1);

        let mut ws = socket([client_frame(true, OP_CLOSE, b"")]);
        assert_eq!(next_ok(&mut ws).await, Incoming::Close(None));
        ws.finish().await.unwrap();
        assert_eq!(server_frames(&ws.io.written), [(0x88, vec![])]);
    }

    #[tokio::test]
    async fn our_close_carries_its_code_and_a_reason_cut_to_fit() {
        let mut ws = socket([]);
        ws.close(1008, "replaced by a newer connection")
            .await
            .unwrap();
        let mut want = 1008u16.to_be_bytes().to_vec();
        want.extend_from_slice(b"replaced by a newer connection");
        assert_eq!(server_frames(&ws.io.written), [(0x88, want)]);

        let mut ws = socket([]);
        ws.close(1000, &"é".repeat(100)).await.unwrap();
        let frames = server_frames(&ws.io.written);
        assert!(frames[0].1.len() <= 125);
        assert!(std::str::from_utf8(&frames[0].1[2..]).is_ok());
        assert!(matches!(ws.ping().await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn lengths_of_16_and_64_bits_both_ways() {
        for len in [125, 126, 300, 65_535, 65_536, 70_000] {
            let payload = "L".repeat(len);
            let mut ws = socket([text(&payload)]);
            assert_eq!(
                next_ok(&mut ws).await,
                Incoming::Text(payload.clone()),
                "{len}"
            );
            ws.send_text(&payload).await.unwrap();
            ws.feed_text("after").await.unwrap();
            ws.flush().await.unwrap();
            assert_eq!(
                server_frames(&ws.io.written),
                [(0x81, payload.into_bytes()), (0x81, b"after".to_vec())],
                "{len}"
            );
            assert_eq!(ws.held_bytes(), 0, "{len}");
        }
        let mut ws = socket([]);
        ws.ping().await.unwrap();
        assert_eq!(server_frames(&ws.io.written), [(0x89, vec![])]);
    }

    /// tungstenite as the client, over an in-memory stream: text both ways, a ping from it
    /// answered, its close answered.
    #[tokio::test]
    async fn a_tungstenite_client_talks_to_it() {
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite_029::WebSocketStream;
        use tungstenite::protocol::Role;
        use tungstenite::Message;

        let (client_io, server_io) = tokio::io::duplex(64);
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let mut ws = AgentSocket::new(server_io, MAX, 1024);
        let wait = std::time::Duration::from_secs(5);

        let long = "t".repeat(3000);
        let sent = async {
            client.send(Message::text("hello")).await.unwrap();
            client.send(Message::text(long.clone())).await.unwrap();
            client
                .send(Message::Ping(b"p".to_vec().into()))
                .await
                .unwrap();
        };
        let got = async {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(ws.next().await.unwrap().unwrap());
            }
            got
        };
        let ((), got) = tokio::time::timeout(wait, async { tokio::join!(sent, got) })
            .await
            .unwrap();
        assert_eq!(
            got,
            [
                Incoming::Text("hello".into()),
                Incoming::Text(long),
                Incoming::Ping
            ]
        );
        assert_eq!(ws.held_bytes(), 0);

        ws.send_text("from the relay").await.unwrap();
        let pong = tokio::time::timeout(wait, client.next()).await.unwrap();
        assert!(matches!(pong, Some(Ok(Message::Pong(p))) if &p[..] == b"p"));
        let reply = tokio::time::timeout(wait, client.next()).await.unwrap();
        assert!(matches!(reply, Some(Ok(Message::Text(t))) if t.as_str() == "from the relay"));

        // the client closes; we answer; the client sees its close handshake complete
        let closing = async {
            client.close(None).await.unwrap();
            while let Some(m) = client.next().await {
                if m.is_err() {
                    break;
                }
            }
        };
        let answered = async {
            assert_eq!(ws.next().await.unwrap().unwrap(), Incoming::Close(None));
            ws.finish().await.unwrap();
            drop(ws);
        };
        tokio::time::timeout(wait, async { tokio::join!(closing, answered) })
            .await
            .unwrap();
    }
}
