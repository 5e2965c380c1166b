//! The signaling contract of docs/protocol.md, checked against the real server binary with
//! real WebSocket clients (tests/common/contract.rs), and what only a single server does.
#![cfg(feature = "ssr")]

mod common;

use common::{join, pair, refusal_status, Client, Server};
use duo::protocol::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn start(args: &[&str]) -> Server {
    Server::start(args)
}

mod contract {
    include!("common/contract.rs");
}

#[tokio::test]
async fn foreign_origins_are_refused_and_allowed_ones_pass() {
    let server = Server::start(&["--allowed-origin", "https://call.example"]);
    let own = format!("http://{}", server.addr);
    assert!(Client::connect(&server, "o", Some(&own)).await.is_ok());
    assert!(Client::connect(&server, "o2", Some("https://call.example")).await.is_ok());
    let error = Client::connect(&server, "o3", Some("https://evil.example")).await.err().expect("refused");
    assert_eq!(refusal_status(error), 403);
}

#[tokio::test]
async fn sigterm_closes_every_socket_with_1001_and_exits() {
    let mut server = Server::start(&[]);
    let (mut a, mut b) = pair(&server, "bye").await;
    let (mut c, _) = join(&server, "alone").await;
    // One that has not joined its room yet is closed the same way.
    let mut waiting = Client::connect(&server, "alone?join=later", None).await.expect("upgrade accepted");
    let status = server.terminate();
    assert!(status.success(), "clean exit: {status}");
    for client in [&mut a, &mut b, &mut c, &mut waiting] {
        assert_eq!(client.closed_with().await, Some(CloseCode::Away));
    }
}

#[tokio::test]
async fn turn_urls_come_with_credentials_derived_from_the_secret_which_never_leaves() {
    let secret = "s3cret-shared-with-coturn";
    let flags = ["--turn-secret", secret, "--turn-credential-lifetime", "600", "--relay-only"];
    let server = Server::start(&[&common::STUN_AND_TURN[..], &flags].concat());
    // TURN credentials are for the site's own pages.
    let mut client = Client::connect(&server, "turn", Some(&format!("http://{}", server.addr))).await.unwrap();
    let text = client.recv_text().await;
    assert!(!text.contains(secret));
    let Message::Welcome(welcome) = serde_json::from_str(&text).unwrap() else { panic!("{text}") };
    assert_eq!(welcome.ice_transport_policy, duo::protocol::IceTransportPolicy::Relay);
    let turn = &welcome.ice_servers[1];
    assert_eq!(turn.urls, ["turn:127.0.0.1:3478"]);
    let username = turn.username.as_deref().unwrap();
    let (expiry, peer) = username.split_once(':').unwrap();
    assert_eq!(peer, welcome.peer_id.0.to_string());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!((now + 590..=now + 610).contains(&expiry), "expires in the configured 600 s");
    assert_eq!(turn.credential.as_deref(), Some(duo::server::turn_password(secret, username).as_str()));
}
