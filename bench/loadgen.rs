//! Load generator for the signaling relay: N rooms of two peers over the real protocol. In each
//! room one peer sends CANDIDATE-shaped messages and the other echoes them back, with a window
//! of messages in flight; it reports relayed messages per second and round-trip percentiles.
//! `--pace` sends at a steady rate instead (well-behaved calls, for the soak); `--idle` holds
//! connections open (for measuring memory per connection); `start-time` measures how long a
//! server takes from launch to its first accepted WebSocket; `abuse` runs hostile clients.
//!
//!   cargo run --release --features bench --bin loadgen -- --url ws://127.0.0.1:3000 --rooms 100
//!
//! Works against any relay that forwards each text frame to the other member of `/ws/{room}`
//! (the app, bench/bare_relay.rs, bench/node-relay).

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::Mutex,
};
use tokio_tungstenite::{
    client_async_with_config,
    tungstenite::{protocol::WebSocketConfig, Message, Utf8Bytes},
    MaybeTlsStream,
};

#[derive(Parser)]
#[command(about = "Load generator for the duo signaling relay")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Base WebSocket URL of the relay; rooms are `{url}/ws/{room}`.
    #[arg(long, default_value = "ws://127.0.0.1:3000")]
    url: String,
    /// The second person of each room connects here instead: another instance sharing rooms
    /// with the first through Redis.
    #[arg(long)]
    second_url: Option<String>,
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Bytes per message (a trickled ICE candidate is about 600; an SDP about 4000).
    #[arg(long, default_value_t = 600)]
    size: usize,
    /// Messages in flight per room.
    #[arg(long, default_value_t = 4)]
    window: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Hold this many idle connections open instead, until killed.
    #[arg(long)]
    idle: Option<usize>,
    /// With `--idle`: connect as the app's pages do before Start (`join=later`, with a session)
    /// and never send `JOIN`. Only the app understands it.
    #[arg(long, requires = "idle")]
    join_later: bool,
    /// Round trips per second per room, one at a time, instead of as many as the window allows.
    #[arg(long)]
    pace: Option<f64>,
    /// Spread the rooms over this many client addresses (127.0.1.1 and up), as if each were
    /// its own person, instead of all from 127.0.0.1.
    #[arg(long, default_value_t = 1)]
    sources: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Launches a server and reports the time until it accepts a WebSocket at `--url`.
    StartTime {
        /// The server command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Hostile clients until killed, each starting over when the server drops it: floods of
    /// every frame kind, messages that never end, readers that never read, members ganging up
    /// on one who reads, half-sent HTTP requests, connection churn.
    Abuse {
        /// Clients of each kind.
        #[arg(long, default_value_t = 2)]
        each: usize,
        /// Half-sent requests held open.
        #[arg(long, default_value_t = 100)]
        half_open: usize,
        /// Only these kinds (default: all): flood (or flood-0 to flood-5), fragments,
        /// never-read, gang, churn.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// The one address all of them come from.
        #[arg(long, default_value = "127.0.0.2")]
        from: IpAddr,
    },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match &args.command {
        Some(Command::StartTime { command }) => return start_time(&args.url, command).await,
        Some(Command::Abuse { each, half_open, kinds, from }) => {
            return abuse(&args.url, *each, *half_open, kinds, *from).await
        }
        None => {}
    }
    if let Some(connections) = args.idle {
        return hold_idle(&args.url, connections, args.join_later).await;
    }
    run_load(&args).await;
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects like a browser would (no Nagle delay), with small buffers: tungstenite's default
/// 128 KiB read buffer, zero-filled on every read, would make the generator, not the relay
/// under test, the bottleneck.
async fn connect(url: &str, room: &str) -> Result<Socket, String> {
    connect_from(url, room, None).await
}

/// Like [`connect`], from the local address `source` (any of 127.0.0.0/8 works on loopback).
async fn connect_from(url: &str, room: &str, source: Option<IpAddr>) -> Result<Socket, String> {
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0);
    let stream = tcp_from(url, source).await?;
    let (socket, _) = client_async_with_config(format!("{url}/ws/{room}"), MaybeTlsStream::Plain(stream), Some(config))
        .await
        .map_err(|e| e.to_string())?;
    Ok(socket)
}

async fn tcp_from(url: &str, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let host = url.trim_start_matches("ws://").trim_end_matches('/');
    let server: SocketAddr = host.parse().map_err(|e| format!("{host}: {e}"))?;
    let socket = if server.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(|e| e.to_string())?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| e.to_string())?;
    }
    let stream = socket.connect(server).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// The client address of room `room` when rooms are spread over `sources` addresses.
fn source_of(room: usize, sources: u8) -> Option<IpAddr> {
    (sources > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (room % usize::from(sources)) as u8)))
}

/// A CANDIDATE message of exactly `size` bytes.
fn message(size: usize) -> String {
    let head = r#"{"message_type":"CANDIDATE","content":{"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:1 1 udp 2122260223 10.0.0.1 50000 typ host "#;
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

fn is_candidate(text: &str) -> bool {
    text.starts_with(r#"{"message_type":"CANDIDATE""#)
}

async fn run_load(args: &Args) {
    let run = std::process::id();
    let mut pairs = Vec::with_capacity(args.rooms);
    for room in 0..args.rooms {
        let name = format!("load-{run}-{room}");
        let source = source_of(room, args.sources);
        let second = args.second_url.as_deref().unwrap_or(&args.url);
        let (a, b) = match tokio::try_join!(connect_from(&args.url, &name, source), connect_from(second, &name, source))
        {
            Ok(pair) => pair,
            Err(error) => {
                eprintln!("connect failed: {error}");
                std::process::exit(1);
            }
        };
        pairs.push((a, b));
    }
    // Let every relay register both members before traffic starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let relayed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let rtts = Arc::new(Mutex::new(Vec::<u32>::new()));
    let mut echoers = Vec::new();
    let mut senders = Vec::new();
    let started = Instant::now();
    for (sender, echoer) in pairs {
        echoers.push(tokio::spawn(echo(echoer, stop.clone(), errors.clone())));
        senders.push(tokio::spawn(send_and_time(
            sender,
            args.size,
            if args.pace.is_some() { 1 } else { args.window },
            args.pace.map(|per_second| Duration::from_secs_f64(1.0 / per_second)),
            stop.clone(),
            relayed.clone(),
            errors.clone(),
            rtts.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let relayed = relayed.load(Ordering::Relaxed);
    // Senders stop at their next reply and hand in their round-trip times.
    let _ = tokio::time::timeout(Duration::from_secs(5), futures_util::future::join_all(senders)).await;
    for task in echoers {
        task.abort();
    }
    let mut rtts = std::mem::take(&mut *rtts.lock().await);
    rtts.sort_unstable();
    let pct =
        |p: f64| rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "RESULT relayed={relayed} per_sec={:.0} p50_us={} p99_us={} max_us={} errors={}",
        relayed as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        rtts.last().copied().unwrap_or(0),
        errors.load(Ordering::Relaxed)
    );
}

/// Echoes every CANDIDATE back (ignoring the relay's own messages such as WELCOME).
async fn echo(socket: Socket, stop: Arc<AtomicBool>, errors: Arc<AtomicU64>) {
    let (mut tx, mut rx) = socket.split();
    while let Some(frame) = rx.next().await {
        match frame {
            Ok(Message::Text(text)) if is_candidate(&text) => {
                if tx.send(Message::Text(text)).await.is_err() && !stop.load(Ordering::Relaxed) {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => {
                if !stop.load(Ordering::Relaxed) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_and_time(
    socket: Socket,
    size: usize,
    window: usize,
    every: Option<Duration>,
    stop: Arc<AtomicBool>,
    relayed: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    rtts: Arc<Mutex<Vec<u32>>>,
) {
    let (mut tx, mut rx) = socket.split();
    let mut in_flight = VecDeque::with_capacity(window);
    let mut local_rtts = Vec::new();
    // Built once and shared (reference-counted): the generator's time belongs to the relay.
    let frame = Utf8Bytes::from(message(size));
    let fail = |errors: &AtomicU64| errors.fetch_add(1, Ordering::Relaxed);
    // Paced rooms start spread over one period, so they do not all send at once.
    let mut next_send = Instant::now() + every.map_or(Duration::ZERO, |every| every.mul_f64(rand_unit()));
    'run: while !stop.load(Ordering::Relaxed) {
        if let Some(every) = every {
            tokio::time::sleep_until(next_send.into()).await;
            next_send += every;
        }
        while in_flight.len() < window {
            if tx.send(Message::Text(frame.clone())).await.is_err() {
                fail(&errors);
                break 'run;
            }
            in_flight.push_back(Instant::now());
        }
        // The relay keeps order, so the oldest message in flight is the one coming back.
        loop {
            match rx.next().await {
                Some(Ok(Message::Text(text))) if is_candidate(&text) => {
                    let sent = in_flight.pop_front().expect("a reply matches a message in flight");
                    local_rtts.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    relayed.fetch_add(2, Ordering::Relaxed); // there and back
                    break;
                }
                Some(Ok(_)) => {}
                _ => {
                    if !stop.load(Ordering::Relaxed) {
                        fail(&errors);
                    }
                    break 'run;
                }
            }
        }
        if local_rtts.len() >= 1024 {
            rtts.lock().await.append(&mut local_rtts);
        }
    }
    rtts.lock().await.append(&mut local_rtts);
}

/// A number in [0, 1) that differs between calls (enough to spread start times).
fn rand_unit() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(Instant::now()) >> 11) as f64 / (1u64 << 53) as f64
}

async fn abuse(url: &str, each: usize, half_open: usize, kinds: &[String], from: IpAddr) {
    let wanted = |kind: &str| kinds.is_empty() || kinds.iter().any(|k| k == kind);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..each {
        let oversized =
            Message::text(format!(r#"{{"message_type":"SDP","content":{{"sdp":"{}"}}}}"#, "x".repeat(70_000)));
        let floods = [
            Message::text("not json at all"),
            Message::text(message(600)),
            Message::binary(vec![0u8; 600]),
            Message::Ping(vec![0u8; 100].into()),
            Message::text(format!(r#"{{"message_type":"SDP","content":{{"type":"{}"}}}}"#, "y".repeat(30_000))),
            oversized,
        ];
        for (kind, frame) in floods.into_iter().enumerate() {
            if wanted("flood") || wanted(&format!("flood-{kind}")) {
                tasks.spawn(flood(url.to_owned(), format!("abuse-flood-{kind}-{i}"), frame, from));
            }
        }
        if wanted("fragments") {
            tasks.spawn(fragments(url.to_owned(), format!("abuse-fragments-{i}"), from));
        }
        if wanted("never-read") {
            tasks.spawn(never_read(url.to_owned(), format!("abuse-pinned-{i}"), from));
        }
        if wanted("gang") {
            tasks.spawn(gang(url.to_owned(), format!("abuse-gang-{i}"), from));
        }
        if wanted("churn") {
            tasks.spawn(churn(url.to_owned(), format!("abuse-churn-{i}"), from));
        }
    }
    for _ in 0..half_open {
        tasks.spawn(half_sent_request(url.to_owned(), from));
    }
    println!("ABUSING");
    tasks.join_all().await;
}

// Each abuser waits 10 ms after the server drops or refuses it: without that, a refused
// reconnect loop would measure this machine's CPU (shared with the server), not the server.

/// Sends `frame` as fast as the server takes it, reconnecting whenever it is dropped.
async fn flood(url: String, room: String, frame: Message, from: IpAddr) {
    loop {
        if let Ok(socket) = connect_from(&url, &room, Some(from)).await {
            let (mut tx, rx) = socket.split();
            // Read (and drop) what the server answers, so its writes never stall.
            let reader = tokio::spawn(rx.for_each(|_| async {}));
            while tx.send(frame.clone()).await.is_ok() {}
            reader.abort();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A message that never ends: a text frame marked "not final", then empty continuation frames
/// as fast as the server takes them, with a ping now and then; again whenever it is dropped.
async fn fragments(url: String, room: String, from: IpAddr) {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let fragment = |opcode| Message::Frame(Frame::message(Vec::new(), OpCode::Data(opcode), false));
    loop {
        if let Ok(socket) = connect_from(&url, &room, Some(from)).await {
            let (mut tx, rx) = socket.split();
            let reader = tokio::spawn(rx.for_each(|_| async {}));
            let mut next = Some(fragment(Data::Text));
            for i in 0u64.. {
                let frame = next.take().unwrap_or_else(|| {
                    if i % 1000 == 0 {
                        Message::Ping(Vec::new().into())
                    } else {
                        fragment(Data::Continue)
                    }
                });
                if tx.send(frame).await.is_err() {
                    break;
                }
            }
            reader.abort();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three members of a room of four sending the fourth, who reads everything at once, as much
/// as each one's own rate limit lets it (a burst of 200 small messages every 4 s, at the
/// default 50 a second). The reader must never be closed: if it is, a `GANG_TARGET_CLOSED`
/// line says so (the soak counts them).
async fn gang(url: String, room: String, from: IpAddr) {
    loop {
        if let Ok(mut target) = connect_from(&url, &room, Some(from)).await {
            let welcome = match target.next().await {
                Some(Ok(Message::Text(text))) => text,
                _ => continue,
            };
            let Some(id) = json_number(&welcome, "\"peer_id\":") else { continue };
            let mut senders = tokio::task::JoinSet::new();
            for _ in 0..3 {
                let (url, room) = (url.clone(), room.clone());
                senders.spawn(async move {
                    let Ok(socket) = connect_from(&url, &room, Some(from)).await else { return };
                    let (mut tx, rx) = socket.split();
                    let _reader = tokio::spawn(rx.for_each(|_| async {}));
                    let frame = Message::text(message(300).replace(r#""}}"#, &format!(r#""}},"to":{id}}}"#)));
                    loop {
                        for _ in 0..200 {
                            if tx.feed(frame.clone()).await.is_err() {
                                return;
                            }
                        }
                        if tx.flush().await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(4)).await;
                    }
                });
            }
            // Read promptly until the server closes the reader (which it must not) or the
            // senders are gone.
            loop {
                tokio::select! {
                    frame = target.next() => match frame {
                        Some(Ok(Message::Close(frame))) => {
                            println!("GANG_TARGET_CLOSED {frame:?}");
                            break;
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    None = senders.join_next() => break,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The number after `key` in a JSON text, for the one field a hostile client reads.
fn json_number(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

/// A pair in which one side sends big frames and the other never reads.
async fn never_read(url: String, room: String, from: IpAddr) {
    let frame = Message::text(format!(
        r#"{{"message_type":"SDP","content":{{"type":"offer","sdp":"{}"}}}}"#,
        "z".repeat(60_000)
    ));
    loop {
        let (sender, stuck) =
            (connect_from(&url, &room, Some(from)).await, connect_from(&url, &room, Some(from)).await);
        if let (Ok(mut sender), Ok(_stuck)) = (sender, stuck) {
            while let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(5), sender.send(frame.clone())).await {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Connects, reads WELCOME, leaves; again and again.
async fn churn(url: String, room: String, from: IpAddr) {
    loop {
        match connect_from(&url, &room, Some(from)).await {
            Ok(mut socket) => {
                let _ = socket.next().await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Half an HTTP request, held until the server closes it; then another.
async fn half_sent_request(url: String, from: IpAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        if let Ok(mut stream) = tcp_from(&url, Some(from)).await {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: duo\r\nX-Slow: ").await;
            let mut buf = [0u8; 1024];
            while let Ok(1..) = stream.read(&mut buf).await {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hold_idle(url: &str, connections: usize, join_later: bool) {
    let run = std::process::id();
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        let room = format!("idle-{run}-{}", i / 2);
        let room = if join_later { format!("{room}?join=later&session=idle-session-{run}-{i:010}") } else { room };
        match connect(url, &room).await {
            Ok(socket) => held.push(tokio::spawn(drain(socket))),
            Err(error) => {
                eprintln!("connect {i} failed: {error}");
                std::process::exit(1);
            }
        }
    }
    println!("HELD {connections}");
    // Until killed; the sockets keep answering pings.
    futures_util::future::join_all(held).await;
}

async fn drain(mut socket: Socket) {
    while let Some(Ok(_)) = socket.next().await {}
}

async fn start_time(url: &str, command: &[String]) {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts");
    loop {
        if connect(url, "start-probe").await.is_ok() {
            println!("RESULT start_ms={:.1}", started.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            eprintln!("the server did not accept a WebSocket within 30 s");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = child.kill().await;
}
