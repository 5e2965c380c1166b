//! ICE-TCP (RFC 6544, passive), for browsers on networks that block UDP: the forwarding unit
//! also listens on a TCP port, and each connection carries RFC 4571 frames (a 16-bit length,
//! then one datagram) that the socket task hands to the core as it does UDP datagrams.
//!
//! A connection costs one task. There are at most [`MAX_CONNECTIONS`]; each is closed if its
//! first frame takes over [`FIRST_FRAME`], after [`IDLE`] without a frame (a browser checks its
//! path every few seconds), at a frame longer than any datagram, or by the socket task as soon
//! as it sends a frame that is nobody's.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, Semaphore},
    time::{sleep, Instant},
};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Open ICE-TCP connections an instance holds; more are closed at once.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// How long a new connection may take to send its first frame (a STUN check, at once).
const FIRST_FRAME: Duration = Duration::from_secs(5);
/// Silence after which a connection is closed.
const IDLE: Duration = Duration::from_secs(30);
/// The longest frame: as long as the longest UDP datagram read.
const MAX_FRAME: usize = super::sockets::MAX_DATAGRAM;
/// Frames that may wait to be written to one connection; past that they are dropped, as a full
/// UDP socket buffer drops them.
const WAITING: usize = 256;

/// What the connections tell the socket task.
pub(crate) enum Event {
    /// A connection from `peer` opened; frames for it go to `frames` (dropped to close it).
    Opened { peer: SocketAddr, frames: mpsc::Sender<Vec<u8>> },
    /// A frame came from `peer`.
    Frame { peer: SocketAddr, bytes: Vec<u8> },
}

/// Accepts connections on `listener` until the socket task is gone.
pub(crate) fn spawn(listener: TcpListener, events: mpsc::Sender<Event>) {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        while !events.is_closed() {
            let Ok((stream, peer)) = listener.accept().await else {
                // Out of file descriptors, say: wait rather than spin.
                sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Over the limit, the connection is dropped here, closing it.
            let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
            let events = events.clone();
            tokio::spawn(async move {
                serve(stream, peer, &events).await;
                drop(slot);
            });
        }
    });
}

async fn serve(stream: TcpStream, peer: SocketAddr, events: &mpsc::Sender<Event>) {
    // Media is late enough as it is: no Nagle delay.
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, codec());
    let (frames, mut outgoing) = mpsc::channel(WAITING);
    if events.send(Event::Opened { peer, frames }).await.is_err() {
        return;
    }
    let idle = sleep(FIRST_FRAME);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            incoming = framed.next() => match incoming {
                Some(Ok(bytes)) => {
                    idle.as_mut().reset(Instant::now() + IDLE);
                    // A full queue drops the frame, as a full UDP socket buffer would.
                    let _ = events.try_send(Event::Frame { peer, bytes: bytes.into() });
                }
                // Closed, or not RFC 4571 framing, or too long a frame.
                _ => return,
            },
            frame = outgoing.recv() => match frame {
                Some(bytes) => {
                    if framed.send(bytes.as_slice()).await.is_err() {
                        return;
                    }
                }
                // The socket task closed it: it sent a frame that was nobody's.
                None => return,
            },
            () = &mut idle => return,
        }
    }
}

/// RFC 4571 framing: a 16-bit length before each datagram.
pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_type::<u16>().max_frame_length(MAX_FRAME).new_codec()
}
