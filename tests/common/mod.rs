//! Shared by the integration tests: the real server binary on a random port, and real
//! WebSocket clients speaking the protocol.
#![allow(dead_code)] // each test file uses its own part of this

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

/// The `duo` binary, started with `args`, listening on a free loopback port.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_duo"))
            .args(["--addr", "127.0.0.1:0", "--log-level", "info"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if std::env::var_os("DUO_TEST_LOG").is_some() {
                    eprintln!("server: {line}");
                }
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server says where it listens");
        Self { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
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
        let mut request = server.url(&format!("/ws/{room}")).into_client_request()?;
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
        loop {
            let frame = tokio::time::timeout(STEP, self.socket.next())
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

/// A plain HTTP/1.1 GET: the status code and the body.
pub async fn http_get(server: &Server, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(server.addr).await.expect("server accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}
