// The signaling contract of docs/protocol.md, included by tests/signaling.rs (one server) and
// tests/instances.rs (two instances sharing rooms through Redis, each client on the next
// instance). Each test's server comes from the including file's `start`.

use std::time::Duration;

use duo::protocol::{close_code, ErrorCode, Message, PeerInfo, Person};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message as Ws};

use super::start;
use crate::common::{join, pair, refusal_status, Client};

fn expect_error(message: Message, code: ErrorCode) -> String {
    match message {
        Message::Error(body) if body.code == code => body.message,
        other => panic!("expected ERROR {code:?}, got {other:?}"),
    }
}

/// Reads `PRESENT`s (and nothing else) until one lists these people, by public id and name,
/// in this order. (With two instances, one that does not know the room yet may first say less.)
async fn sees(client: &mut Client, people: &[(Option<&str>, Option<&str>)]) {
    let people: Vec<Person> = people
        .iter()
        .map(|(public_id, name)| Person { public_id: public_id.map(str::to_owned), name: name.map(str::to_owned) })
        .collect();
    loop {
        let text = client.recv_text().await;
        assert!(!text.contains("peer_id"), "a peer id is for the people in the call only: {text}");
        match serde_json::from_str(&text) {
            Ok(Message::Present(present)) if present.people == people => return,
            Ok(Message::Present(_)) => continue,
            other => panic!("expected PRESENT, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn welcome_gives_ids_opposite_roles_and_ice_servers() {
    let server = start(&["--ice-server", "stun:127.0.0.1:3478"]);
    let (mut a, first) = join(&server, "roles").await;
    assert!(!first.peer_present);
    assert_eq!(first.ice_servers.len(), 1);
    assert_eq!(first.ice_servers[0].urls, ["stun:127.0.0.1:3478"]);
    let (_b, second) = join(&server, "roles").await;
    assert!(second.peer_present);
    assert_ne!(first.polite, second.polite);
    assert_ne!(first.peer_id, second.peer_id);
    assert_eq!(
        a.recv().await,
        Message::PeerJoined(PeerInfo { peer_id: second.peer_id, polite: Some(false), public_id: None })
    );
}

#[tokio::test]
async fn sdp_candidate_and_bye_are_relayed_unchanged_both_ways() {
    let server = start(&[]);
    let (mut a, mut b) = pair(&server, "relay").await;
    let frames = [
        r#"{"message_type":"SDP","content":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},"extra":[1,2]}"#,
        r#"{"message_type":"CANDIDATE","content":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        r#"{"message_type":"CANDIDATE","content":null}"#,
        r#"{"message_type":"BYE"}"#,
    ];
    for frame in frames {
        a.send_text(frame).await;
        assert_eq!(b.recv_text().await, frame);
        b.send_text(frame).await;
        assert_eq!(a.recv_text().await, frame);
    }
}

#[tokio::test]
async fn bad_room_ids_are_refused_before_the_upgrade() {
    let server = start(&[]);
    for room in ["bad%20id", "dots.are.bad", &"x".repeat(65), "%C3%A9"] {
        let error = Client::connect(&server, room, None).await.err().expect("refused");
        assert_eq!(refusal_status(error), 400, "{room}");
    }
}

#[tokio::test]
async fn a_third_person_is_refused_without_disturbing_the_call() {
    let server = start(&["--max-room-size", "2"]);
    let (mut a, mut b) = pair(&server, "full").await;
    let mut third = Client::connect(&server, "full", None).await.unwrap();
    expect_error(third.recv().await, ErrorCode::RoomFull);
    assert_eq!(third.closed_with().await, Some(CloseCode::from(close_code::ROOM_FULL)));
    a.send_text(r#"{"message_type":"BYE"}"#).await;
    assert_eq!(b.recv_text().await, r#"{"message_type":"BYE"}"#);
    a.expect_silence(Duration::from_millis(300)).await; // no PEER_JOINED/PEER_LEFT for the refused one
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_socket_stays_open() {
    let server = start(&[]);
    let (mut a, mut b) = pair(&server, "bad").await;
    let bad = [
        "not json",
        "[1,2,3]",
        r#""a string""#,
        r#"{"content":{}}"#,
        r#"{"message_type":"TELEPORT","content":{}}"#,
        r#"{"message_type":"WELCOME","content":{}}"#,
        r#"{"message_type":"SDP","content":{"sdp":"v=0"}}"#,
        r#"{"message_type":"SDP","content":"v=0"}"#,
        r#"{"message_type":"CANDIDATE","content":{"sdpMid":"0"}}"#,
    ];
    for text in bad {
        a.send_text(text).await;
        let reason = expect_error(a.recv().await, ErrorCode::BadMessage);
        assert!(!reason.is_empty(), "{text}");
    }
    a.socket.send(Ws::binary(vec![1, 2, 3])).await.unwrap();
    assert!(expect_error(a.recv().await, ErrorCode::BadMessage).contains("binary"));
    // Nothing bad reached the other peer, and the call still relays.
    let good = r#"{"message_type":"CANDIDATE","content":null}"#;
    a.send_text(good).await;
    assert_eq!(b.recv_text().await, good);
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_socket_with_1009() {
    let server = start(&[]);
    let (mut a, mut b) = pair(&server, "big").await;
    let (mut c, mut d) = pair(&server, "bystanders").await;
    let huge = format!(r#"{{"message_type":"SDP","content":{{"type":"offer","sdp":"{}"}}}}"#, "x".repeat(70 * 1024));
    a.send_text(&huge).await;
    assert_eq!(a.closed_with().await, Some(CloseCode::Size));
    assert!(matches!(b.recv().await, Message::PeerLeft(_)));
    // A frame just under the limit is fine, and other rooms never noticed.
    let (mut e, _) = join(&server, "big").await;
    let fits = format!(r#"{{"message_type":"SDP","content":{{"type":"offer","sdp":"{}"}}}}"#, "x".repeat(60 * 1024));
    e.send_text(&fits).await;
    assert!(matches!(b.recv().await, Message::PeerJoined(_)));
    assert_eq!(b.recv_text().await, fits);
    c.send_text(r#"{"message_type":"BYE"}"#).await;
    assert_eq!(d.recv_text().await, r#"{"message_type":"BYE"}"#);
}

#[tokio::test]
async fn a_flood_is_throttled_then_closed_with_1008() {
    // 1 message a second: a burst of 4 passes; 5 refusals (more than the burst) close the socket.
    let server = start(&["--rate-limit", "1"]);
    let (mut a, mut b) = pair(&server, "flood").await;
    let (mut c, mut d) = pair(&server, "bystanders").await;
    let frame = r#"{"message_type":"CANDIDATE","content":null}"#;
    for _ in 0..9 {
        a.send_text(frame).await;
    }
    expect_error(a.recv().await, ErrorCode::RateLimited);
    assert_eq!(a.closed_with().await, Some(CloseCode::Policy));
    for _ in 0..4 {
        assert_eq!(b.recv_text().await, frame);
    }
    assert!(matches!(b.recv().await, Message::PeerLeft(_)), "the refused ones were not relayed");
    c.send_text(frame).await;
    assert_eq!(d.recv_text().await, frame);
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_dropped_and_memory_stays_bounded() {
    let server = start(&["--rate-limit", "100000"]);
    let (mut a, b) = pair(&server, "slow").await;
    // b never reads again. Send far more than its queue and the socket buffers can hold.
    let frame = format!(r#"{{"message_type":"SDP","content":{{"type":"offer","sdp":"{}"}}}}"#, "x".repeat(60 * 1024));
    let sender = tokio::spawn(async move {
        for _ in 0..2000 {
            if a.socket.send(Ws::text(frame.as_str())).await.is_err() {
                break;
            }
        }
        a
    });
    let mut a = sender.await.unwrap();
    // While b's queue is full, but for less than a stall, a is told to slow down (issue 31).
    loop {
        match a.recv().await {
            Message::PeerLeft(_) => break,
            Message::Error(error) => assert_eq!(error.code, ErrorCode::RateLimited),
            other => panic!("{other:?}"),
        }
    }
    drop(b);
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_idle_timeout() {
    let server = start(&["--idle-timeout", "1"]);
    let (mut a, _b_never_polled) = pair(&server, "idle").await;
    // a keeps reading (and so answers pings); the silent b goes, a stays.
    let started = std::time::Instant::now();
    assert!(matches!(a.recv().await, Message::PeerLeft(_)));
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the timeout");
    a.expect_silence(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn a_socket_that_dies_without_closing_is_reported_as_left() {
    let server = start(&[]);
    let (mut a, b) = pair(&server, "die").await;
    drop(b); // drops the TCP connection with no close frame
    assert!(matches!(a.recv().await, Message::PeerLeft(_)));
}

#[tokio::test]
async fn a_reconnecting_session_takes_its_place_back_and_the_old_socket_is_closed_with_4004() {
    let server = start(&[]);
    let (mut alice, _) = join(&server, "resume?session=alice-0123456789ab").await;
    let (mut old_bob, bob_welcome) = join(&server, "resume?session=bob-0123456789abcd").await;
    let alice_id = bob_welcome.peer_public_id.expect("alice named a session, so she has a public id");
    let Message::PeerJoined(joined) = alice.recv().await else { panic!("PEER_JOINED expected") };
    let bob_id = joined.public_id.expect("bob has a public id");

    let (mut new_bob, again) = join(&server, "resume?session=bob-0123456789abcd").await;
    assert_eq!(again.polite, bob_welcome.polite);
    assert_eq!(again.peer_public_id.as_ref(), Some(&alice_id));
    assert_eq!(old_bob.closed_with().await, Some(CloseCode::from(close_code::REPLACED)));
    assert!(
        matches!(alice.recv().await, Message::PeerJoined(info) if info.public_id.as_ref() == Some(&bob_id)),
        "the same person came back"
    );
    alice.expect_silence(Duration::from_millis(300)).await; // no PEER_LEFT for the replaced socket
    alice.send_text(r#"{"message_type":"BYE"}"#).await;
    assert_eq!(new_bob.recv_text().await, r#"{"message_type":"BYE"}"#);

    for bad in ["not%20ok-not%20ok-not%20ok", "too-short"] {
        let error = Client::connect(&server, &format!("resume?session={bad}"), None).await.err().expect("refused");
        assert_eq!(refusal_status(error), 400, "{bad}");
    }
}

#[tokio::test]
async fn no_one_learns_the_other_persons_session_and_a_public_id_takes_no_place() {
    let server = start(&["--max-room-size", "2"]);
    let (alice_session, bob_session) = ("A1ice-secret-session-0123456789", "B0b-secret-session-0123456789");
    let mut alice = Client::connect(&server, &format!("private?session={alice_session}"), None).await.unwrap();
    let mut seen_by_alice = vec![alice.recv_text().await];
    let mut bob = Client::connect(&server, &format!("private?session={bob_session}"), None).await.unwrap();
    let mut seen_by_bob = vec![bob.recv_text().await];
    seen_by_alice.push(alice.recv_text().await); // PEER_JOINED
                                                 // Bob's connection drops and comes back; then he leaves for good.
    drop(bob);
    seen_by_alice.push(alice.recv_text().await); // PEER_LEFT
    let mut bob = Client::connect(&server, &format!("private?session={bob_session}"), None).await.unwrap();
    seen_by_bob.push(bob.recv_text().await);
    seen_by_alice.push(alice.recv_text().await); // PEER_JOINED again

    let Ok(Message::Welcome(welcome)) = serde_json::from_str(&seen_by_bob[1]) else { panic!("{seen_by_bob:?}") };
    let alice_public_id = welcome.peer_public_id.expect("Bob recognises Alice by her public id");
    for text in &seen_by_alice {
        assert!(!text.contains(bob_session), "Alice received Bob's session: {text}");
    }
    for text in &seen_by_bob {
        assert!(!text.contains(alice_session), "Bob received Alice's session: {text}");
    }

    // Bob tries to push Alice out of her own call by connecting with what he knows of her.
    let thief = Client::connect(&server, &format!("private?session={alice_public_id}"), None).await;
    let mut thief = thief.expect("upgrade accepted");
    expect_error(thief.recv().await, ErrorCode::RoomFull);
    assert_eq!(thief.closed_with().await, Some(CloseCode::from(close_code::ROOM_FULL)));
    // Alice is still there and still talks to Bob.
    alice.send_text(r#"{"message_type":"BYE"}"#).await;
    assert_eq!(bob.recv_text().await, r#"{"message_type":"BYE"}"#);
    alice.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_connection_opened_with_join_later_holds_no_place_until_it_sends_join() {
    let server = start(&["--max-room-size", "2"]);
    let mut early = Client::connect(&server, "later?join=later", None).await.expect("upgrade accepted");
    sees(&mut early, &[]).await;
    // Invisible to the room: the first person sees no one, and it is told only who is there.
    let (mut a, welcome) = join(&server, "later").await;
    assert!(!welcome.peer_present);
    sees(&mut early, &[(None, None)]).await;
    early.expect_silence(Duration::from_millis(300)).await;
    // It may only ask to join; anything else is refused and it stays connected.
    early.send(&Message::Bye(None)).await;
    assert!(expect_error(early.recv().await, ErrorCode::BadMessage).contains("send JOIN first"));
    early.send(&Message::Join(None)).await;
    let Message::Welcome(joined) = early.recv().await else { panic!("expected WELCOME") };
    assert!(joined.peer_present);
    assert_ne!(joined.polite, welcome.polite);
    assert!(matches!(a.recv().await, Message::PeerJoined(_)));
    // A member relays as any other, and a second JOIN is a mistake.
    early.send_text(r#"{"message_type":"BYE"}"#).await;
    assert_eq!(a.recv_text().await, r#"{"message_type":"BYE"}"#);
    early.send(&Message::Join(None)).await;
    assert!(expect_error(early.recv().await, ErrorCode::BadMessage).contains("in its room already"));

    // Waiting connections take no place: with two in the room, a third joining later is
    // refused only when it asks.
    let mut third = Client::connect(&server, "later?join=later", None).await.expect("upgrade accepted");
    sees(&mut third, &[(None, None), (None, None)]).await;
    third.expect_silence(Duration::from_millis(200)).await;
    third.send(&Message::Join(None)).await;
    expect_error(third.recv().await, ErrorCode::RoomFull);
    assert_eq!(third.closed_with().await, Some(CloseCode::from(close_code::ROOM_FULL)));

    let error = Client::connect(&server, "later?join=soon", None).await.err().expect("refused");
    assert_eq!(refusal_status(error), 400);
}

#[tokio::test]
async fn someone_waiting_to_join_sees_who_is_in_the_call_by_name_and_each_change() {
    let server = start(&[]);
    let session = |name: &str| format!("{name}-session-0123456789");
    // Ada opens her page and joins under her name (which the server cleans as browsers do).
    let ada_url = format!("names?join=later&session={}", session("ada"));
    let mut ada = Client::connect(&server, &ada_url, None).await.expect("upgrade accepted");
    sees(&mut ada, &[]).await;
    ada.send_text(r#"{"message_type":"JOIN","content":{"name":" Ada\u202e "}}"#).await;
    assert!(matches!(ada.recv().await, Message::Welcome(_)));
    // Eve opens the link (on the other instance, with two): she sees Ada, by name.
    let mut eve = Client::connect(&server, "names?join=later", None).await.expect("upgrade accepted");
    let (mut bob, welcome) = join(&server, &format!("names?session={}", session("bob"))).await;
    let ada_id = welcome.peers[0].public_id.clone();
    let Message::PeerJoined(joined) = ada.recv().await else { panic!("PEER_JOINED expected") };
    let bob_id = joined.public_id;
    assert!(ada_id.is_some() && bob_id.is_some());
    // Bob, a classic client, gives no name.
    sees(&mut eve, &[(ada_id.as_deref(), Some("Ada")), (bob_id.as_deref(), None)]).await;
    // Renames reach her, and no one in the call hears them from the server.
    ada.send(&Message::Name("Ada L".into())).await;
    sees(&mut eve, &[(ada_id.as_deref(), Some("Ada L")), (bob_id.as_deref(), None)]).await;
    bob.send(&Message::Name("\u{200b}".into())).await;
    eve.expect_silence(Duration::from_millis(300)).await;
    // A NAME that is not a string is refused; it harms no one.
    for bad in [r#"{"name":"Mallory"}"#, "7", "null", r#"["Mallory"]"#] {
        bob.send_text(&format!(r#"{{"message_type":"NAME","content":{bad}}}"#)).await;
        assert!(expect_error(bob.recv().await, ErrorCode::BadMessage).contains("NAME"), "{bad}");
    }
    bob.send_text(r#"{"message_type":"NAME"}"#).await;
    expect_error(bob.recv().await, ErrorCode::BadMessage);
    ada.expect_silence(Duration::from_millis(200)).await;
    eve.expect_silence(Duration::from_millis(200)).await;
    bob.send_text(r#"{"message_type":"BYE"}"#).await;
    assert_eq!(ada.recv_text().await, r#"{"message_type":"BYE"}"#);
    // Bob leaves: Eve sees him go.
    drop(bob);
    assert!(matches!(ada.recv().await, Message::PeerLeft(_)));
    sees(&mut eve, &[(ada_id.as_deref(), Some("Ada L"))]).await;
    // Once Eve joins, she hears of the room as a member does, and no more PRESENT.
    eve.send(&Message::Join(None)).await;
    let Message::Welcome(welcome) = eve.recv().await else { panic!("WELCOME expected") };
    assert_eq!(welcome.peers[0].public_id, ada_id);
    assert!(matches!(ada.recv().await, Message::PeerJoined(_)));
    ada.send(&Message::Name("Ada".into())).await;
    eve.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_connection_waiting_to_join_is_held_to_the_same_limits() {
    let server = start(&["--rate-limit", "1", "--idle-timeout", "1"]);
    // A flood before JOIN: throttled, then closed with 1008, as a member's would be.
    let mut flooder = Client::connect(&server, "waiting?join=later", None).await.expect("upgrade accepted");
    for _ in 0..9 {
        flooder.send_text(r#"{"message_type":"BYE"}"#).await;
    }
    let mut codes = Vec::new();
    for _ in 0..7 {
        match flooder.recv().await {
            Message::Error(body) => codes.push(body.code),
            Message::Present(_) => continue,
            other => panic!("expected ERROR, got {other:?}"),
        }
        if codes.last() == Some(&ErrorCode::RateLimited) {
            break;
        }
    }
    assert_eq!(codes.last(), Some(&ErrorCode::RateLimited), "{codes:?}");
    assert_eq!(flooder.closed_with().await, Some(CloseCode::Policy));
    // A silent one is dropped after the idle timeout.
    let mut silent = Client::connect(&server, "waiting?join=later", None).await.expect("upgrade accepted");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(silent.closed_with().await, Some(CloseCode::from(close_code::IDLE_TIMEOUT)));
}

#[tokio::test]
async fn a_room_of_four_admits_four_and_refuses_the_fifth_without_disturbing_anyone() {
    let server = start(&["--max-room-size", "4"]);
    let mut people = Vec::new();
    for i in 0..4 {
        let (client, welcome) = join(&server, "four").await;
        assert_eq!(welcome.peers.len(), i, "WELCOME lists everyone already there");
        people.push((client, welcome));
    }
    // Everyone hears of everyone who came after them.
    for i in 0..4 {
        for later in i + 1..4 {
            let expected = people[later].1.peer_id;
            match people[i].0.recv().await {
                Message::PeerJoined(info) => assert_eq!(info.peer_id, expected),
                other => panic!("expected PEER_JOINED, got {other:?}"),
            }
        }
    }
    let mut fifth = Client::connect(&server, "four", None).await.unwrap();
    expect_error(fifth.recv().await, ErrorCode::RoomFull);
    assert_eq!(fifth.closed_with().await, Some(CloseCode::from(close_code::ROOM_FULL)));
    for (client, _) in &mut people {
        client.expect_silence(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn messages_name_their_recipient_and_the_server_stamps_the_sender() {
    let server = start(&["--max-room-size", "3"]);
    let (mut a, first) = join(&server, "to-from").await;
    let (mut b, second) = join(&server, "to-from").await;
    assert!(matches!(a.recv().await, Message::PeerJoined(_)));
    let (mut c, third) = join(&server, "to-from").await;
    for client in [&mut a, &mut b] {
        assert!(matches!(client.recv().await, Message::PeerJoined(_)));
    }
    let (a_id, c_id) = (first.peer_id.0, third.peer_id.0);
    // To one person, with a forged sender: only they get it, stamped with the real one.
    let offer = r#"{"message_type":"SDP","content":{"type":"offer","sdp":"v=0\r\n"}"#;
    a.send_text(&format!(r#"{offer},"to":{c_id},"from":{}}}"#, second.peer_id.0)).await;
    assert_eq!(c.recv_text().await, format!(r#"{offer},"to":{c_id},"from":{a_id}}}"#));
    b.expect_silence(Duration::from_millis(200)).await;
    // Without a recipient among several: refused, and no one gets it.
    a.send_text(r#"{"message_type":"BYE"}"#).await;
    assert!(expect_error(a.recv().await, ErrorCode::BadMessage).contains("several other people"));
    // To yourself, or to someone not in the room: refused.
    a.send_text(&format!(r#"{{"message_type":"BYE","to":{a_id}}}"#)).await;
    assert!(expect_error(a.recv().await, ErrorCode::BadMessage).contains("yourself"));
    let gone = a_id ^ c_id ^ second.peer_id.0 ^ 1;
    a.send_text(&format!(r#"{{"message_type":"BYE","to":{gone}}}"#)).await;
    assert!(expect_error(a.recv().await, ErrorCode::BadMessage).contains(&format!("no one with peer id {gone}")));
    a.send_text(r#"{"message_type":"BYE","to":"everyone"}"#).await;
    assert!(expect_error(a.recv().await, ErrorCode::BadMessage).contains("peer id"));
    for client in [&mut b, &mut c] {
        client.expect_silence(Duration::from_millis(200)).await;
    }
    // When c leaves, a and b are both told; a and b are two again, and need no names.
    drop(c);
    for client in [&mut a, &mut b] {
        assert!(matches!(client.recv().await, Message::PeerLeft(info) if info.peer_id.0 == c_id));
    }
    a.send_text(r#"{"message_type":"BYE"}"#).await;
    assert_eq!(b.recv_text().await, r#"{"message_type":"BYE"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_rooms_relay_every_message_once_in_order_to_the_right_peer() {
    const ROOMS: usize = 200;
    const MESSAGES: usize = 50;
    let server = start(&[
        "--rate-limit",
        "100000",
        "--max-sockets-per-client",
        "1000",
        "--sockets-per-minute-per-client",
        "1000",
        "--connections-per-second-per-client",
        "1000",
        "--max-connections-per-client",
        "1000",
    ]);
    let mut calls = Vec::new();
    for room in 0..ROOMS {
        let server_room = format!("load-{room}");
        calls.push(pair(&server, &server_room).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (room, (a, b)) in calls.into_iter().enumerate() {
        for (me, client) in [("a", a), ("b", b)] {
            let other = if me == "a" { "b" } else { "a" };
            tasks.spawn(async move {
                let (mut tx, mut rx) = client.socket.split();
                let send = async {
                    for seq in 0..MESSAGES {
                        let text = format!(
                            r#"{{"message_type":"CANDIDATE","content":{{"candidate":"room {room} from {me} seq {seq}","sdpMid":"0"}}}}"#
                        );
                        tx.send(Ws::text(text)).await.unwrap();
                    }
                };
                let receive = async {
                    for seq in 0..MESSAGES {
                        let text = loop {
                            match tokio::time::timeout(Duration::from_secs(30), rx.next()).await.unwrap().unwrap().unwrap() {
                                Ws::Text(text) => break text,
                                _ => continue,
                            }
                        };
                        let expected = format!("room {room} from {other} seq {seq}");
                        assert!(text.contains(&format!("\"{expected}\"")), "room {room} peer {me}: expected {expected}, got {text}");
                    }
                };
                tokio::join!(send, receive);
                (room, me, rx)
            });
        }
    }
    let mut receivers = Vec::new();
    while let Some(result) = tasks.join_next().await {
        receivers.push(result.unwrap());
    }
    // Exactly once: with every peer still connected, nothing more arrives anywhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (room, me, rx) in &mut receivers {
        let extra = futures_util::FutureExt::now_or_never(rx.next());
        assert!(matches!(extra, None | Some(Some(Ok(Ws::Ping(_))))), "room {room} peer {me} got more: {extra:?}");
    }
}

