//! Shared by the integration tests: the real server binary on a random port, and real
//! WebSocket clients speaking the protocol.
#![allow(dead_code)] // each test file uses its own part of this

pub mod browser;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use duo::protocol::Message;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, http, protocol::frame::coding::CloseCode, Message as Ws},
    MaybeTlsStream, WebSocketStream,
};

pub const STEP: Duration = Duration::from_secs(5);

/// A STUN and a TURN server for `WELCOME` to name (nothing listens there).
pub const STUN_AND_TURN: [&str; 4] = ["--ice-server", "stun:127.0.0.1:3478", "--ice-server", "turn:127.0.0.1:3478"];

/// The `duo` binary, started with `args`, listening on a free loopback port, with its
/// metrics on another.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Every log line so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// With [`Server::pair`]: the other instance, and which one the next client goes to.
    pub other: Option<Box<Server>>,
    next: std::sync::atomic::AtomicUsize,
    pub redis: Option<Redis>,
}

impl Server {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`Server::start`], with these environment variables set too.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        // A free loopback port, unless the test names an address.
        let addr = if args.contains(&"--addr") { &[][..] } else { &["--addr", "127.0.0.1:0"][..] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_duo"))
            .envs(env.iter().copied())
            .args(addr)
            .args([
                "--metrics-addr",
                "127.0.0.1:0",
                "--log-level",
                &std::env::var("DUO_TEST_LOG_LEVEL").unwrap_or("info".into()),
            ])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if std::env::var_os("DUO_TEST_LOG").is_some() {
                    eprintln!("server: {line}");
                }
                let addr = |after: &str| line.split(after).nth(1)?.split(['/', ' ']).next()?.parse::<SocketAddr>().ok();
                if let Some(addr) = addr("listening on http://").or_else(|| addr("listening on https://")) {
                    let _ = tx.send(addr);
                } else if let Some(addr) = addr("metrics on http://") {
                    let _ = tx.send(addr);
                }
                kept.lock().unwrap().push(line);
            }
        });
        let says = "the server says where it listens";
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect(says);
        let metrics_addr = rx.recv_timeout(Duration::from_secs(20)).expect(says);
        Self { child, addr, metrics_addr, log, other: None, next: Default::default(), redis: None }
    }

    /// Two instances sharing rooms through a Redis of their own, both ready; clients connect
    /// to one and the other in turn (the first to this one).
    pub fn pair(args: &[&str]) -> Self {
        let redis = Redis::start();
        let (mut first, second) = Self::sharing(&redis, args);
        first.other = Some(Box::new(second));
        first.redis = Some(redis);
        first
    }

    /// Two instances sharing rooms through `redis`, both ready.
    pub fn sharing(redis: &Redis, args: &[&str]) -> (Self, Self) {
        let url = redis.url();
        let args = [args, &["--redis", &url]].concat();
        let (first, second) = (Self::start(&args), Self::start(&args));
        first.wait_until_ready();
        second.wait_until_ready();
        (first, second)
    }

    /// Waits for `/readyz` to say 200 (with Redis: once the instance listens on it).
    pub fn wait_until_ready(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while readyz(self.addr) != 200 {
            assert!(std::time::Instant::now() < deadline, "{} never became ready", self.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `/readyz` status.
    pub fn readyz(&self) -> u16 {
        readyz(self.addr)
    }

    /// The first log line containing `text`, waiting a little for it.
    pub fn log_line(&self, text: &str) -> Option<String> {
        for _ in 0..100 {
            if let Some(line) = self.log.lock().unwrap().iter().find(|line| line.contains(text)) {
                return Some(line.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The WebSocket URL of `path`; of a pair, on each instance in turn.
    pub fn url(&self, path: &str) -> String {
        let addr = match &self.other {
            Some(other) if self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 1 => other.addr,
            _ => self.addr,
        };
        format!("ws://{addr}{path}")
    }

    /// Sends SIGKILL and waits for the process to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many log lines so far contain `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|line| line.contains(text)).count()
    }

    /// Sends the signal `name` (`TERM`, `HUP`, …) to the process.
    pub fn signal(&self, name: &str) {
        assert!(Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().unwrap().success());
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub socket: Socket,
}

/// Two peers in `room`, after the first has heard that the second joined.
pub async fn pair(server: &Server, room: &str) -> (Client, Client) {
    let (mut a, _) = join(server, room).await;
    let (b, _) = join(server, room).await;
    assert!(matches!(a.recv().await, Message::PeerJoined(_)));
    (a, b)
}

/// Connects to `/ws/{room}` and returns the client with the server's WELCOME.
pub async fn join(server: &Server, room: &str) -> (Client, duo::protocol::Welcome) {
    let mut client = Client::connect(server, room, None).await.expect("upgrade accepted");
    match client.recv().await {
        Message::Welcome(welcome) => (client, welcome),
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

impl Client {
    pub async fn connect(server: &Server, room: &str, origin: Option<&str>) -> Result<Self, tungstenite::Error> {
        Self::connect_url(&server.url(&format!("/ws/{room}")), origin).await
    }

    pub async fn connect_url(url: &str, origin: Option<&str>) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert(http::header::ORIGIN, origin.parse().unwrap());
        }
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { socket })
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Ws::text(text)).await.expect("send");
    }

    pub async fn send(&mut self, message: &Message) {
        self.send_text(&message.to_json()).await;
    }

    /// The next text frame, raw.
    pub async fn recv_text(&mut self) -> String {
        self.recv_text_within(STEP).await
    }

    /// The next text frame, raw, waiting up to `limit` for it.
    pub async fn recv_text_within(&mut self, limit: Duration) -> String {
        loop {
            let frame = tokio::time::timeout(limit, self.socket.next())
                .await
                .expect("a frame within the step timeout")
                .expect("socket still open")
                .expect("no socket error");
            match frame {
                Ws::Text(text) => return text.to_string(),
                Ws::Ping(_) | Ws::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> Message {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("server sent a bad message {text}: {e}"))
    }

    /// Reads until the server closes, returning the close code (text frames before it are skipped).
    pub async fn closed_with(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(STEP, self.socket.next()).await.expect("closed within the step timeout") {
                Some(Ok(Ws::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Proves nothing arrives for a while (pings aside).
    pub async fn expect_silence(&mut self, for_: Duration) {
        let deadline = tokio::time::Instant::now() + for_;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Ws::Ping(_) | Ws::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }
}

/// The HTTP status with which an upgrade was refused.
pub fn refusal_status(error: tungstenite::Error) -> http::StatusCode {
    match error {
        tungstenite::Error::Http(response) => response.status(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// A plain HTTP/1.1 GET of the server's public address: the status code and the body.
pub async fn http_get(server: &Server, path: &str) -> (u16, String) {
    let response = get(server.addr, path).await;
    (response.status, response.body)
}

pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The value of every header named `name` (lower case).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// A plain HTTP/1.1 GET of `path` at `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    let stream = TcpStream::connect(addr).await.expect("server accepts");
    get_over(stream, addr, path).await
}

/// A GET over a connection already made (plain or TLS).
pub async fn get_over(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    host: impl std::fmt::Display,
    path: &str,
) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A TLS peer may end without close_notify; what was read is the response.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Response { status, headers, body: body.to_owned() }
}

/// `GET /readyz` over a blocking socket: the status, or 0 if nothing answers.
fn readyz(addr: SocketAddr) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return 0 };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// A real Redis (Debian's `redis-server`) on a free loopback port, keeping nothing on disk.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Self {
        let port = free_addr().port();
        Self { child: Self::spawn(port), port }
    }

    fn spawn(port: u16) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/setup.sh installs Debian's redis-server)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: everything in it is lost.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port);
    }

    /// Runs a command with `redis-cli`, returning its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output =
            Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli runs");
        assert!(output.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback address nothing listens on (yet).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Debian's HAProxy running deploy/haproxy-duo.cfg, listening on `addr` in plain HTTP, in
/// front of `backends`.
pub struct Haproxy {
    child: Child,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Haproxy {
    pub fn start(addr: SocketAddr, backends: &[SocketAddr]) -> Self {
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy-duo.cfg")).unwrap();
        let mut config = String::new();
        for line in shipped.lines() {
            match line.trim_start().split(' ').next() {
                Some("bind") => config += &format!("    bind {addr}\n"),
                Some("server") => {}
                _ => config += &format!("{line}\n"),
            }
        }
        for (n, backend) in backends.iter().enumerate() {
            config += &format!("    server duo{n} {backend}\n");
        }
        let dir = std::env::temp_dir().join(format!("duo-haproxy-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .expect("haproxy runs (scripts/setup.sh installs Debian's haproxy)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "haproxy did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, addr, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of the metric line that starts with `name` (labels included).
pub fn try_metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
}

/// `/metrics` once `holds` says it is up to date (the forwarding unit tells it what changed up
/// to 100 ms late), or as it is after five seconds.
pub async fn metrics_when(server: &Server, holds: impl Fn(&str) -> bool) -> String {
    let started = std::time::Instant::now();
    loop {
        let metrics = get(server.metrics_addr, "/metrics").await.body;
        if holds(&metrics) || started.elapsed() > Duration::from_secs(5) {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
