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
            "string" => redis.cli(&["get", key]),
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

/// Reads `PRESENT`s until one names these people, in this order (`None`: no name).
async fn sees_names(client: &mut Client, names: &[Option<&str>]) {
    loop {
        match client.recv().await {
            Message::Present(present) => {
                assert!(present.people.iter().all(|person| person.public_id.is_some()), "{present:?}");
                if present.people.iter().map(|person| person.name.as_deref()).eq(names.iter().copied()) {
                    return;
                }
            }
            other => panic!("expected PRESENT, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn someone_waiting_on_one_instance_sees_by_name_who_is_in_the_call_on_the_other_through_a_redis_restart() {
    let mut redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &[]);
    let waiting_on = |server: &Server, room: &str| format!("ws://{}/ws/{room}?join=later", server.addr);
    let join_named = |url: String, name: &'static str| async move {
        let mut client = Client::connect_url(&url, None).await.unwrap();
        sees_names(&mut client, &[]).await;
        client.send_text(&format!(r#"{{"message_type":"JOIN","content":{{"name":"{name}"}}}}"#)).await;
        assert!(matches!(client.recv().await, Message::Welcome(_)));
        client
    };
    let mut ada = join_named(format!("{}&session={}", waiting_on(&a, "ada"), session("ada")), "Ada").await;
    let bob = join_named(format!("{}&session={}", waiting_on(&a, "bob"), session("bob")), "Bob").await;
    // Eve opens Ada's link on the other instance, where no one is in the call.
    let mut eve = Client::connect_url(&waiting_on(&b, "ada"), None).await.unwrap();
    sees_names(&mut eve, &[Some("Ada")]).await;
    ada.send(&Message::Name("Ada L".into())).await;
    sees_names(&mut eve, &[Some("Ada L")]).await;
    // Redis restarts empty, and Zoe opens Bob's link there while it is away: once it is back,
    // she sees Bob, and Eve goes on seeing what Ada does.
    redis.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.readyz() != 503 || b.readyz() != 503 {
        assert!(std::time::Instant::now() < deadline, "/readyz still says ready without Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut zoe = Client::connect_url(&waiting_on(&b, "bob"), None).await.unwrap();
    sees_names(&mut zoe, &[]).await;
    redis.restart();
    a.wait_until_ready();
    b.wait_until_ready();
    sees_names(&mut zoe, &[Some("Bob")]).await;
    ada.send(&Message::Name("Ada M".into())).await;
    sees_names(&mut eve, &[Some("Ada M")]).await;
    drop((ada, bob));
    for waiting in [&mut eve, &mut zoe] {
        sees_names(waiting, &[]).await;
        waiting.expect_silence(Duration::from_millis(300)).await;
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

/// How Redis loses a room.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// Everything: rooms, heartbeats, the instances' sets.
    Flushall,
    /// The room's key alone (an operator's `DEL`, an eviction).
    Del,
}

/// The key of the one room Redis has.
fn room_key(redis: &Redis) -> String {
    let keys = redis.cli(&["--scan", "--pattern", "duo:room:*"]);
    match keys.lines().collect::<Vec<_>>()[..] {
        [key] => key.to_owned(),
        ref other => panic!("expected one room, found {other:?}"),
    }
}

fn lose(redis: &Redis, loss: Loss, key: &str) {
    let answer = match loss {
        Loss::Flushall => redis.cli(&["FLUSHALL"]),
        Loss::Del => redis.cli(&["DEL", key]),
    };
    assert!(matches!(answer.trim(), "OK" | "1"), "{answer}");
    assert_eq!(redis.cli(&["EXISTS", key]).trim(), "0");
}

/// Rooms of four, as a mesh: the full rooms below.
const FOUR: [&str; 4] = ["--max-room-size", "4", "--media", "mesh"];

/// A full room of four, two people on each instance: Alice and Carol on `a`, Bob and Dave
/// on `b`, each having heard of those who came after them; and Dave's public id.
async fn full_room(a: &Server, b: &Server, room: &str) -> (Vec<(Client, duo::protocol::Welcome)>, Option<String>) {
    let mut people: Vec<(Client, duo::protocol::Welcome)> = Vec::new();
    let mut public_id = None;
    for (name, server) in [("alice", a), ("bob", b), ("carol", a), ("dave", b)] {
        let (client, welcome) = join_as(server, room, &session(name)).await;
        for (earlier, _) in &mut people {
            match earlier.recv().await {
                Message::PeerJoined(info) if info.peer_id == welcome.peer_id => public_id = info.public_id,
                other => panic!("{other:?}"),
            }
        }
        people.push((client, welcome));
    }
    (people, public_id)
}

/// A newcomer without a session is refused, as `room_full` or as `unavailable` (then tried
/// again), and never let in.
async fn refused(server: &Server, room: &str) {
    let mut client = Client::connect(server, room, None).await.expect("upgrade accepted");
    match client.recv().await {
        Message::Error(error) if error.code == ErrorCode::RoomFull => {
            assert_eq!(client.closed_with().await, Some(CloseCode::Library(4001)));
        }
        Message::Error(error) if error.code == ErrorCode::Unavailable => {
            assert_eq!(client.closed_with().await, Some(CloseCode::Again));
        }
        other => panic!("a stranger got in: {other:?}"),
    }
}

/// Joins as a page does: again after `unavailable` (1013), up to 10 s.
async fn join_retrying(server: &Server, room: &str, session: &str) -> (Client, duo::protocol::Welcome) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = Client::connect(server, &format!("{room}?session={session}"), None).await.unwrap();
        match client.recv().await {
            Message::Welcome(welcome) => return (client, welcome),
            Message::Error(error) if error.code == ErrorCode::Unavailable => {
                assert_eq!(client.closed_with().await, Some(CloseCode::Again));
            }
            other => panic!("{other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "still unavailable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis loses a full room: no newcomer gets in, through an instance with people in the room
/// or one without, no one in it is closed, they keep talking, and one of them reconnecting
/// with their session (through the instance without people there, which must wait for the
/// room to be put back) takes their own place again.
async fn a_lost_room_keeps_its_people_and_lets_no_stranger_in(loss: Loss) {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &FOUR);
    let c = Server::start(&[&FOUR[..], &["--redis", &redis.url()]].concat());
    c.wait_until_ready();
    let room = "lost-room";
    let (mut people, dave_public) = full_room(&a, &b, room).await;
    let key = room_key(&redis);
    lose(&redis, loss, &key);
    refused(&c, room).await;
    refused(&a, room).await;
    refused(&b, room).await;
    for (person, _) in &mut people {
        person.expect_silence(Duration::from_millis(300)).await;
    }
    let (mut dave, welcome) = join_retrying(&c, room, &session("dave")).await;
    let (mut old_dave, old_welcome) = people.pop().unwrap();
    assert_eq!(old_dave.closed_with().await, Some(CloseCode::Library(4004)), "replaced, not lost");
    assert_eq!(welcome.peers.len(), 3);
    assert_eq!(welcome.polite, old_welcome.polite, "the same place");
    for (person, _) in &mut people {
        match person.recv().await {
            Message::PeerJoined(info) => assert_eq!((info.peer_id, &info.public_id), (welcome.peer_id, &dave_public)),
            other => panic!("{other:?}"),
        }
    }
    refused(&c, room).await;
    // Everyone still talks to everyone, across instances.
    let ids: Vec<_> = people.iter().map(|(_, welcome)| welcome.peer_id).collect();
    let (alice, bob, carol) = match &mut people[..] {
        [(alice, _), (bob, _), (carol, _)] => (alice, bob, carol),
        _ => unreachable!(),
    };
    relays_to(alice, bob, ids[1], 1).await;
    relays_to(bob, carol, ids[2], 2).await;
    relays_to(carol, &mut dave, welcome.peer_id, 3).await;
    relays_to(&mut dave, alice, ids[0], 4).await;
    for person in [alice, bob, carol, &mut dave] {
        person.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn redis_flushed_mid_call_lets_no_stranger_into_a_full_room_and_closes_no_one() {
    a_lost_room_keeps_its_people_and_lets_no_stranger_in(Loss::Flushall).await;
}

#[tokio::test]
async fn a_room_key_deleted_mid_call_lets_no_stranger_into_a_full_room_and_closes_no_one() {
    a_lost_room_keeps_its_people_and_lets_no_stranger_in(Loss::Del).await;
}

/// The places of a room as Redis has them, without its size and version.
fn places(redis: &Redis, key: &str) -> Vec<String> {
    let all = redis.cli(&["HGETALL", key]);
    let lines: Vec<&str> = all.lines().collect();
    let mut places: Vec<String> = lines
        .chunks(2)
        .filter(|pair| !matches!(pair[0], "size" | "ver"))
        .map(|pair| format!("{} {}", pair[0], pair[1]))
        .collect();
    places.sort();
    places
}

/// Redis loses a room while no one joins, its key alone and then everything: the instances of
/// its people put it back, whole, within about a heartbeat (1 s), and each instance's set
/// lists it again.
#[tokio::test]
async fn a_room_redis_lost_is_put_back_within_a_heartbeat() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &FOUR);
    let (mut people, _) = full_room(&a, &b, "put-back").await;
    let key = room_key(&redis);
    let before = places(&redis, &key);
    assert_eq!(before.len(), 4);
    for loss in [Loss::Del, Loss::Flushall] {
        lose(&redis, loss, &key);
        let lost_at = std::time::Instant::now();
        while redis.cli(&["EXISTS", &key]).trim() == "0" {
            assert!(lost_at.elapsed() < Duration::from_secs(5), "{loss:?}: the room was never put back");
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = lost_at.elapsed();
        eprintln!("{loss:?}: the room was back in Redis after {took:?}");
        assert!(took < Duration::from_millis(2500), "{loss:?}: put back after {took:?}");
        assert_eq!(places(&redis, &key), before, "{loss:?}: everyone in their place");
        let room = key.strip_prefix("duo:room:").unwrap();
        let sets = redis.cli(&["--scan", "--pattern", "duo:inst:*:rooms"]);
        assert_eq!(sets.lines().count(), 2, "{loss:?}: {sets}");
        for set in sets.lines() {
            assert_eq!(redis.cli(&["SISMEMBER", set, room]).trim(), "1", "{loss:?}: {set}");
        }
        for (person, _) in &mut people {
            person.expect_silence(Duration::from_millis(300)).await;
        }
    }
}

#[tokio::test]
async fn someone_who_leaves_while_redis_lost_the_room_is_seen_leaving_and_leaves_no_ghost() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &[]);
    let (mut alice, alice_welcome) = join_as(&a, "ghost", &session("alice")).await;
    let (mut bob, _) = join_as(&b, "ghost", &session("bob")).await;
    assert!(matches!(alice.recv().await, Message::PeerJoined(_)));
    let key = room_key(&redis);
    lose(&redis, Loss::Del, &key);
    // Alice's instance cannot free a place Redis does not have; Bob's puts the room back as
    // it knows it, Alice included.
    alice.socket.close(None).await.unwrap();
    let left = bob.recv_text_within(Duration::from_secs(5)).await;
    assert!(left.contains("PEER_LEFT") && left.contains(&alice_welcome.peer_id.0.to_string()), "{left}");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while places(&redis, &key).len() != 1 {
        assert!(std::time::Instant::now() < deadline, "{:?}", places(&redis, &key));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bob.expect_silence(Duration::from_millis(300)).await;
}

/// Redis loses everything while the instance of a room's people is slow to beat again (here
/// stopped): no one gets a place in a room Redis does not know, which may be that instance's,
/// until it has had a heartbeat's TTL to put it back; then its people are in their places.
#[tokio::test]
async fn after_redis_lost_everything_a_room_waits_for_its_slow_instance() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &["--max-room-size", "2"]);
    let (mut alice, _) = join_as(&b, "slow", &session("alice")).await;
    b.signal("STOP");
    lose(&redis, Loss::Flushall, &room_key(&redis));
    // The other instance beats again, and finds Redis lost everything.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while redis.cli(&["ZCARD", "duo:instances"]).trim() != "1" {
        assert!(std::time::Instant::now() < deadline, "the other instance did not beat again");
        std::thread::sleep(Duration::from_millis(10));
    }
    refused(&a, "slow").await;
    refused(&a, "slow").await;
    b.signal("CONT");
    let (_bob, welcome) = join_retrying(&a, "slow", &session("bob")).await;
    assert_eq!(welcome.peers.len(), 1, "Alice is back in her place, Bob takes the other");
    assert!(matches!(alice.recv().await, Message::PeerJoined(info) if info.peer_id == welcome.peer_id));
    alice.expect_silence(Duration::from_millis(300)).await;
}

/// Redis loses every trace of a full room (its key, and the instances' sets that list it),
/// as an eviction could: a newcomer through an instance with people in it puts the room back
/// before taking a place, so is refused, and no one in the room is closed.
#[tokio::test]
async fn a_room_evicted_with_its_instances_sets_is_put_back_by_a_join_through_either_instance() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &FOUR);
    let room = "evicted";
    let (mut people, _) = full_room(&a, &b, room).await;
    let key = room_key(&redis);
    let before = places(&redis, &key);
    let sets = redis.cli(&["--scan", "--pattern", "duo:inst:*:rooms"]);
    assert_eq!(sets.lines().count(), 2, "{sets}");
    for evicted in std::iter::once(key.as_str()).chain(sets.lines()) {
        assert_eq!(redis.cli(&["DEL", evicted]).trim(), "1");
    }
    refused(&a, room).await;
    assert_eq!(places(&redis, &key), before, "put back whole");
    refused(&b, room).await;
    for (person, _) in &mut people {
        person.expect_silence(Duration::from_millis(300)).await;
    }
    let ids: Vec<_> = people.iter().map(|(_, welcome)| welcome.peer_id).collect();
    let [(alice, _), (bob, _), (carol, _), (dave, _)] = &mut people[..] else { unreachable!() };
    relays_to(alice, bob, ids[1], 1).await;
    relays_to(dave, carol, ids[2], 2).await;
}

/// An instance's set of rooms stays exact: after a session moved to the other instance and
/// everyone left, the room is no one's, and joining it again is joining a new room (a stale
/// entry would make it look lost, and refuse everyone).
#[tokio::test]
async fn a_room_everyone_left_after_a_session_moved_instance_can_be_joined_again_at_once() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &[]);
    let (mut alice, _) = join_as(&a, "moved", &session("alice")).await;
    let (mut old_bob, _) = join_as(&b, "moved", &session("bob")).await;
    assert!(matches!(alice.recv().await, Message::PeerJoined(_)));
    let (mut bob, _) = join_as(&a, "moved", &session("bob")).await;
    assert_eq!(old_bob.closed_with().await, Some(CloseCode::Library(4004)));
    for client in [&mut alice, &mut bob] {
        client.socket.close(None).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !redis.cli(&["--scan", "--pattern", "duo:room:*"]).trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the room was never emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(redis.cli(&["--scan", "--pattern", "duo:inst:*:rooms"]).trim(), "", "no set lists the room");
    let (_carol, welcome) = join(&b, "moved").await;
    assert!(!welcome.peer_present);
}
