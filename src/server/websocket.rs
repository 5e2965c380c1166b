//! The signaling socket's WebSocket: the HTTP/1.1 upgrade, and reads that pay for every frame.
//!
//! The WebSocket library joins a fragmented message's frames before it hands the message on,
//! so frames that never complete a message (an endless run of empty continuation frames, kept
//! alive by pings) would never reach the rate limit in [`crate::server::signaling`]. Here the
//! bytes are watched as they are read, before the library sees them: every fragment is charged
//! to the connection's [`Flood`] as it arrives, and a message left unfinished for the idle
//! timeout ends the connection. What the socket hands on whole (unfragmented messages, pings,
//! pongs) is charged by the connection loop, which can refuse it.

use std::{
    io::{self, Cursor},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{
            frame::{
                coding::{Data, OpCode},
                FrameHeader,
            },
            Role, WebSocketConfig,
        },
    },
    WebSocketStream,
};

use crate::server::limits::{Admit, Flood};

/// An upgraded signaling socket.
pub(crate) type Socket = WebSocketStream<Metered<TokioIo<Upgraded>>>;

/// A checked WebSocket upgrade request (RFC 6455 section 4.2.1), not yet answered.
pub(crate) struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let refuse = |status: StatusCode, why: &'static str| Err((status, why));
        if !has_token(headers, header::CONNECTION, "upgrade") || !has_token(headers, header::UPGRADE, "websocket") {
            return refuse(StatusCode::UPGRADE_REQUIRED, "this is a WebSocket endpoint: upgrade to websocket");
        }
        if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
            return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13");
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return refuse(StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded");
        };
        Ok(Self { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answers 101 and runs `serve` on the socket once the client has it.
    pub(crate) fn on_upgrade<F>(
        self,
        config: WebSocketConfig,
        meter: Meter,
        serve: impl FnOnce(Socket) -> F + Send + 'static,
    ) -> Response
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Self { key, on_upgrade } = self;
        tokio::spawn(async move {
            // The client went away before the upgrade finished: nothing to serve.
            let Ok(upgraded) = on_upgrade.await else { return };
            let io = Metered { inner: TokioIo::new(upgraded), meter };
            serve(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await).await;
        });
        let accept = derive_accept_key(key.as_bytes());
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [(header::CONNECTION, "upgrade"), (header::UPGRADE, "websocket"), (header::SEC_WEBSOCKET_ACCEPT, &accept)],
        )
            .into_response()
    }
}

/// Whether a comma-separated header holds `token`, in any case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Why a socket's reads were cut off; the connection closes with 1008 and this reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Cut {
    #[error("too many messages")]
    Flood,
    #[error("message never finished")]
    Unfinished,
}

impl Cut {
    /// The one a read error carries, if it was cut off here.
    pub(crate) fn of(error: &io::Error) -> Option<Self> {
        error.get_ref()?.downcast_ref::<Self>().copied()
    }
}

/// A connection's read budget and what it has read of the current frame header.
pub(crate) struct Meter {
    /// The connection's rate limit, which the connection loop charges too.
    pub(crate) flood: Flood,
    /// How long a fragmented message may stay unfinished.
    unfinished_limit: Duration,
    /// Since when a fragmented message has been open.
    fragmented_since: Option<Instant>,
    /// Bytes of a frame header split across reads.
    head: [u8; MAX_HEADER],
    head_len: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// Set once reads were cut off: every read after fails the same way.
    cut: Option<Cut>,
}

/// The longest frame header: 2 bytes, 8 of length, 4 of mask.
const MAX_HEADER: usize = 14;

impl Meter {
    pub(crate) fn new(flood: Flood, unfinished_limit: Duration) -> Self {
        Self {
            flood,
            unfinished_limit,
            fragmented_since: None,
            head: [0; MAX_HEADER],
            head_len: 0,
            payload_left: 0,
            cut: None,
        }
    }

    /// Follows the frames in `bytes`, just read, charging the fragments among them.
    fn read(&mut self, mut bytes: &[u8], now: Instant) -> Result<(), Cut> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skipped = bytes.len().min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= skipped as u64;
                bytes = &bytes[skipped..];
                continue;
            }
            // A header, whole or continued from the last read.
            let had = usize::from(self.head_len);
            let taken = bytes.len().min(MAX_HEADER - had);
            self.head[had..had + taken].copy_from_slice(&bytes[..taken]);
            let mut cursor = Cursor::new(&self.head[..had + taken]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((header, payload))) => {
                    let used = cursor.position() as usize - had;
                    bytes = &bytes[used..];
                    self.head_len = 0;
                    self.payload_left = payload;
                    self.frame(&header, payload, now)?;
                }
                Ok(None) => {
                    self.head_len = (had + taken) as u8;
                    bytes = &bytes[taken..];
                }
                // A broken header: the library reads the same bytes and closes with 1002.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    fn frame(&mut self, header: &FrameHeader, payload: u64, now: Instant) -> Result<(), Cut> {
        if self.fragmented_since.is_some_and(|since| now.duration_since(since) >= self.unfinished_limit) {
            return Err(Cut::Unfinished);
        }
        let fragment = match header.opcode {
            OpCode::Data(Data::Continue) => {
                if header.is_final {
                    self.fragmented_since = None;
                }
                true
            }
            OpCode::Data(_) if !header.is_final => {
                self.fragmented_since.get_or_insert(now);
                true
            }
            _ => false,
        };
        if fragment && self.flood.admit(usize::try_from(payload).unwrap_or(usize::MAX), now) == Admit::Close {
            return Err(Cut::Flood);
        }
        Ok(())
    }
}

/// The socket's bytes, watched by its [`Meter`] as they are read. Writes pass straight through.
pub(crate) struct Metered<S> {
    inner: S,
    pub(crate) meter: Meter,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(cut) = this.meter.cut {
            return Poll::Ready(Err(io::Error::other(cut)));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err(cut) = this.meter.read(&buf.filled()[before..], Instant::now()) {
            this.meter.cut = Some(cut);
            return Poll::Ready(Err(io::Error::other(cut)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame header: `first` byte (FIN, opcode), masked, of `len` payload bytes.
    fn header(first: u8, len: usize) -> Vec<u8> {
        let mut bytes = vec![first];
        match len {
            0..=125 => bytes.push(0x80 | len as u8),
            126..=0xffff => {
                bytes.push(0x80 | 126);
                bytes.extend((len as u16).to_be_bytes());
            }
            _ => {
                bytes.push(0x80 | 127);
                bytes.extend((len as u64).to_be_bytes());
            }
        }
        bytes.extend([1, 2, 3, 4]);
        bytes
    }

    fn frame(first: u8, len: usize) -> Vec<u8> {
        let mut bytes = header(first, len);
        bytes.resize(bytes.len() + len, b'x');
        bytes
    }

    const TEXT_FIN: u8 = 0x81;
    const TEXT_MORE: u8 = 0x01;
    const CONTINUE_MORE: u8 = 0x00;
    const CONTINUE_FIN: u8 = 0x80;
    const PING: u8 = 0x89;

    fn new_meter(rate: u32) -> (Meter, Instant) {
        let now = Instant::now();
        (Meter::new(Flood::new(rate, now), Duration::from_secs(30)), now)
    }

    #[test]
    fn whole_messages_and_pings_are_left_to_the_connection_loop() {
        let (mut meter, now) = new_meter(1);
        let stream: Vec<u8> = (0..100).flat_map(|_| [frame(TEXT_FIN, 300), frame(PING, 4)].concat()).collect();
        assert_eq!(meter.read(&stream, now), Ok(()), "none of it is charged here");
    }

    #[test]
    fn every_fragment_is_charged_and_a_flood_of_them_is_cut() {
        let (mut meter, now) = new_meter(10); // a burst of 40
        let mut stream = frame(TEXT_MORE, 0);
        stream.extend((0..100).flat_map(|_| frame(CONTINUE_MORE, 0)));
        assert_eq!(meter.read(&stream, now), Err(Cut::Flood), "40 pass, 40 in debt, then cut");
    }

    #[test]
    fn headers_and_payloads_split_anywhere_across_reads_are_followed() {
        // A fragmented message of three frames (one with a 16-bit length) between whole ones.
        let stream = [
            frame(TEXT_FIN, 10),
            frame(TEXT_MORE, 200),
            frame(CONTINUE_MORE, 3),
            frame(CONTINUE_FIN, 0),
            frame(PING, 1),
        ]
        .concat();
        for chunk in 1..=stream.len() {
            let (mut meter, now) = new_meter(1); // a burst of 4
            for piece in stream.chunks(chunk) {
                meter.read(piece, now).unwrap();
            }
            // Three fragments of under 1 KiB cost 3: one token is left.
            assert_eq!(meter.flood.admit(1, now), Admit::Pass, "read {chunk} bytes at a time");
            assert_eq!(meter.flood.admit(1, now), Admit::Refuse { first: true }, "read {chunk} bytes at a time");
            assert!(meter.fragmented_since.is_none() && meter.head_len == 0 && meter.payload_left == 0);
        }
    }

    #[test]
    fn a_message_left_unfinished_is_cut_at_the_next_frame_after_the_limit() {
        let (mut meter, start) = new_meter(1000);
        meter.read(&frame(TEXT_MORE, 5), start).unwrap();
        let later = start + Duration::from_secs(29);
        meter.read(&frame(PING, 0), later).unwrap();
        meter.read(&frame(CONTINUE_MORE, 5), later).unwrap();
        assert_eq!(meter.read(&frame(PING, 0), start + Duration::from_secs(30)), Err(Cut::Unfinished));
        // Finished in time, the next message has a clock of its own.
        let (mut meter, start) = new_meter(1000);
        meter.read(&[frame(TEXT_MORE, 5), frame(CONTINUE_FIN, 5)].concat(), start).unwrap();
        meter.read(&frame(TEXT_MORE, 5), start + Duration::from_secs(40)).unwrap();
        assert_eq!(meter.read(&frame(PING, 0), start + Duration::from_secs(60)), Ok(()));
    }
}
