//! Several instances sharing rooms through a real Redis (`--redis`, Debian's `redis-server`):
//! the whole signaling contract with each person on another instance, join races, an instance
//! killed, Redis restarted.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::{free_addr, join, Client, Haproxy, Redis, Server};
use duo::protocol::{ErrorCode, Message};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Two instances and their Redis; clients alternate between them.
fn start(args: &[&str]) -> Server {
    Server::pair(args)
}

mod contract {
    include!("common/contract.rs");
}

fn session(name: &str) -> String {
    format!("{name}-session-0123456789abcdef")
}

async fn join_as(server: &Server, room: &str, session: &str) -> (Client, duo::protocol::Welcome) {
    join(server, &format!("{room}?session={session}")).await
}

async fn relays(from: &mut Client, to: &mut Client, frame: &str) {
    from.send_text(frame).await;
    assert_eq!(to.recv_text().await, frame);
}

const BYE: &str = r#"{"message_type":"BYE"}"#;

fn candidate(n: usize) -> String {
    format!(
        r#"{{"message_type":"CANDIDATE","content":{{"candidate":"candidate:{n} 1 udp 1 127.0.0.1 {n} typ host","sdpMid":"0","sdpMLineIndex":0}}}}"#
    )
}

#[tokio::test]
async fn redis_holds_no_room_id_and_no_session_only_their_one_way_hashes() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &[]);
    let room = "secret-room-id-0123456789";
    let (mut alice, _) = join_as(&a, room, &session("alice")).await;
    let (mut bob, welcome) = join_as(&b, room, &session("bob")).await;
    assert!(welcome.peer_present, "Bob, on the other instance, finds Alice");
    assert!(matches!(alice.recv().await, Message::PeerJoined(info) if info.peer_id == welcome.peer_id));
    relays(&mut alice, &mut bob, &candidate(1)).await;
    relays(&mut bob, &mut alice, BYE).await;
    let mut everything = redis.cli(&["--scan"]);
    for key in everything.clone().lines() {
        everything += &match redis.cli(&["type", key]).trim() {
            "hash" => redis.cli(&["hgetall", key]),
            "set" => redis.cli(&["smembers", key]),
            "zset" => redis.cli(&["zrange", key, "0", "-1"]),
            other => panic!("unexpected key {key} of type {other}"),
        };
    }
    assert!(everything.contains("duo:room:"), "{everything}");
    for secret in [room, &session("alice"), &session("bob")] {
        assert!(!everything.contains(secret), "{secret} is in Redis: {everything}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_races_across_instances_never_overfill_a_room_and_the_loser_gets_room_full() {
    const ROOMS: usize = 60;
    let redis = Redis::start();
    let many = ["--max-sockets-per-client", "1000", "--sockets-per-minute-per-client", "1000"];
    let (a, b) = Server::sharing(
        &redis,
        &[&["--max-room-size", "2", "--connections-per-second-per-client", "1000"], &many[..]].concat(),
    );
    let attempts = (0..ROOMS).flat_map(|room| {
        let servers = [&a, &b, &a];
        servers.map(|server| {
            let room = format!("race-{room}");
            async move {
                let mut client = Client::connect(server, &room, None).await.expect("upgrade accepted");
                let outcome = match client.recv().await {
                    Message::Welcome(_) => Ok(()),
                    Message::Error(error) if error.code == ErrorCode::RoomFull => {
                        assert_eq!(client.closed_with().await, Some(CloseCode::Library(4001)));
                        Err(())
                    }
                    other => panic!("{other:?}"),
                };
                (room, outcome, client)
            }
        })
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    for room in 0..ROOMS {
        let room = format!("race-{room}");
        let of_room: Vec<_> = outcomes.iter().filter(|(r, ..)| *r == room).map(|(_, outcome, _)| outcome).collect();
        let admitted = of_room.iter().filter(|outcome| outcome.is_ok()).count();
        assert_eq!((admitted, of_room.len()), (2, 3), "{room}: exactly two places, one clear refusal");
    }
}

#[tokio::test]
async fn a_session_returning_through_the_other_instance_takes_its_place_and_the_old_socket_gets_4004() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &["--max-room-size", "2"]);
    let (mut alice, _) = join_as(&a, "back", &session("alice")).await;
    let (mut old_bob, first) = join_as(&b, "back", &session("bob")).await;
    let bob_public = match alice.recv().await {
        Message::PeerJoined(info) => info.public_id,
        other => panic!("{other:?}"),
    };
    // Bob's new connection lands on Alice's instance.
    let (mut bob, again) = join_as(&a, "back", &session("bob")).await;
    assert_eq!(old_bob.closed_with().await, Some(CloseCode::Library(4004)));
    assert_eq!(again.polite, first.polite, "same place, same role");
    match alice.recv().await {
        Message::PeerJoined(info) => assert_eq!((info.peer_id, info.public_id), (again.peer_id, bob_public)),
        other => panic!("{other:?}"),
    }
    relays(&mut alice, &mut bob, &candidate(1)).await;
    relays(&mut bob, &mut alice, &candidate(2)).await;
    alice.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_instance_sigkilled_mid_call_its_people_take_their_places_back_on_the_survivor() {
    let redis = Redis::start();
    let (a, mut b) = Server::sharing(&redis, &[]);
    let (mut alice, alice_welcome) = join_as(&a, "kill", &session("alice")).await;
    let (mut bob, _) = join_as(&b, "kill", &session("bob")).await;
    let (bob_id, bob_public) = match alice.recv().await {
        Message::PeerJoined(info) => (info.peer_id, info.public_id),
        other => panic!("{other:?}"),
    };
    // Carol has no session: she cannot come back as herself.
    let (carol, _) = join(&b, "kill").await;
    let carol_id = match alice.recv().await {
        Message::PeerJoined(info) => info.peer_id,
        other => panic!("{other:?}"),
    };
    let _ = bob.recv().await; // Carol joined
    relays_to(&mut alice, &mut bob, bob_id, 1).await;
    b.kill();
    drop((bob, carol));
    // Bob's page reconnects at once, through the load balancer, to the survivor.
    let (mut bob, welcome) = join_as(&a, "kill", &session("bob")).await;
    assert_eq!(welcome.peers.len(), 2, "Alice, and Carol until her instance is found dead");
    match alice.recv().await {
        Message::PeerJoined(info) => assert_eq!(info.public_id, bob_public, "Bob is back, not someone new"),
        other => panic!("{other:?}"),
    }
    relays_to(&mut alice, &mut bob, welcome.peer_id, 2).await;
    relays_to(&mut bob, &mut alice, alice_welcome.peer_id, 3).await;
    // Carol's place is freed once her instance missed its heartbeats (5 s).
    let left = alice.recv_text_within(Duration::from_secs(10)).await;
    assert!(left.contains("PEER_LEFT") && left.contains(&carol_id.0.to_string()), "{left}");
    assert!(matches!(bob.recv().await, Message::PeerLeft(info) if info.peer_id == carol_id));
    // Nothing was relayed twice.
    alice.expect_silence(Duration::from_millis(300)).await;
    bob.expect_silence(Duration::from_millis(300)).await;
}

/// A candidate sent to one person of a group arrives, stamped with its sender.
async fn relays_to(from: &mut Client, to: &mut Client, to_id: duo::protocol::PeerId, n: usize) {
    let frame = candidate(n);
    let open = &frame[..frame.len() - 1];
    from.send_text(&format!(r#"{open},"to":{}}}"#, to_id.0)).await;
    let got = to.recv_text().await;
    assert!(got.starts_with(&format!(r#"{open},"to":{}"#, to_id.0)), "{got}");
}

#[tokio::test]
async fn an_instance_shut_down_tells_the_others_at_once_that_its_people_left() {
    let redis = Redis::start();
    let (a, mut b) = Server::sharing(&redis, &[]);
    let (mut alice, _) = join(&a, "drain").await;
    let (_bob, welcome) = join(&b, "drain").await;
    assert!(matches!(alice.recv().await, Message::PeerJoined(_)));
    assert!(b.terminate().success());
    // Not after the heartbeat's 5 s: its leaving went through Redis before it exited.
    let left = alice.recv_text_within(Duration::from_secs(3)).await;
    assert!(left.contains("PEER_LEFT") && left.contains(&welcome.peer_id.0.to_string()), "{left}");
}

#[tokio::test]
async fn redis_restarted_mid_call_sockets_stay_open_readyz_fails_and_frames_arrive_once_in_order() {
    let mut redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &[]);
    let (mut alice, _) = join_as(&a, "restart", &session("alice")).await;
    let (mut bob, _) = join_as(&b, "restart", &session("bob")).await;
    assert!(matches!(alice.recv().await, Message::PeerJoined(_)));
    relays(&mut alice, &mut bob, &candidate(0)).await;
    assert!(common::get(a.metrics_addr, "/metrics").await.body.contains("duo_redis_up 1"));
    redis.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.readyz() != 503 || b.readyz() != 503 {
        assert!(std::time::Instant::now() < deadline, "/readyz still says ready without Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(common::get(a.metrics_addr, "/metrics").await.body.contains("duo_redis_up 0"));
    // Sent while Redis is away: they wait, and arrive once it is back.
    for n in 1..=5 {
        alice.send_text(&candidate(n)).await;
    }
    // A join meanwhile is told to come back later.
    let mut late = Client::connect(&a, "restart-other", None).await.unwrap();
    match late.recv().await {
        Message::Error(error) => assert_eq!(error.code, ErrorCode::Unavailable),
        other => panic!("{other:?}"),
    }
    assert_eq!(late.closed_with().await, Some(CloseCode::Again));
    redis.restart();
    a.wait_until_ready();
    b.wait_until_ready();
    for n in 1..=5 {
        assert_eq!(bob.recv_text().await, candidate(n), "in order, once");
    }
    assert!(common::get(b.metrics_addr, "/metrics").await.body.contains("duo_redis_up 1"));
    relays(&mut bob, &mut alice, &candidate(6)).await;
    relays(&mut alice, &mut bob, BYE).await;
    // The room was put back: no one left, and a third person finds both.
    let (_carol, welcome) = join(&a, "restart").await;
    assert_eq!(welcome.peers.len(), 2);
    for client in [&mut alice, &mut bob] {
        assert!(matches!(client.recv().await, Message::PeerJoined(_)));
        client.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn an_instance_started_before_redis_is_not_ready_until_redis_is_up() {
    let mut redis = Redis::start();
    redis.kill();
    let a = Server::start(&["--redis", &redis.url()]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(a.readyz(), 503);
    redis.restart();
    a.wait_until_ready();
    let (_alice, welcome) = join(&a, "late").await;
    assert!(!welcome.peer_present);
}

#[test]
fn a_malformed_redis_url_is_a_clear_error_at_start_that_does_not_repeat_the_password() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_duo"))
        .args(["--redis", "redis://:hunter2@host:notaport"])
        .output()
        .expect("the server binary runs");
    assert!(!output.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("--redis") && said.contains("not a Redis URL"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
}

/// Two instances behind HAProxy, configured as docs/deploy.md says.
fn behind_haproxy(redis: &Redis) -> (Haproxy, Server, Server) {
    let public = free_addr();
    let origin = format!("http://{public}");
    let (a, b) = Server::sharing(redis, &["--trusted-proxy", "127.0.0.1", "--allowed-origin", &origin]);
    (Haproxy::start(public, &[a.addr, b.addr]), a, b)
}

/// Joins through HAProxy; the instance it landed on is the one whose log gained a "joined".
async fn join_through(proxy: &Haproxy, room: &str, servers: [&Server; 2]) -> (Client, duo::protocol::Welcome, usize) {
    let before = servers.map(|server| server.log_count("joined"));
    let mut client = Client::connect_url(&proxy.url(&format!("/ws/{room}")), None).await.expect("upgrade accepted");
    let welcome = match client.recv().await {
        Message::Welcome(welcome) => welcome,
        other => panic!("{other:?}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(at) = (0..2).find(|&n| servers[n].log_count("joined") > before[n]) {
            return (client, welcome, at);
        }
        assert!(std::time::Instant::now() < deadline, "no instance logged the join");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn through_haproxy_round_robin_the_two_of_a_call_land_on_different_instances_and_talk() {
    let redis = Redis::start();
    let (proxy, a, b) = behind_haproxy(&redis);
    let (mut alice, _, alice_at) = join_through(&proxy, "proxied", [&a, &b]).await;
    let (mut bob, welcome, bob_at) = join_through(&proxy, "proxied", [&a, &b]).await;
    assert_ne!(alice_at, bob_at, "round robin puts the second socket on the other instance");
    assert!(welcome.peer_present);
    assert!(matches!(alice.recv().await, Message::PeerJoined(_)));
    relays(&mut alice, &mut bob, &candidate(1)).await;
    relays(&mut bob, &mut alice, BYE).await;
}

#[tokio::test]
async fn through_haproxy_the_people_of_a_killed_instance_reconnect_to_the_survivor_and_the_call_goes_on() {
    let redis = Redis::start();
    let (proxy, a, b) = behind_haproxy(&redis);
    let room = |name: &str| format!("killed?session={}", session(name));
    let (mut alice, _, _) = join_through(&proxy, &room("alice"), [&a, &b]).await;
    let (mut bob, _, bob_at) = join_through(&proxy, &room("bob"), [&a, &b]).await;
    let bob_public = match alice.recv().await {
        Message::PeerJoined(info) => info.public_id,
        other => panic!("{other:?}"),
    };
    // Bob's instance dies; his page reconnects through HAProxy.
    let mut servers = [a, b];
    servers[bob_at].kill();
    assert_eq!(bob.closed_with().await, None, "the connection just drops");
    let mut bob = Client::connect_url(&proxy.url(&format!("/ws/{}", room("bob"))), None)
        .await
        .expect("HAProxy sends the reconnect to the survivor");
    let Message::Welcome(welcome) = bob.recv().await else { panic!("no WELCOME") };
    assert!(welcome.peer_present);
    match alice.recv().await {
        Message::PeerJoined(info) => assert_eq!(info.public_id, bob_public, "Bob is back, not someone new"),
        other => panic!("{other:?}"),
    }
    relays(&mut alice, &mut bob, &candidate(1)).await;
    relays(&mut bob, &mut alice, &candidate(2)).await;
    alice.expect_silence(Duration::from_millis(300)).await;
}
