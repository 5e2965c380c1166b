//! Load generator for the signaling relay: N rooms of two peers over the real protocol. In each
//! room one peer sends CANDIDATE-shaped messages and the other echoes them back, with a window
//! of messages in flight; it reports relayed messages per second and round-trip percentiles.
//! `--idle` instead holds connections open (for measuring memory per connection), and
//! `start-time` measures how long a server takes from launch to its first accepted WebSocket.
//!
//!   cargo run --release --features bench --bin loadgen -- --url ws://127.0.0.1:3000 --rooms 100
//!
//! Works against any relay that forwards each text frame to the other member of `/ws/{room}`
//! (the app, bench/bare_relay.rs, bench/node-relay).

use std::{
    collections::VecDeque,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::{
    connect_async_with_config,
    tungstenite::{protocol::WebSocketConfig, Message, Utf8Bytes},
};

#[derive(Parser)]
#[command(about = "Load generator for the duo signaling relay")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Base WebSocket URL of the relay; rooms are `{url}/ws/{room}`.
    #[arg(long, default_value = "ws://127.0.0.1:3000")]
    url: String,
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
}

#[derive(Subcommand)]
enum Command {
    /// Launches a server and reports the time until it accepts a WebSocket at `--url`.
    StartTime {
        /// The server command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(Command::StartTime { command }) = &args.command {
        return start_time(&args.url, command).await;
    }
    if let Some(connections) = args.idle {
        return hold_idle(&args.url, connections).await;
    }
    run_load(&args).await;
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects like a browser would (no Nagle delay), with small buffers: tungstenite's default
/// 128 KiB read buffer, zero-filled on every read, would make the generator, not the relay
/// under test, the bottleneck.
async fn connect(url: &str, room: &str) -> Result<Socket, String> {
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0);
    let (socket, _) =
        connect_async_with_config(format!("{url}/ws/{room}"), Some(config), true).await.map_err(|e| e.to_string())?;
    Ok(socket)
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
        let (a, b) = match tokio::try_join!(connect(&args.url, &name), connect(&args.url, &name)) {
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
            args.window,
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

async fn send_and_time(
    socket: Socket,
    size: usize,
    window: usize,
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
    'run: while !stop.load(Ordering::Relaxed) {
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

async fn hold_idle(url: &str, connections: usize) {
    let run = std::process::id();
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        match connect(url, &format!("idle-{run}-{}", i / 2)).await {
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
