//! The forwarding unit through the real server (`--media sfu`): browser stand-ins (str0m peers on
//! real UDP sockets) join a room over real signaling, offer what they send with `MEDIA_SDP`,
//! answer the server's offers, and hear each other through the server.

mod common;

use std::time::{Duration, Instant};

use common::{
    browser::{until_everyone_hears_everyone, Browser},
    join, metrics_when, try_metric, Server,
};
use duo::protocol::{MediaDescription, MediaRoute, Message, SdpType};
use tokio::net::UdpSocket;

#[tokio::test]
async fn two_people_hear_each_other_through_the_server_and_a_third_room_hears_nothing() {
    let server = Server::start(&["--media", "sfu", "--media-addr", "127.0.0.1:0"]);
    let mut ann = Browser::join(&server, "sfu-room").await;
    let mut bob = Browser::join(&server, "sfu-room").await;
    let mut cy = Browser::join(&server, "another-room").await;
    let started = Instant::now();
    let mut frame = 0;
    while !(bob.heard(ann.peer_id) && ann.heard(bob.peer_id)) {
        assert!(started.elapsed() < Duration::from_secs(15), "no audio both ways through the server in 15 s");
        if ann.rtc.is_connected() && bob.rtc.is_connected() {
            ann.speak(frame);
            bob.speak(frame);
            frame += 1;
        }
        for browser in [&mut ann, &mut bob, &mut cy] {
            browser.step().await;
        }
    }
    assert!(cy.frames.is_empty(), "another room's audio reached Cy");
    // And `/metrics` says so, once the forwarding unit has reported the packets (it reports at
    // most every 100 ms, so a report may show the people and tracks before them).
    let metrics = metrics_when(&server, |metrics| {
        let value = |name: &str| try_metric(metrics, name);
        value("duo_sfu_people ") == Some(3.0)
            && value("duo_sfu_tracks_forwarded ") == Some(4.0)
            && value("duo_sfu_packets_total{direction=\"out\"} ").is_some_and(|out| out > 0.0)
    })
    .await;
    let value = |name: &str| metric(&metrics, name);
    assert_eq!(value("duo_sfu_people "), 3.0);
    assert_eq!(value("duo_sfu_rooms "), 2.0);
    // Each of Ann's microphone and camera to Bob, and his to her.
    assert_eq!(value("duo_sfu_tracks_forwarded "), 4.0);
    assert!(value("duo_sfu_bytes_total{direction=\"in\"} ") > 1_000.0);
    assert!(value("duo_sfu_bytes_total{direction=\"out\"} ") > 1_000.0);
    assert!(value("duo_sfu_packets_total{direction=\"out\"} ") >= 2.0);
    assert!(value("duo_sfu_packets_total{direction=\"in\"} ") >= 2.0);
}

/// The value of the metric line that starts with `name` (labels included).
fn metric(metrics: &str, name: &str) -> f64 {
    try_metric(metrics, name).unwrap_or_else(|| panic!("no {name}"))
}

/// CRC-32 (IEEE), for STUN's FINGERPRINT.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, byte| {
        (0..8).fold(crc ^ u32::from(*byte), |crc, _| if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 })
    })
}

/// A well-formed STUN binding request naming `username`, with a MESSAGE-INTEGRITY no password
/// made.
fn forged_binding(username: &str, id: u8) -> Vec<u8> {
    let mut attributes = Vec::new();
    let name = username.as_bytes();
    attributes.extend_from_slice(&0x0006u16.to_be_bytes());
    attributes.extend_from_slice(&(name.len() as u16).to_be_bytes());
    attributes.extend_from_slice(name);
    attributes.resize(attributes.len().div_ceil(4) * 4, 0);
    // PRIORITY, which every binding request of ICE carries.
    attributes.extend_from_slice(&[0x00, 0x24, 0x00, 0x04]);
    attributes.extend_from_slice(&0x6E00_1EFFu32.to_be_bytes());
    attributes.extend_from_slice(&0x0008u16.to_be_bytes());
    attributes.extend_from_slice(&20u16.to_be_bytes());
    attributes.extend_from_slice(&[0xAB; 20]);
    let mut message = vec![0x00, 0x01];
    message.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    message.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    message.extend_from_slice(&[id; 12]);
    message.extend_from_slice(&attributes);
    // FINGERPRINT last, its length counted in the header before the CRC is taken.
    let length = (message.len() - 20 + 8) as u16;
    message[2..4].copy_from_slice(&length.to_be_bytes());
    let fingerprint = crc32(&message) ^ 0x5354_554E;
    message.extend_from_slice(&0x8028u16.to_be_bytes());
    message.extend_from_slice(&4u16.to_be_bytes());
    message.extend_from_slice(&fingerprint.to_be_bytes());
    message
}

#[tokio::test]
async fn a_flood_from_strangers_and_checks_with_someone_elses_ufrag_harm_no_call_and_are_counted() {
    let server = Server::start(&["--media", "sfu", "--media-addr", "127.0.0.1:0"]);
    let mut ann = Browser::join(&server, "flooded").await;
    let mut bob = Browser::join(&server, "flooded").await;
    let mut frame = 0;
    let mut talk = async |ann: &mut Browser, bob: &mut Browser, frames: usize| {
        let (heard_ann, heard_bob) = (bob.frames.len(), ann.frames.len());
        let started = Instant::now();
        while bob.frames.len() < heard_ann + frames || ann.frames.len() < heard_bob + frames {
            assert!(started.elapsed() < Duration::from_secs(15), "the call stopped");
            if ann.rtc.is_connected() && bob.rtc.is_connected() {
                ann.speak(frame);
                bob.speak(frame);
                frame += 1;
            }
            ann.step().await;
            bob.step().await;
        }
    };
    talk(&mut ann, &mut bob, 5).await;
    // Someone who never signaled: garbage, RTP-looking datagrams, and binding requests that name
    // Ann's ufrag on the server with a password they do not have.
    let mallory = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (media, ufrag) = ann.server.clone().expect("answered");
    for n in 0..3_000u32 {
        let datagram = match n % 3 {
            0 => n.to_be_bytes().repeat(30),
            1 => [&[0x80u8, 111][..], &n.to_be_bytes().repeat(40)].concat(),
            _ => forged_binding(&format!("{ufrag}:mallory"), n as u8),
        };
        mallory.send_to(&datagram, media).await.unwrap();
        if n % 100 == 0 {
            talk(&mut ann, &mut bob, 1).await;
        }
    }
    // Their call goes on, and what came is counted by kind.
    talk(&mut ann, &mut bob, 10).await;
    let metrics = metrics_when(&server, |metrics| {
        let value =
            |reason: &str| try_metric(metrics, &format!("duo_sfu_datagrams_dropped_total{{reason=\"{reason}\"}} "));
        value("unknown_source") >= Some(2_000.0) && value("refused_check") >= Some(900.0)
    })
    .await;
    let strangers = metric(&metrics, "duo_sfu_datagrams_dropped_total{reason=\"unknown_source\"} ");
    let refused = metric(&metrics, "duo_sfu_datagrams_dropped_total{reason=\"refused_check\"} ");
    let malformed = metric(&metrics, "duo_sfu_datagrams_dropped_total{reason=\"malformed\"} ");
    assert!(
        strangers >= 2_000.0 && refused >= 900.0,
        "{strangers} from strangers, {refused} refused checks, {malformed} malformed"
    );
}

#[tokio::test]
async fn a_room_of_twenty_five_everyone_hears_everyone_else_and_the_descriptions_fit_the_frame_limit() {
    // Twenty-five people from one address (this machine): more open sockets than one client is
    // allowed by default.
    let server = Server::start(&["--media", "sfu", "--media-addr", "127.0.0.1:0", "--max-sockets-per-client", "32"]);
    let mut room = Vec::new();
    for _ in 0..25 {
        room.push(Browser::join(&server, "twenty-five").await);
    }
    until_everyone_hears_everyone(&mut room, Duration::from_secs(60)).await;
    // Every description fits a frame (the browser's answer is what the server's limit bounds).
    let offer = room.iter().map(|browser| browser.longest.0).max().unwrap();
    let answer = room.iter().map(|browser| browser.longest.1).max().unwrap();
    println!("the longest offer {offer} bytes, the longest answer {answer} bytes");
    assert!(answer < duo::protocol::MAX_FRAME_BYTES, "an answer of {answer} bytes");
    assert!(room.iter().all(|browser| browser.tracks.len() == 48), "two m-lines for each of the 24 others");
}

#[tokio::test]
async fn media_sdp_in_a_mesh_room_is_refused_and_the_connection_stays() {
    let server = Server::start(&[]);
    let (mut ann, welcome) = join(&server, "mesh-room").await;
    assert_eq!(welcome.media, MediaRoute::Mesh);
    let offer = MediaDescription { kind: SdpType::Offer, sdp: "v=0\r\n".into(), tracks: Vec::new() };
    ann.send(&Message::MediaSdp(offer)).await;
    match ann.recv().await {
        Message::Error(error) => assert!(error.message.contains("browser to browser"), "{error:?}"),
        other => panic!("expected an ERROR, got {other:?}"),
    }
    // Still served.
    ann.send(&Message::Name("Ann".into())).await;
    ann.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_bad_offer_or_an_unasked_answer_gets_an_error_and_the_call_goes_on() {
    let server = Server::start(&["--media", "sfu", "--media-addr", "127.0.0.1:0"]);
    let (mut ann, _) = join(&server, "room").await;
    for (kind, sdp, said) in [
        (SdpType::Offer, "not an sdp", "not a session description"),
        (SdpType::Answer, "v=0\r\n", "session description"),
        (SdpType::Rollback, "", "an offer or an answer"),
    ] {
        ann.send(&Message::MediaSdp(MediaDescription { kind, sdp: sdp.into(), tracks: Vec::new() })).await;
        match ann.recv().await {
            Message::Error(error) => assert!(error.message.contains(said), "{kind:?}: {error:?}"),
            other => panic!("expected an ERROR, got {other:?}"),
        }
    }
}
