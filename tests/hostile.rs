//! A hostile client harms no one (issue 15): each way a probe of the public server found to
//! hurt it, tried against the real server binary from real sockets.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::{join, Client, Server};
use duo::protocol::{close_code, ErrorCode, Message, MAX_ERROR_CHARS};
use futures_util::SinkExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message as Ws};

fn error_of(message: Message) -> (ErrorCode, String) {
    match message {
        Message::Error(body) => (body.code, body.message),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

const SESSION: &str = "alice-0123456789abcdef";

/// Item 1: a connection that outlives its room (replaced, then slow to end) must not remove
/// the newer room of the same link when it finally goes.
#[tokio::test]
async fn a_leftover_connection_never_deletes_a_newer_room() {
    let server = Server::start(&["--rate-limit", "1000000"]);
    let mut stuck = Client::connect(&server, &format!("leftover?session={SESSION}"), None).await.unwrap();
    // Stuck never reads: answers to its bad frames fill the socket's buffers, so the server's
    // write to it stalls.
    let bad = format!(r#"{{"message_type":"SDP","content":{{"type":"{}"}}}}"#, "x".repeat(30 * 1024));
    let fill = async {
        for _ in 0..400 {
            stuck.socket.feed(Ws::text(bad.as_str())).await.unwrap();
        }
        stuck.socket.flush().await.unwrap();
    };
    // Once the server stops reading (stalled in its write), so does this send.
    let _ = tokio::time::timeout(Duration::from_secs(2), fill).await;
    // The same session comes back (taking stuck's place), then leaves: the room is empty.
    let (back, _) = join(&server, &format!("leftover?session={SESSION}")).await;
    drop(back);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut carol, welcome) = join(&server, "leftover").await;
    assert!(!welcome.peer_present);
    drop(stuck); // the stale connection finally ends
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_dave, welcome) = join(&server, "leftover").await;
    assert!(welcome.peer_present, "Dave finds Carol");
    assert!(matches!(carol.recv().await, Message::PeerJoined(_)));
    let mut eve = Client::connect(&server, "leftover", None).await.unwrap();
    assert_eq!(error_of(eve.recv().await).0, ErrorCode::RoomFull, "no third person on one link");
}

/// Item 5: binary frames and pings cost as much as messages, and a flood of them ends in 1008.
#[tokio::test]
async fn floods_of_binary_frames_and_pings_are_rate_limited_like_messages() {
    let server = Server::start(&["--rate-limit", "10"]);
    for flood in [Ws::binary(vec![0u8; 16]), Ws::Ping(vec![1u8; 16].into())] {
        let (mut a, _) = join(&server, "flood").await;
        let sender = tokio::spawn(async move {
            for _ in 0..2000 {
                if a.socket.feed(flood.clone()).await.is_err() {
                    break;
                }
            }
            let _ = a.socket.flush().await;
            a
        });
        let mut a = sender.await.unwrap();
        let (mut errors, mut closed) = (0, None);
        while closed.is_none() {
            match tokio::time::timeout(common::STEP, futures_util::StreamExt::next(&mut a.socket)).await {
                Ok(Some(Ok(Ws::Text(_)))) => errors += 1,
                Ok(Some(Ok(Ws::Close(frame)))) => closed = Some(frame.map(|f| f.code)),
                Ok(Some(Ok(_))) => {}
                other => panic!("expected a close, got {other:?}"),
            }
        }
        assert_eq!(closed, Some(Some(CloseCode::Policy)));
        // The burst (40) may each earn an ERROR, plus one rate_limited: never one per frame.
        assert!(errors <= 41, "{errors} ERROR frames for one flood");
    }
}

/// Item 6: an `ERROR` says why, briefly: it never echoes a big input back.
#[tokio::test]
async fn an_error_never_echoes_a_big_input() {
    let server = Server::start(&[]);
    let (mut a, _) = join(&server, "echo").await;
    let huge = "y".repeat(30 * 1024);
    for bad in [
        format!(r#"{{"message_type":"SDP","content":{{"type":"{huge}"}}}}"#),
        format!(r#"{{"message_type":"{huge}"}}"#),
        format!(r#"{{"message_type":"CANDIDATE","content":{{"candidate":"c","sdpMid":{{"{huge}":1}}}}}}"#),
        format!("{huge} not json"),
    ] {
        a.send_text(&bad).await;
        let text = a.recv_text().await;
        let (code, message) = error_of(serde_json::from_str(&text).unwrap());
        assert_eq!(code, ErrorCode::BadMessage);
        assert!(message.chars().count() <= MAX_ERROR_CHARS + 1, "{} characters", message.len());
        assert!(text.len() < 400, "an ERROR of {} bytes", text.len());
    }
}

/// Item 7: the limit refills, so a burst minutes (here: seconds) after another gets the
/// same treatment (an ERROR, no close); and a crowd of floods logs a few lines, not one each.
#[tokio::test]
async fn the_rate_limit_recovers_and_flood_logs_are_rate_limited() {
    let server = Server::start(&["--rate-limit", "4"]); // bursts of 16
    let (mut a, _) = join(&server, "bursty").await;
    let frame = r#"{"message_type":"CANDIDATE","content":null}"#;
    for _ in 0..2 {
        for _ in 0..26 {
            a.socket.feed(Ws::text(frame)).await.unwrap();
        }
        a.socket.flush().await.unwrap();
        assert_eq!(error_of(a.recv().await).0, ErrorCode::RateLimited);
        a.expect_silence(Duration::from_millis(300)).await;
        tokio::time::sleep(Duration::from_secs(4)).await; // the bucket refills
    }

    let server = Server::start(&["--rate-limit", "1"]);
    let mut floods = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (mut client, _) = join(&server, &format!("crowd-{i}")).await;
        floods.spawn(async move {
            for _ in 0..20 {
                let _ = client.socket.feed(Ws::text(frame)).await;
            }
            let _ = client.socket.flush().await;
            client.closed_with().await
        });
    }
    while let Some(closed) = floods.join_next().await {
        assert_eq!(closed.unwrap(), Some(CloseCode::Policy));
    }
    let lines = server.log_count("closing a flooding peer");
    assert!((1..=8).contains(&lines), "{lines} log lines for 30 floods");
}

/// A WebSocket upgraded by hand, to send frames no WebSocket library would.
async fn raw_socket(server: &Server, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// Reads server frames (unmasked) until a close frame; its code, or `None` if the connection
/// ended without one.
async fn close_code_of(stream: &mut TcpStream) -> Option<u16> {
    let read = async {
        loop {
            let opcode = stream.read_u8().await.ok()? & 0x0f;
            let len = match stream.read_u8().await.ok()? & 0x7f {
                126 => u64::from(stream.read_u16().await.ok()?),
                127 => stream.read_u64().await.ok()?,
                len => u64::from(len),
            };
            let mut payload = vec![0; len as usize];
            stream.read_exact(&mut payload).await.ok()?;
            if opcode == 8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    };
    tokio::time::timeout(common::STEP, read).await.expect("the server answers in time")
}

/// A client frame: FIN, `opcode`, masked with `mask` unless `None`.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode, payload.len() as u8 | if mask.is_some() { 0x80 } else { 0 }];
    match mask {
        Some(mask) => {
            frame.extend(mask);
            frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
        }
        None => frame.extend(payload),
    }
    frame
}

/// Item 10: protocol breaches end with the RFC 6455 close codes, so the client learns why.
#[tokio::test]
async fn protocol_violations_are_closed_with_1002_and_1007() {
    let server = Server::start(&[]);
    let cases: [(Vec<u8>, u16); 3] = [
        (frame(1, br#"{"message_type":"BYE"}"#, None), close_code::PROTOCOL_ERROR),
        (frame(1, &[b'"', 0xff, 0xfe, b'"'], Some([1, 2, 3, 4])), close_code::INVALID_PAYLOAD),
        (frame(3, b"??", Some([9, 8, 7, 6])), close_code::PROTOCOL_ERROR),
    ];
    for (i, (bytes, expected)) in cases.into_iter().enumerate() {
        let mut stream = raw_socket(&server, &format!("/ws/raw-{i}")).await;
        stream.write_all(&bytes).await.unwrap();
        assert_eq!(close_code_of(&mut stream).await, Some(expected), "case {i}");
    }
}
