//! The practical ceiling for the benchmarks: a bare tokio-tungstenite relay with no protocol
//! at all. Each text frame on `/ws/{room}` goes to the other member of the room, unchecked.
//!
//!   cargo run --release --features bench --bin bare-relay -- 127.0.0.1:3401

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::tungstenite::{
    handshake::server::{Request, Response},
    protocol::WebSocketConfig,
    Message,
};

type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Message>)>>>>;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3401".into());
    let listener = TcpListener::bind(&addr).await.expect("bind");
    let rooms: Rooms = Arc::default();
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        // As the app and Node's `ws` do.
        let _ = stream.set_nodelay(true);
        next_id += 1;
        tokio::spawn(serve(stream, rooms.clone(), next_id));
    }
}

async fn serve(stream: tokio::net::TcpStream, rooms: Rooms, id: u64) {
    let mut room = String::new();
    // The error type is tungstenite's (an HTTP response), not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        room = request.uri().path().trim_start_matches("/ws/").to_owned();
        Ok(response)
    };
    // The same small buffers as the app: tungstenite's 128 KiB default read buffer would make
    // this "ceiling" pay far more memory per connection than it needs to.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(16 * 1024);
    let Ok(socket) = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await else {
        return;
    };
    let (tx, mut outbox) = mpsc::unbounded_channel();
    {
        let mut rooms = rooms.lock().unwrap();
        let members = rooms.entry(room.clone()).or_default();
        if members.len() >= 2 {
            return;
        }
        members.push((id, tx));
    }
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let rooms = rooms.lock().unwrap();
                    if let Some(other) = rooms.get(&room).and_then(|m| m.iter().find(|(peer, _)| *peer != id)) {
                        let _ = other.1.send(Message::Text(text));
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            Some(message) = outbox.recv() => {
                // Like the app: whatever is already queued goes out with one flush.
                let mut written = sink.feed(message).await;
                while let (Ok(()), Ok(more)) = (&written, outbox.try_recv()) {
                    written = sink.feed(more).await;
                }
                if written.is_err() || sink.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let mut rooms = rooms.lock().unwrap();
    if let Some(members) = rooms.get_mut(&room) {
        members.retain(|(peer, _)| *peer != id);
        if members.is_empty() {
            rooms.remove(&room);
        }
    }
}
