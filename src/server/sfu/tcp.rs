//! ICE-TCP (RFC 6544, passive), for browsers on networks that block UDP: the forwarding unit
//! also listens on a TCP port, and each connection carries RFC 4571 frames (a 16-bit length,
//! then one datagram) that the socket task hands to the core as it does UDP datagrams.
//!
//! A connection costs one task. There are at most [`MAX_CONNECTIONS`], and from one client
//! address at most `--max-connections-per-client`; each is closed if its first frame takes
//! over [`FIRST_FRAME`], after [`IDLE`] without a frame (a browser checks its path every few
//! seconds), at a frame longer than any datagram, when a write waits over [`WRITE_WAIT`] (a
//! peer that stopped reading), or by the socket task as soon as it sends a frame that is
//! nobody's.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, Semaphore},
    time::{sleep, timeout},
};
use tokio_util::{
    bytes::Bytes,
    codec::{Framed, LengthDelimitedCodec},
};

use crate::server::limits::OpenPerClient;

/// Open ICE-TCP connections an instance holds; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// How long a new connection may take to send its first frame (a STUN check, at once).
const FIRST_FRAME: Duration = Duration::from_secs(3);
/// Silence after which a connection is closed.
const IDLE: Duration = Duration::from_secs(30);
/// How long one frame may wait to be written.
const WRITE_WAIT: Duration = Duration::from_secs(5);
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
    /// The connection from `peer` closed.
    Closed { peer: SocketAddr },
}

/// Accepts connections on `listener` until the socket task is gone; `per_client` bounds those
/// one client address holds.
pub(crate) fn spawn(listener: TcpListener, per_client: Arc<OpenPerClient>, events: mpsc::Sender<Event>) {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        while !events.is_closed() {
            let Ok((stream, peer)) = listener.accept().await else {
                // Out of file descriptors, say: wait rather than spin.
                sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Over a limit, the connection is dropped here, closing it.
            let Some(open) = per_client.open(peer.ip().to_canonical()) else { continue };
            let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
            let events = events.clone();
            tokio::spawn(async move {
                serve(stream, peer, &events).await;
                let _ = events.send(Event::Closed { peer }).await;
                drop((slot, open));
            });
        }
    });
}

async fn serve(stream: TcpStream, peer: SocketAddr, events: &mpsc::Sender<Event>) {
    // Media is late enough as it is: no Nagle delay.
    let _ = stream.set_nodelay(true);
    let (mut sink, mut incoming) = Framed::new(stream, codec()).split::<Bytes>();
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(WAITING);
    if events.send(Event::Opened { peer, frames }).await.is_err() {
        return;
    }
    // Reading and writing apart, so that a peer that stops reading cannot stop its own
    // checks from being read, nor hold the connection past `WRITE_WAIT`.
    let read = async {
        let mut wait = FIRST_FRAME;
        // Closed, silent too long, not RFC 4571 framing, or too long a frame: the end.
        while let Ok(Some(Ok(bytes))) = timeout(wait, incoming.next()).await {
            wait = IDLE;
            // A full queue drops the frame, as a full UDP socket buffer would.
            let _ = events.try_send(Event::Frame { peer, bytes: bytes.into() });
        }
    };
    let write = async {
        // `None`: the socket task closed it, as it sent a frame that was nobody's.
        while let Some(bytes) = outgoing.recv().await {
            if !matches!(timeout(WRITE_WAIT, sink.send(Bytes::from(bytes))).await, Ok(Ok(()))) {
                return;
            }
        }
    };
    tokio::select! {
        () = read => {}
        () = write => {}
    }
}

/// RFC 4571 framing: a 16-bit length before each datagram.
pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_type::<u16>().max_frame_length(MAX_FRAME).new_codec()
}
