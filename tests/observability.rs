//! `/healthz`, `/readyz` and `/metrics` of the real server binary.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::{get, http_get, join, pair, Server};
use duo::protocol::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The value of the sample `name` (with its labels, exactly as rendered), if present.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = Server::start(&[]);
    assert_eq!(http_get(&server, "/healthz").await, (200, "ok".into()));
    assert_eq!(http_get(&server, "/readyz").await, (200, "ready".into()));
    let response = get(server.metrics_addr, "/metrics").await;
    let (status, metrics) = (response.status, response.body);
    assert_eq!(status, 200);
    assert_eq!(sample(&metrics, &format!("duo_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), Some(1.0));
    assert_eq!(sample(&metrics, "duo_open_connections"), Some(0.0));
}

#[tokio::test]
async fn metrics_are_served_only_on_their_own_address() {
    let server = Server::start(&[]);
    assert_ne!(server.addr, server.metrics_addr);
    let public = get(server.addr, "/metrics").await;
    assert_eq!(public.status, 404, "the public address has no /metrics");
    assert!(!public.body.contains("duo_build_info"));
    // And the operators' address serves nothing but /metrics.
    assert_eq!(get(server.metrics_addr, "/").await.status, 404);
    assert_eq!(get(server.metrics_addr, "/healthz").await.status, 404);
}

#[tokio::test]
async fn metrics_follow_a_call() {
    let server = Server::start(&[]);
    let (mut a, mut b) = pair(&server, "metered").await;
    let sdp = r#"{"message_type":"SDP","content":{"type":"offer","sdp":"v=0"}}"#;
    let candidate = r#"{"message_type":"CANDIDATE","content":null}"#;
    a.send_text(sdp).await;
    assert_eq!(b.recv_text().await, sdp);
    b.send_text(candidate).await;
    assert_eq!(a.recv_text().await, candidate);
    a.send_text("not json").await;
    assert!(matches!(a.recv().await, Message::Error(_)));

    let metrics = get(server.metrics_addr, "/metrics").await.body;
    assert_eq!(sample(&metrics, "duo_open_connections"), Some(2.0), "{metrics}");
    assert_eq!(sample(&metrics, "duo_active_rooms"), Some(1.0));
    assert_eq!(sample(&metrics, r#"duo_messages_relayed_total{message_type="SDP"}"#), Some(1.0));
    assert_eq!(sample(&metrics, r#"duo_messages_relayed_total{message_type="CANDIDATE"}"#), Some(1.0));
    assert_eq!(sample(&metrics, r#"duo_messages_rejected_total{code="bad_message"}"#), Some(1.0));
    assert_eq!(sample(&metrics, "duo_relay_latency_seconds_count"), Some(2.0));

    drop(a);
    drop(b);
    let mut left = None;
    for _ in 0..50 {
        let metrics = get(server.metrics_addr, "/metrics").await.body;
        left = Some((sample(&metrics, "duo_open_connections"), sample(&metrics, "duo_active_rooms")));
        if left == Some((Some(0.0), Some(0.0))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, Some((Some(0.0), Some(0.0))), "connections and rooms are counted down");
}

#[tokio::test]
async fn readyz_fails_from_sigterm_while_the_server_drains() {
    let mut server = Server::start(&["--shutdown-grace", "2"]);
    let (mut a, _) = join(&server, "draining").await;
    server.signal("TERM");
    let mut status = 0;
    for _ in 0..50 {
        status = http_get(&server, "/readyz").await.0;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 503, "not ready once SIGTERM arrived");
    assert_eq!(http_get(&server, "/healthz").await.0, 200, "still alive while draining");
    // After the grace period the sockets close with 1001 and the process exits cleanly.
    assert_eq!(a.closed_with().await, Some(CloseCode::Away));
    assert!(server.terminate().success());
}
