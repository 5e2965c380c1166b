//! The forwarding unit through the real server (`--media sfu`): browser stand-ins (str0m peers on
//! real UDP sockets) join a room over real signaling, offer what they send with `MEDIA_SDP`,
//! answer the server's offers, and hear each other through the server.

mod common;

use std::time::{Duration, Instant};

use common::{join, Client, Server};
use duo::protocol::{MediaDescription, MediaRoute, Message, PeerId, SdpType};
use str0m::{
    change::{SdpAnswer, SdpOffer},
    media::{Direction, Frequency, MediaKind, MediaTime, Mid},
    net::{Protocol, Receive},
    Candidate, Event, Input, Output, Rtc, RtcConfig,
};
use tokio::net::UdpSocket;

/// A browser: its signaling socket, and a str0m peer with a microphone on a UDP socket.
struct Browser {
    signaling: Client,
    peer_id: PeerId,
    rtc: Rtc,
    udp: UdpSocket,
    microphone: Mid,
    /// What arrived, by the server's m-line.
    frames: Vec<Mid>,
    /// The server's m-lines, as its last offer named them.
    tracks: Vec<(String, PeerId)>,
    /// The server's media address and ICE username fragment for this person, from its answer.
    server: (std::net::SocketAddr, String),
    /// The longest `MEDIA_SDP` the server sent it, and the longest it sent back, in bytes.
    longest: (usize, usize),
}

impl Browser {
    async fn join(server: &Server, room: &str) -> Self {
        let (mut signaling, welcome) = join(server, room).await;
        assert_eq!(welcome.media, MediaRoute::Sfu);
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut rtc = RtcConfig::new().clear_codecs().enable_opus(true, false).enable_vp8(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(udp.local_addr().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        let microphone = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        // A camera too, as a page offers: every other person is two m-lines of the server's.
        change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let offer = MediaDescription { kind: SdpType::Offer, sdp: offer.to_sdp_string(), tracks: Vec::new() };
        signaling.send(&Message::MediaSdp(offer)).await;
        let answer = loop {
            match signaling.recv().await {
                Message::MediaSdp(answer) if answer.kind == SdpType::Answer => break answer,
                Message::PeerJoined(_) | Message::MediaSdp(_) => continue,
                other => panic!("expected the server's answer, got {other:?}"),
            }
        };
        let line = |prefix: &str| answer.sdp.lines().find_map(|line| line.strip_prefix(prefix)).unwrap().to_owned();
        let candidate = line("a=candidate:");
        let fields: Vec<&str> = candidate.split(' ').collect();
        let server = (format!("{}:{}", fields[4], fields[5]).parse().unwrap(), line("a=ice-ufrag:"));
        rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer.sdp).unwrap()).unwrap();
        let (frames, tracks) = (Vec::new(), Vec::new());
        let longest = (0, 0);
        Self { signaling, peer_id: welcome.peer_id, rtc, udp, microphone, frames, tracks, server, longest }
    }

    /// Sends what the peer has, takes what came (datagrams for 10 ms, and any offer of the
    /// server's, which it answers), and moves its clock on.
    async fn step(&mut self) {
        while let Ok(output) = self.rtc.poll_output() {
            match output {
                Output::Transmit(transmit) => {
                    self.udp.send_to(&transmit.contents, transmit.destination).await.unwrap();
                }
                Output::Event(Event::MediaData(frame)) => self.frames.push(frame.mid),
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
        let mut buffer = [0; 2048];
        if let Ok(Ok((length, source))) =
            tokio::time::timeout(Duration::from_millis(10), self.udp.recv_from(&mut buffer)).await
        {
            let local = self.udp.local_addr().unwrap();
            let receive = Receive::new(Protocol::Udp, source, local, &buffer[..length]).unwrap();
            self.rtc.handle_input(Input::Receive(Instant::now(), receive)).unwrap();
        }
        if let Ok(text) = tokio::time::timeout(Duration::from_millis(1), self.signaling.recv_text()).await {
            if let Ok(Message::MediaSdp(offer)) = serde_json::from_str(&text) {
                assert_eq!(offer.kind, SdpType::Offer);
                let answer = self.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer.sdp).unwrap()).unwrap();
                let answer = Message::MediaSdp(MediaDescription {
                    kind: SdpType::Answer,
                    sdp: answer.to_sdp_string(),
                    tracks: Vec::new(),
                });
                self.longest = (self.longest.0.max(text.len()), self.longest.1.max(answer.to_json().len()));
                self.signaling.send(&answer).await;
                self.tracks = offer.tracks.into_iter().map(|track| (track.mid, track.peer_id)).collect();
            }
        }
        self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
    }

    /// One 20 ms Opus frame, numbered `frame`.
    fn speak(&mut self, frame: u64) {
        let writer = self.rtc.writer(self.microphone).unwrap();
        let pt = writer.payload_params().next().unwrap().pt();
        let time = MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ);
        writer.write(pt, Instant::now(), time, vec![0x55; 40]).unwrap();
    }

    /// Whether a frame came on the server's m-line that its offer said carries `whose` media.
    fn heard(&self, whose: PeerId) -> bool {
        self.frames
            .iter()
            .any(|mid| self.tracks.iter().any(|(track, peer)| *track == mid.to_string() && *peer == whose))
    }
}

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
    // And `/metrics` says so.
    let metrics = metrics_when(&server, |metrics| {
        let value = |name: &str| try_metric(metrics, name);
        value("duo_sfu_people ") == Some(3.0) && value("duo_sfu_tracks_forwarded ") == Some(4.0)
    })
    .await;
    let value = |name: &str| metric(&metrics, name);
    assert_eq!(value("duo_sfu_people "), 3.0);
    assert_eq!(value("duo_sfu_rooms "), 2.0);
    // Each of Ann's microphone and camera to Bob, and his to her.
    assert_eq!(value("duo_sfu_tracks_forwarded "), 4.0);
    assert!(value("duo_sfu_bytes_total{direction=\"in\"} ") > 1_000.0);
    assert!(value("duo_sfu_bytes_total{direction=\"out\"} ") > 1_000.0);
    assert!(value("duo_sfu_frames_total{direction=\"out\"} ") >= 2.0);
    assert!(value("duo_sfu_frames_total{direction=\"in\"} ") >= 2.0);
}

/// The value of the metric line that starts with `name` (labels included).
fn metric(metrics: &str, name: &str) -> f64 {
    try_metric(metrics, name).unwrap_or_else(|| panic!("no {name}"))
}

fn try_metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
}

/// `/metrics` once `holds` says it is up to date (the forwarding unit tells it what changed up
/// to 100 ms late), or as it is after five seconds.
async fn metrics_when(server: &Server, holds: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let metrics = common::get(server.metrics_addr, "/metrics").await.body;
        if holds(&metrics) || started.elapsed() > Duration::from_secs(5) {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let (media, ufrag) = ann.server.clone();
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
    let started = Instant::now();
    let mut frame = 0;
    loop {
        let everyone: Vec<PeerId> = room.iter().map(|browser| browser.peer_id).collect();
        let unheard = room
            .iter()
            .map(|browser| everyone.iter().filter(|&&other| other != browser.peer_id && !browser.heard(other)).count())
            .sum::<usize>();
        if unheard == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{unheard} of 600 pairs not heard in 60 s");
        for browser in &mut room {
            if browser.rtc.is_connected() {
                browser.speak(frame);
            }
            browser.step().await;
        }
        frame += 1;
    }
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
