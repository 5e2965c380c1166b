//! A hostile client harms no one (issue 15): each way a probe of the public server found to
//! hurt it, tried against the real server binary from real sockets.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::{join, pair, Client, Server};
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
    let server = Server::start(&["--rate-limit", "1000000", "--max-room-size", "2"]);
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
        for _ in 0..22 {
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
    let (status, stream) = upgrade(server, path, &server.addr.to_string(), &[]).await;
    assert_eq!(status, 101);
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

/// Sends an upgrade request with exactly these extra header lines; the response's status.
async fn upgrade_status(server: &Server, path: &str, host: &str, extra: &[&str]) -> u16 {
    upgrade(server, path, host, extra).await.0
}

/// Like [`upgrade_status`], keeping the connection (open, if the upgrade succeeded).
async fn upgrade(server: &Server, path: &str, host: &str, extra: &[&str]) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let extra: String = extra.iter().map(|line| format!("{line}\r\n")).collect();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The whole response head, so that what follows on the stream is WebSocket frames.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read_u8().await {
            Ok(byte) => head.push(byte),
            Err(_) => break, // closed before a whole head: the status line says what it can
        }
    }
    (String::from_utf8_lossy(&head[9..12]).parse().unwrap(), stream)
}

/// Item 8: origins compare by scheme, host and port; the upgrade's Host must be one of this
/// server's names (DNS rebinding); and a second Origin header is refused, not ignored.
#[tokio::test]
async fn origin_checks_compare_scheme_host_and_port_and_refuse_rebinding_and_duplicates() {
    let server = Server::start(&["--allowed-origin", "https://call.example"]);
    let own = server.addr.to_string();
    let ok = |origin: &str| format!("Origin: {origin}");
    assert_eq!(upgrade_status(&server, "/ws/o1", &own, &[&ok(&format!("http://{own}"))]).await, 101);
    let localhost = format!("localhost:{}", server.addr.port());
    assert_eq!(upgrade_status(&server, "/ws/o2", &localhost, &[&ok(&format!("http://{localhost}"))]).await, 101);
    assert_eq!(upgrade_status(&server, "/ws/o3", "call.example", &[&ok("https://call.example")]).await, 101);
    // The right host and port, the wrong scheme.
    assert_eq!(upgrade_status(&server, "/ws/o4", &own, &[&ok(&format!("https://{own}"))]).await, 403);
    assert_eq!(upgrade_status(&server, "/ws/o5", "call.example", &[&ok("http://call.example")]).await, 403);
    // A page of evil.example whose name was rebound to this server's address.
    assert_eq!(upgrade_status(&server, "/ws/o6", "evil.example", &[&ok("http://evil.example")]).await, 403);
    assert_eq!(upgrade_status(&server, "/ws/o7", "evil.example:80", &[]).await, 403);
    let twice = [ok(&format!("http://{own}")), ok("http://evil.example")];
    assert_eq!(upgrade_status(&server, "/ws/o8", &own, &[&twice[0], &twice[1]]).await, 403);
    assert_eq!(upgrade_status(&server, "/ws/o9", &own, &[&ok("null")]).await, 403);
    // Pages are served to any Host, so the page itself can say what is wrong.
    let page = common::get_over(TcpStream::connect(server.addr).await.unwrap(), "evil.example", "/").await;
    assert_eq!(page.status, 200);
}

/// Item 4: TURN credentials only for the site's own pages, valid an hour by default, and only
/// so many per client address.
#[tokio::test]
async fn turn_credentials_only_for_the_sites_pages_an_hour_and_so_many_per_client() {
    let server = Server::start(
        &[&common::STUN_AND_TURN[..], &["--turn-secret", "s3cret", "--turn-credentials-per-client", "3"]].concat(),
    );
    let own = format!("http://{}", server.addr);
    let turn_of = |welcome: &duo::protocol::Welcome| {
        welcome.ice_servers.iter().find(|s| s.urls.iter().any(|u| u.starts_with("turn:"))).cloned()
    };
    // A script with no Origin, to a made-up room: it may signal, but gets STUN only.
    let (_script, welcome) = join(&server, "made-up-room").await;
    assert_eq!(welcome.ice_servers.len(), 1);
    assert!(turn_of(&welcome).is_none(), "{welcome:?}");
    let error = Client::connect(&server, "made-up-room", Some("https://evil.example")).await.err().unwrap();
    assert_eq!(common::refusal_status(error), 403);

    let mut granted = Vec::new();
    for i in 0..4 {
        let mut page = Client::connect(&server, &format!("turn-{i}"), Some(&own)).await.unwrap();
        let Message::Welcome(welcome) = page.recv().await else { panic!("WELCOME expected") };
        granted.push(turn_of(&welcome));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let first = granted[0].as_ref().expect("the site's page gets TURN");
    let expiry: u64 = first.username.as_deref().unwrap().split(':').next().unwrap().parse().unwrap();
    assert!((now + 3590..=now + 3610).contains(&expiry), "an hour by default");
    assert!(granted[..3].iter().all(Option::is_some));
    assert!(granted[3].is_none(), "the fourth in a row from one address gets none");
}

/// Item 2: half-sent requests and silent connections are closed after --header-timeout, so a
/// normal visitor is still served.
#[tokio::test]
async fn half_sent_requests_are_closed_after_the_header_timeout() {
    let server = Server::start(&["--header-timeout", "1"]);
    let mut slow = Vec::new();
    for i in 0..50 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        } // the others send nothing at all
        slow.push(stream);
    }
    assert_eq!(common::http_get(&server, "/healthz").await, (200, "ok".to_owned()));
    for stream in &mut slow {
        let mut buf = [0u8; 256];
        // The server closes it (an empty read, or a 408 and then the end).
        let ended = tokio::time::timeout(Duration::from_secs(4), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        });
        ended.await.expect("closed within the header timeout (1 s) and a margin");
    }
}

/// Item 2: at most --max-connections open; past it, new ones are closed at once and counted,
/// and the server serves again as soon as some close.
#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_served_again_later() {
    let server = Server::start(&["--max-connections", "16", "--header-timeout", "30"]);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_closed_at_once(&server).await;
    held.clear();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(common::http_get(&server, "/healthz").await, (200, "ok".to_owned()));
    let metrics = common::get(server.metrics_addr, "/metrics").await.body;
    let refused = r#"duo_connections_refused_total{reason="max_connections"} "#;
    assert!(metrics.lines().any(|l| l.starts_with(refused) && !l.ends_with(" 0")), "{metrics}");
}

/// A kept-alive connection the server has answered (so it was accepted: the server accepts
/// connections in no particular order).
async fn answered_connection(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    stream
}

/// Asserts that the server closes a new connection at once.
async fn assert_closed_at_once(server: &Server) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed at once: {read:?}");
}

/// The status of `/healthz` for a client at another address, 127.0.0.2.
async fn status_for_another_client(server: &Server) -> u16 {
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let other = other.connect(server.addr).await.unwrap();
    common::get_over(other, server.addr, "/healthz").await.status
}

/// Item 2: a client address opening connections in a loop is cut off at accept, cheaply;
/// others are not affected.
#[tokio::test]
async fn a_client_opening_connections_too_fast_is_cut_off_at_accept() {
    let server = Server::start(&["--connections-per-second-per-client", "1"]); // bursts of 4
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(answered_connection(&server).await);
    }
    assert_closed_at_once(&server).await;
    assert_eq!(status_for_another_client(&server).await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(common::http_get(&server, "/healthz").await.0, 200, "a second later, a new one is taken");
}

/// Item 2: a client address holds at most --max-connections-per-client connections of any kind
/// (idle keep-alive ones too), so one client cannot take all of --max-connections.
#[tokio::test]
async fn a_client_holds_at_most_its_share_of_connections() {
    let server = Server::start(&["--max-connections-per-client", "3", "--header-timeout", "30"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(answered_connection(&server).await);
    }
    assert_closed_at_once(&server).await;
    assert_eq!(status_for_another_client(&server).await, 200);
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(common::http_get(&server, "/healthz").await.0, 200, "a freed place is taken again");
}

/// Item 2: a client address holds at most --max-sockets-per-client signaling sockets.
#[tokio::test]
async fn signaling_sockets_are_capped_per_client_address() {
    let server = Server::start(&["--max-sockets-per-client", "2"]);
    let (first, _) = join(&server, "cap-1").await;
    let (_second, _) = join(&server, "cap-2").await;
    let error = Client::connect(&server, "cap-3", None).await.err().expect("refused");
    assert_eq!(common::refusal_status(error), 429);
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    join(&server, "cap-3").await;
}

/// Item 2: a client address opens at most --sockets-per-minute-per-client sockets a minute, so
/// a reconnect loop costs the server little; behind a trusted proxy, clients count apart.
#[tokio::test]
async fn new_sockets_are_rate_limited_per_client_and_counted_apart_behind_a_trusted_proxy() {
    let server = Server::start(&["--sockets-per-minute-per-client", "3"]);
    for i in 0..3 {
        join(&server, &format!("rate-{i}")).await;
    }
    let error = Client::connect(&server, "rate-3", None).await.err().expect("refused");
    assert_eq!(common::refusal_status(error), 429);

    let server = Server::start(&["--trusted-proxy", "127.0.0.1", "--max-sockets-per-client", "1"]);
    let own = server.addr.to_string();
    let from = |ip: &str| format!("X-Forwarded-For: 6.6.6.6, {ip}");
    let (alice, _alice_socket) = upgrade(&server, "/ws/p1", &own, &[&from("192.0.2.1")]).await;
    let (bob, _bob_socket) = upgrade(&server, "/ws/p2", &own, &[&from("192.0.2.2")]).await;
    let (alice_again, _) = upgrade(&server, "/ws/p3", &own, &[&from("192.0.2.1")]).await;
    assert_eq!((alice, bob, alice_again), (101, 101, 429));
}

/// Item 3: shutdown ends by its deadline, whatever is still open: a half-sent request, a
/// signaling socket whose client neither reads nor answers.
#[tokio::test]
async fn shutdown_ends_by_its_deadline_whatever_is_open() {
    let mut server = Server::start(&["--header-timeout", "3600", "--idle-timeout", "3600"]);
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let _silent = raw_socket(&server, "/ws/never-answers").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// Item 11: out-of-range flag values are refused with the range, never a panic.
#[test]
fn out_of_range_flags_are_clear_errors_not_panics() {
    for (flag, value, range) in [
        ("--idle-timeout", "1e30", "from 1 to 86400"),
        ("--idle-timeout", "1e-10", "from 1 to 86400"),
        ("--shutdown-grace", "1e300", "from 0 to 3600"),
        ("--turn-credential-lifetime", "1e30", "from 60 to 604800"),
        ("--rate-limit", "0", "1..=1000000000"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_duo"))
            .args([&format!("{flag}={value}"), "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(range), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Item 9: readers that never read cannot pin the server's memory: each may have 1 MiB
/// waiting, all of them together --max-queued-mib. (Before: about 15 MB each, 143 MB for eight.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_pin_little_memory() {
    let server = Server::start(&["--rate-limit", "1000000", "--max-queued-mib", "4"]);
    let pid = server.pid();
    let before = rss_kib(pid);
    let frame = format!(r#"{{"message_type":"SDP","content":{{"type":"offer","sdp":"{}"}}}}"#, "x".repeat(60 * 1024));
    let mut senders = tokio::task::JoinSet::new();
    let mut never_read = Vec::new();
    for i in 0..8 {
        let (mut a, b) = pair(&server, &format!("pinned-{i}")).await;
        never_read.push(b);
        let frame = frame.clone();
        senders.spawn(async move {
            for _ in 0..300 {
                a.socket.feed(Ws::text(frame.as_str())).await.unwrap();
            }
            a.socket.flush().await.unwrap();
            // While the reader's queue is full, but for less than a stall (2 s), the sender is
            // told to slow down (issue 31); then the reader that never reads is dropped.
            loop {
                match a.recv().await {
                    Message::PeerLeft(_) => break,
                    Message::Error(error) => assert_eq!(error.code, ErrorCode::RateLimited),
                    other => panic!("{other:?}"),
                }
            }
        });
    }
    let mut peak = before;
    while !senders.is_empty() {
        peak = peak.max(rss_kib(pid));
        if let Ok(Some(done)) = tokio::time::timeout(Duration::from_millis(20), senders.join_next()).await {
            done.unwrap();
        }
    }
    let grew_mib = (peak - before) / 1024;
    assert!(grew_mib < 40, "eight readers that never read pinned {grew_mib} MiB");
}

/// Item 12: only what a page loads is served from /pkg (not the build's TypeScript
/// declarations), and peer ids are random: they do not count the server's connections.
#[tokio::test]
async fn pkg_serves_only_what_pages_load_and_peer_ids_count_nothing() {
    let site = std::env::temp_dir().join(format!("duo-site-{}", std::process::id()));
    std::fs::create_dir_all(site.join("pkg")).unwrap();
    for file in ["duo.js", "duo.wasm", "duo.css", "duo.d.ts", "duo_bg.wasm.d.ts"] {
        std::fs::write(site.join("pkg").join(file), "x").unwrap();
    }
    let server = Server::start_with_env(&[], &[("LEPTOS_SITE_ROOT", site.to_str().unwrap())]);
    let served = [("/pkg/duo.js", 200), ("/pkg/duo.wasm", 200), ("/pkg/duo.css", 200)];
    // Also as the file server would still understand them.
    let hidden = [
        "/pkg/duo.d.ts",
        "/pkg/duo_bg.wasm.d.ts",
        "//pkg/duo.d.ts",
        "/%70kg/duo.d.ts",
        "/pkg%2Fduo.d.ts",
        "/./pkg/duo.d.ts",
    ];
    for (path, status) in served.into_iter().chain(hidden.map(|path| (path, 404))) {
        assert_eq!(common::get(server.addr, path).await.status, status, "{path}");
    }
    std::fs::remove_dir_all(&site).unwrap();

    let mut ids = Vec::new();
    for i in 0..3 {
        let (_client, welcome) = join(&server, &format!("ids-{i}")).await;
        assert!(welcome.peer_id.0 < 1 << 53, "exact as a JavaScript number");
        ids.push(welcome.peer_id.0);
    }
    // Random 53-bit ids: two in a row this close together would happen once in 2^40 runs.
    assert!(ids.windows(2).all(|pair| pair[0].abs_diff(pair[1]) > 1 << 12), "{ids:?}");
}
