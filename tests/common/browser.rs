//! A browser stand-in for the forwarding unit: its signaling socket, and a str0m peer with a
//! microphone and a camera on a real UDP socket. It offers what it sends, answers the server's
//! offers, and connects afresh when the server says the room's media moved (`MEDIA_ROUTE` with
//! `reconnect`), as a page does.

use std::time::{Duration, Instant};

use duo::protocol::{MediaDescription, MediaRoute, Message, PeerId, SdpType};
use str0m::{
    change::{SdpAnswer, SdpOffer, SdpPendingOffer},
    media::{Direction, Frequency, MediaKind, MediaTime, Mid},
    net::{Protocol, Receive},
    Candidate, Event, Input, Output, Rtc, RtcConfig,
};
use tokio::net::UdpSocket;

use super::{join, Client, Server};

pub struct Browser {
    pub signaling: Client,
    pub peer_id: PeerId,
    pub rtc: Rtc,
    pub udp: UdpSocket,
    microphone: Mid,
    /// What arrived, by the server's m-line, on the current connection.
    pub frames: Vec<Mid>,
    /// The server's m-lines, as its last offer named them.
    pub tracks: Vec<(String, PeerId)>,
    /// The server's media address and ICE username fragment for this person, from its answer.
    pub server: Option<(std::net::SocketAddr, String)>,
    /// The longest `MEDIA_SDP` the server sent it, and the longest it sent back, in bytes.
    pub longest: (usize, usize),
    /// How often the server said to connect afresh.
    pub reconnects: usize,
    /// This side's offer, until the server answers it.
    pending: Option<SdpPendingOffer>,
}

impl Browser {
    /// Joins `room` on `server` and offers (the answer comes as it [`Self::step`]s).
    pub async fn join(server: &Server, room: &str) -> Self {
        let (signaling, welcome) = join(server, room).await;
        assert_eq!(welcome.media, MediaRoute::Sfu);
        let (udp, rtc, microphone, pending) = Self::connection().await;
        let mut browser = Self {
            signaling,
            peer_id: welcome.peer_id,
            rtc,
            udp,
            microphone,
            frames: Vec::new(),
            tracks: Vec::new(),
            server: None,
            longest: (0, 0),
            reconnects: 0,
            pending: None,
        };
        browser.offer(pending).await;
        browser
    }

    /// A new peer connection on a socket of its own, with a microphone and a camera to offer (as
    /// a page does: every other person is two m-lines of the server's).
    async fn connection() -> (UdpSocket, Rtc, Mid, (SdpOffer, SdpPendingOffer)) {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut rtc = RtcConfig::new().clear_codecs().enable_opus(true, false).enable_vp8(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(udp.local_addr().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        let microphone = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let offer = change.apply().unwrap();
        (udp, rtc, microphone, offer)
    }

    async fn offer(&mut self, (offer, pending): (SdpOffer, SdpPendingOffer)) {
        self.pending = Some(pending);
        let offer = MediaDescription { kind: SdpType::Offer, sdp: offer.to_sdp_string(), tracks: Vec::new() };
        self.signaling.send(&Message::MediaSdp(offer)).await;
    }

    /// A new connection, offered; what the old one heard is forgotten.
    async fn reconnect(&mut self) {
        let (udp, rtc, microphone, offer) = Self::connection().await;
        (self.udp, self.rtc, self.microphone) = (udp, rtc, microphone);
        (self.frames, self.tracks, self.server) = (Vec::new(), Vec::new(), None);
        self.offer(offer).await;
    }

    fn accept(&mut self, answer: &MediaDescription) {
        let line = |prefix: &str| answer.sdp.lines().find_map(|line| line.strip_prefix(prefix)).unwrap().to_owned();
        let candidate = line("a=candidate:");
        let fields: Vec<&str> = candidate.split(' ').collect();
        self.server = Some((format!("{}:{}", fields[4], fields[5]).parse().unwrap(), line("a=ice-ufrag:")));
        let pending = self.pending.take().expect("an answer to an offer");
        self.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer.sdp).unwrap()).unwrap();
    }

    /// Sends what the peer has, takes what came (datagrams for 10 ms, and what the server said:
    /// its offers, answered; its answer; a move), and moves its clock on.
    pub async fn step(&mut self) {
        while let Ok(output) = self.rtc.poll_output() {
            match output {
                Output::Transmit(transmit) => {
                    // (A server that is gone may refuse it.)
                    let _ = self.udp.send_to(&transmit.contents, transmit.destination).await;
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
            match serde_json::from_str(&text) {
                Ok(Message::MediaSdp(answer)) if answer.kind == SdpType::Answer => self.accept(&answer),
                Ok(Message::MediaSdp(offer)) => {
                    assert_eq!(offer.kind, SdpType::Offer);
                    let offered = SdpOffer::from_sdp_string(&offer.sdp).unwrap();
                    let answer = self.rtc.sdp_api().accept_offer(offered).unwrap();
                    let answer = Message::MediaSdp(MediaDescription {
                        kind: SdpType::Answer,
                        sdp: answer.to_sdp_string(),
                        tracks: Vec::new(),
                    });
                    self.longest = (self.longest.0.max(text.len()), self.longest.1.max(answer.to_json().len()));
                    self.signaling.send(&answer).await;
                    self.tracks = offer.tracks.into_iter().map(|track| (track.mid, track.peer_id)).collect();
                }
                Ok(Message::MediaRoute(route)) if route.reconnect => {
                    self.reconnects += 1;
                    self.reconnect().await;
                }
                _ => {}
            }
        }
        self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
    }

    /// One 20 ms Opus frame, numbered `frame`, once connected, at a speaking level (RFC 6464,
    /// as browsers say it): in a room of more than ten the server forwards only the loudest
    /// voices and whoever speaks.
    pub fn speak(&mut self, frame: u64) {
        if !self.rtc.is_connected() {
            return;
        }
        let writer = self.rtc.writer(self.microphone).unwrap().audio_level(-30, true);
        let pt = writer.payload_params().next().unwrap().pt();
        let time = MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ);
        writer.write(pt, Instant::now(), time, vec![0x55; 40]).unwrap();
    }

    /// Whether a frame came on the server's m-line that its offer said carries `whose` media.
    pub fn heard(&self, whose: PeerId) -> bool {
        self.frames
            .iter()
            .any(|mid| self.tracks.iter().any(|(track, peer)| *track == mid.to_string() && *peer == whose))
    }
}

/// Steps every browser, each speaking, until each has heard every other (on its current
/// connection), or panics after `within`.
pub async fn until_everyone_hears_everyone(room: &mut [Browser], within: Duration) {
    let started = Instant::now();
    let mut frame = 0;
    loop {
        let everyone: Vec<PeerId> = room.iter().map(|browser| browser.peer_id).collect();
        let unheard = room
            .iter()
            .map(|browser| everyone.iter().filter(|&&other| other != browser.peer_id && !browser.heard(other)).count())
            .sum::<usize>();
        if unheard == 0 {
            return;
        }
        assert!(started.elapsed() < within, "{unheard} pairs not heard within {within:?}");
        talk_round(room, frame).await;
        frame += 1;
    }
}

/// Every browser speaks its `frame` and steps once.
pub async fn talk_round(room: &mut [Browser], frame: u64) {
    for browser in room.iter_mut() {
        browser.speak(frame);
        browser.step().await;
    }
}
