//! A hostile client harms no one, on the HTTP side (issue 31): a forwarding header of any bytes,
//! file names longer than the file system takes, and HTTP/2 connections kept open by answering
//! pings, tried against the real server binary from raw sockets (HTTP clients refuse to send
//! such bytes, and hide pings).
#![cfg(feature = "ssr")]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{Client, Server, STEP};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Sends a WebSocket upgrade of `/ws/{room}` carrying `forwarded` as its `X-Forwarded-For`, byte
/// for byte; returns the status and the connection (an accepted socket stays open with it).
async fn upgrade_forwarded_for(addr: SocketAddr, room: &str, forwarded: &[u8]) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET /ws/{room} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: "
    )
    .into_bytes();
    request.extend_from_slice(forwarded);
    request.extend_from_slice(b"\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(STEP, stream.read_u8()).await.expect("an answer in time").expect("an answer");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    (status, stream)
}

/// Defect 4: behind a trusted proxy, a client's claim made of bytes that are not ASCII before
/// the address the proxy appended leaves each client counted as itself, not as the proxy.
#[tokio::test]
async fn a_forwarding_header_of_any_bytes_counts_the_client_the_proxy_appended() {
    let server = Server::start(&["--trusted-proxy", "127.0.0.1", "--max-sockets-per-client", "1"]);
    let garbage = b"\xff\xfe caf\xc3\xa9, \x80\x81";
    let behind = |client: &str| [&garbage[..], b", ", client.as_bytes()].concat();
    let mut open = Vec::new();
    for client in ["192.0.2.1", "192.0.2.2"] {
        let (status, socket) = upgrade_forwarded_for(server.addr, "xff", &behind(client)).await;
        assert_eq!(status, 101, "{client} has its own count, not the proxy's");
        open.push(socket);
    }
    let (status, _) = upgrade_forwarded_for(server.addr, "xff", &behind("192.0.2.1")).await;
    assert_eq!(status, 429, "192.0.2.1 holds its one socket");
    // Garbage alone names no client: the proxy's own count, which holds one.
    let (status, socket) = upgrade_forwarded_for(server.addr, "xff", garbage).await;
    assert_eq!(status, 101);
    open.push(socket);
    let (status, _) = upgrade_forwarded_for(server.addr, "xff", b"\xff, 192.0.2.3 \xfe").await;
    assert_eq!(status, 429, "counted as the proxy, which holds its one socket");
}

/// Reads every response on `stream` until the server closes it: their status codes.
async fn statuses(mut stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u16> {
    let mut responses = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut responses))
        .await
        .expect("all answered within a minute")
        .unwrap();
    // No body here holds a status line (404s under /pkg are empty; the not-found page is HTML).
    let text = String::from_utf8_lossy(&responses);
    text.match_indices("HTTP/1.1 ").map(|(at, _)| text[at + 9..at + 12].parse().unwrap()).collect()
}

/// Defect 6: a file name longer than the file system takes (255 bytes on Linux), or with a NUL
/// byte, is not found, under `/pkg` and elsewhere, whatever the method or encoding; and thousands
/// of them pipelined on one connection log nothing.
#[tokio::test]
async fn a_file_name_too_long_for_the_file_system_is_not_found_and_logs_nothing() {
    // The site's folders must exist: the file system looks at a name's length only once it
    // finds the folder the name is in.
    let site = std::env::temp_dir().join(format!("duo-long-names-{}", std::process::id()));
    std::fs::create_dir_all(site.join("pkg")).unwrap();
    std::fs::create_dir_all(site.join("folder")).unwrap();
    std::fs::write(site.join("pkg/duo.css"), "x").unwrap();
    std::fs::write(site.join("robots.txt"), "x").unwrap();
    let server = Server::start_with_env(&[], &[("LEPTOS_SITE_ROOT", site.to_str().unwrap())]);
    // What exists is still served; a folder is no file.
    for (path, status) in [("/pkg/duo.css", 200), ("/robots.txt", 200), ("/folder", 404), ("/folder/", 404)] {
        assert_eq!(common::get(server.addr, path).await.status, status, "{path}");
    }
    let long = "a".repeat(300);
    let requests = [
        format!("GET /pkg/{long}.js HTTP/1.1\r\nHost: x\r\n"),
        format!("GET /pkg/{long}.wasm HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br, gzip\r\n"),
        format!("HEAD /pkg/{long}.css HTTP/1.1\r\nHost: x\r\n"),
        format!("GET /{long} HTTP/1.1\r\nHost: x\r\n"),
        format!("GET /{long}.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"),
        format!("HEAD /{long}/x HTTP/1.1\r\nHost: x\r\n"),
        // Not too long, but a name the file system refuses all the same.
        "HEAD /pkg/a%00b.js HTTP/1.1\r\nHost: x\r\n".to_owned(),
    ];
    let logged_before = server.log.lock().unwrap().len();
    for request in &requests {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(format!("{request}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
        assert_eq!(statuses(stream).await, [404], "{request}");
    }

    const PIPELINED: usize = 5000;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (reading, mut writing) = stream.into_split();
    let writer = tokio::spawn(async move {
        for n in 0..PIPELINED {
            let last = if n == PIPELINED - 1 { "Connection: close\r\n" } else { "" };
            let request = format!("{}{last}\r\n", requests[n % requests.len()]);
            writing.write_all(request.as_bytes()).await.unwrap();
        }
        writing
    });
    let answered = statuses(reading).await;
    drop(writer.await.unwrap());
    assert_eq!(answered.len(), PIPELINED);
    assert!(answered.iter().all(|&status| status == 404), "{:?}", answered.iter().find(|&&s| s != 404));

    // A refused upgrade logs a line of its own: once it shows, every line before it has too.
    let refused = Client::connect(&server, "barrier", Some("https://elsewhere.example")).await;
    assert!(refused.is_err());
    assert!(server.log_line("refused a signaling socket").is_some());
    let log = server.log.lock().unwrap();
    let logged: Vec<_> =
        log[logged_before..].iter().filter(|line| !line.contains("refused a signaling socket")).collect();
    assert!(logged.len() <= 5, "{} lines logged, e.g. {:?}", logged.len(), logged.first());
    std::fs::remove_dir_all(&site).unwrap();
}

/// An HTTP/2 frame: its type, flags, stream and payload.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const ACK: u8 = 1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    [&length[1..], &[kind, flags], &stream.to_be_bytes(), payload].concat()
}

/// The next frame, or `None` once the server has closed the connection.
async fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut head = [0; 9];
    stream.read_exact(&mut head).await.ok()?;
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload).await.ok()?;
    let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(Frame { kind: head[3], flags: head[4], stream: stream_id, payload })
}

/// An HTTP/2 connection (cleartext, with prior knowledge) that made one request and answers the
/// server's pings is closed once idle, as an idle HTTP/1 connection is: GOAWAY, then the end.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_even_while_it_answers_pings() {
    let server = Server::start(&["--header-timeout", "1"]);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let authority = server.addr.to_string();
    // GET http://{authority}/healthz, in HPACK: the static table's `:method GET` and `:scheme
    // http`, then `:path` and `:authority` as literals.
    let mut request = vec![0x82, 0x86, 0x44, 8];
    request.extend_from_slice(b"/healthz");
    request.extend_from_slice(&[0x41, authority.len() as u8]);
    request.extend_from_slice(authority.as_bytes());
    let preface = [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        &frame(SETTINGS, 0, 0, &[]),
        &frame(HEADERS, END_STREAM | END_HEADERS, 1, &request),
    ]
    .concat();
    stream.write_all(&preface).await.unwrap();
    let (mut status, mut answered, mut going_away) = (None, false, false);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(received) = read_frame(&mut stream).await {
            let Frame { kind, flags, stream: id, payload } = received;
            match kind {
                SETTINGS if flags & ACK == 0 => stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap(),
                PING if flags & ACK == 0 => stream.write_all(&frame(PING, ACK, 0, &payload)).await.unwrap(),
                // 0x88: the static table's `:status 200`.
                HEADERS if id == 1 => status = payload.first().copied(),
                DATA if id == 1 => answered |= flags & END_STREAM != 0,
                GOAWAY => going_away = true,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(status, Some(0x88), "answered with 200");
    assert!(answered, "the whole answer");
    assert!(closed.is_ok(), "the idle connection was still open after 10 s");
    assert!(going_away, "closed with a GOAWAY");
}
