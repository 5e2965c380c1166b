//! The SFU's socket edge: one task owns the media socket, the ICE-TCP connections' write ends
//! and the [`Core`], and nothing else touches them. Signaling talks to it through a [`Sfu`]
//! handle (join, offer, answer, leave); the server's own offers come back on the channel each
//! person joined with. Datagrams that cannot be sent at once (a socket's buffer full) are
//! dropped, as a router would: media is late or not at all, and ICE and DTLS send theirs again.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use str0m::net::Protocol;
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::{mpsc, oneshot},
};

use super::{
    core::{Core, Counts, Load, Offer, Path, PersonId, SfuError},
    tcp,
};
use crate::server::limits::OpenPerClient;

/// Bytes the media sockets received and sent, in all, and the ICE-TCP connections open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    pub(crate) received: u64,
    pub(crate) sent: u64,
    pub(crate) tcp_connections: usize,
}

/// Where the forwarding unit listens, and where browsers reach it (its own addresses, or the
/// public ones in front of them).
pub(crate) struct Sockets {
    pub(crate) udp: UdpSocket,
    pub(crate) udp_advertised: SocketAddr,
    pub(crate) tcp: Option<IceTcp>,
}

/// The ICE-TCP listener, where browsers reach it, and how many connections one client
/// address may hold.
pub(crate) struct IceTcp {
    pub(crate) listener: TcpListener,
    pub(crate) advertised: SocketAddr,
    pub(crate) per_client: Arc<OpenPerClient>,
}

/// The largest datagram read: above any path's MTU, so nothing is cut short.
pub(crate) const MAX_DATAGRAM: usize = 2048;
/// Datagrams read in one go once the socket has one, at most.
const BATCH: usize = 64;
/// How often `/metrics` is told what changed, at most.
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// The clock's grain for the `Rtc`s' timers: each asks for the clock on its own timers (RTCP,
/// feedback, retransmission, the data channel's), so that one wake-up serves every `Rtc` whose
/// deadline falls in the same grain rather than one each. Timers run at most this late; media
/// is never held by it (the core gives the clock at once after writing).
const TIMER_GRAIN: Duration = Duration::from_millis(10);
/// How many commands may wait for the task; signaling waits beyond that.
const COMMANDS: usize = 256;

/// Signaling's hold on the SFU task. The task ends when every handle is dropped.
#[derive(Clone)]
pub(crate) struct Sfu {
    commands: mpsc::Sender<Command>,
}

enum Command {
    Join { room: String, label: u64, offers: mpsc::UnboundedSender<Offer>, reply: oneshot::Sender<PersonId> },
    Offer { person: PersonId, sdp: String, reply: oneshot::Sender<Result<String, SfuError>> },
    Answer { person: PersonId, sdp: String, reply: oneshot::Sender<Result<(), SfuError>> },
    Leave { person: PersonId },
}

/// Why the SFU task did not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unanswered {
    #[error("the media server has stopped")]
    Stopped,
    #[error(transparent)]
    Refused(#[from] SfuError),
}

impl Sfu {
    /// Starts the task on `sockets`; refuses addresses no browser can be sent to.
    pub(crate) fn spawn(sockets: Sockets) -> Result<Self, SfuError> {
        let (commands, inbox) = mpsc::channel(COMMANDS);
        let (events, tcp_events) = mpsc::channel(COMMANDS);
        let core = Core::new(sockets.udp_advertised, sockets.tcp.as_ref().map(|tcp| tcp.advertised))?;
        if let Some(tcp) = sockets.tcp {
            tcp::spawn(tcp.listener, tcp.per_client, events);
        }
        tokio::spawn(run(sockets.udp, core, inbox, tcp_events));
        Ok(Self { commands })
    }

    /// A person of `room`, whom signaling calls `label`, arrives; the server's offers to them
    /// come on `offers`.
    pub(crate) async fn join(
        &self,
        room: &str,
        label: u64,
        offers: mpsc::UnboundedSender<Offer>,
    ) -> Result<PersonId, Unanswered> {
        let (reply, answer) = oneshot::channel();
        self.ask(Command::Join { room: room.to_owned(), label, offers, reply }).await?;
        answer.await.map_err(|_| Unanswered::Stopped)
    }

    /// The person's browser offers `sdp`; returns the server's answer.
    pub(crate) async fn offer(&self, person: PersonId, sdp: String) -> Result<String, Unanswered> {
        let (reply, answer) = oneshot::channel();
        self.ask(Command::Offer { person, sdp, reply }).await?;
        Ok(answer.await.map_err(|_| Unanswered::Stopped)??)
    }

    /// The person's browser answers the server's last offer.
    pub(crate) async fn answer(&self, person: PersonId, sdp: String) -> Result<(), Unanswered> {
        let (reply, answer) = oneshot::channel();
        self.ask(Command::Answer { person, sdp, reply }).await?;
        Ok(answer.await.map_err(|_| Unanswered::Stopped)??)
    }

    /// The person left (from a drop, so without waiting: if the task's queue is full, a task
    /// of its own waits for room).
    pub(crate) fn leave(&self, person: PersonId) {
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(Command::Leave { person }) {
            let commands = self.commands.clone();
            tokio::spawn(async move {
                let _ = commands.send(command).await;
            });
        }
    }

    async fn ask(&self, command: Command) -> Result<(), Unanswered> {
        self.commands.send(command).await.map_err(|_| Unanswered::Stopped)
    }
}

async fn run(
    socket: UdpSocket,
    mut core: Core,
    mut inbox: mpsc::Receiver<Command>,
    mut tcp_events: mpsc::Receiver<tcp::Event>,
) {
    let mut buffer = vec![0; MAX_DATAGRAM];
    let mut offers: Vec<(PersonId, mpsc::UnboundedSender<Offer>)> = Vec::new();
    let mut connections: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut reported = (Counts::default(), Load::default(), Traffic::default());
    // Every series from the start, at zero: "no one here" reads as 0, not as no data.
    crate::server::metrics::sfu(&reported, &reported);
    let mut traffic = Traffic::default();
    // When `/metrics` is next told, if anything happened since it last was.
    let mut report_at = None;
    // One timer, moved only when the deadline does: a new one per wake-up cost a timer-wheel
    // registration and removal per datagram.
    let start = Instant::now();
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    loop {
        // Without anyone, nothing needs the clock: wake for a datagram or a command.
        let idle = Instant::now() + Duration::from_secs(3600);
        let deadline = core.next_deadline().map(|at| coarse(start, at)).unwrap_or(idle).min(report_at.unwrap_or(idle));
        if timer.deadline() != deadline.into() {
            timer.as_mut().reset(deadline.into());
        }
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                if let Ok((length, source)) = received {
                    traffic.received += length as u64;
                    core.receive(Instant::now(), Path::udp(source), &buffer[..length]);
                    // Whatever else has come, at once: one wake-up for a room's burst.
                    for _ in 0..BATCH {
                        let Ok((length, source)) = socket.try_recv_from(&mut buffer) else { break };
                        traffic.received += length as u64;
                        core.receive(Instant::now(), Path::udp(source), &buffer[..length]);
                    }
                }
            }
            Some(event) = tcp_events.recv() => match event {
                tcp::Event::Opened { peer, frames } => {
                    connections.insert(peer, frames);
                }
                // Unless a new connection from the same address took its place meanwhile.
                tcp::Event::Closed { peer } => {
                    if connections.get(&peer).is_some_and(mpsc::Sender::is_closed) {
                        connections.remove(&peer);
                        core.forget(Path::tcp(peer));
                    }
                }
                tcp::Event::Frame { peer, bytes } => {
                    traffic.received += bytes.len() as u64;
                    if !core.receive(Instant::now(), Path::tcp(peer), &bytes) {
                        // Nobody's: dropping its sender closes the connection.
                        connections.remove(&peer);
                    }
                }
            },
            command = inbox.recv() => match command {
                None => return,
                Some(Command::Join { room, label, offers: channel, reply }) => {
                    let person = core.join(Instant::now(), &room, label);
                    offers.push((person, channel));
                    let _ = reply.send(person);
                }
                Some(Command::Offer { person, sdp, reply }) => {
                    let _ = reply.send(core.offer(Instant::now(), person, &sdp));
                }
                Some(Command::Answer { person, sdp, reply }) => {
                    let _ = reply.send(core.answer(Instant::now(), person, &sdp));
                }
                Some(Command::Leave { person }) => {
                    core.leave(Instant::now(), person);
                    offers.retain(|(id, _)| *id != person);
                }
            },
            () = &mut timer => core.tick(Instant::now()),
        }
        while let Some(transmit) = core.poll_transmit(Instant::now()) {
            let length = transmit.bytes.len() as u64;
            let sent = match transmit.to.proto {
                Protocol::Tcp => connections
                    .get(&transmit.to.peer)
                    .is_some_and(|connection| connection.try_send(transmit.bytes).is_ok()),
                _ => socket.try_send_to(&transmit.bytes, transmit.to.peer).is_ok(),
            };
            if sent {
                traffic.sent += length;
            }
        }
        // What changed goes to `/metrics`, ten times a second at most: per datagram, adding up
        // the load and updating a dozen series would cost more than forwarding it.
        let due = *report_at.get_or_insert_with(|| Instant::now() + REPORT_EVERY);
        if Instant::now() >= due {
            traffic.tcp_connections = connections.len();
            let now = (core.counts(), core.load(), traffic);
            if now != reported {
                crate::server::metrics::sfu(&reported, &now);
                reported = now;
            }
            report_at = None;
        }
        while let Some(offer) = core.poll_offer() {
            if let Some((_, channel)) = offers.iter().find(|(id, _)| *id == offer.to) {
                let _ = channel.send(offer);
            }
        }
    }
}

/// `at`, rounded up to the next [`TIMER_GRAIN`] since `start`.
fn coarse(start: Instant, at: Instant) -> Instant {
    let grain = TIMER_GRAIN.as_nanos();
    let rounded = at.saturating_duration_since(start).as_nanos().div_ceil(grain) * grain;
    start + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use str0m::{
        change::{SdpAnswer, SdpOffer},
        media::{Direction, Frequency, MediaKind, MediaTime, Mid},
        net::{Receive, TcpType},
        Candidate, Event, Input, Output, Rtc, RtcConfig,
    };
    use tokio::{io::AsyncWriteExt, net::TcpStream};
    use tokio_util::codec::{Framed, LengthDelimitedCodec};

    use super::*;

    /// How a browser stand-in reaches the server: a UDP socket, or an ICE-TCP connection.
    enum Link {
        Udp(UdpSocket),
        Tcp(Framed<TcpStream, LengthDelimitedCodec>),
    }

    impl Link {
        async fn tcp(server: SocketAddr) -> Self {
            let stream = TcpStream::connect(server).await.unwrap();
            Self::Tcp(Framed::new(stream, tcp::codec()))
        }

        fn local(&self) -> SocketAddr {
            match self {
                Self::Udp(socket) => socket.local_addr().unwrap(),
                Self::Tcp(framed) => framed.get_ref().local_addr().unwrap(),
            }
        }
    }

    /// A browser stand-in on a real loopback socket.
    struct Client {
        rtc: Rtc,
        link: Link,
        mid: Mid,
        frames: usize,
    }

    impl Client {
        async fn call(sfu: &Sfu, room: &str, link: Link) -> (Self, PersonId, mpsc::UnboundedReceiver<Offer>) {
            let mut rtc = RtcConfig::new().clear_codecs().enable_opus(true, false).build(Instant::now());
            let candidate = match &link {
                Link::Udp(_) => Candidate::host(link.local(), "udp"),
                Link::Tcp(_) => Candidate::builder().tcp().host(link.local()).tcptype(TcpType::Active).build(),
            };
            rtc.add_local_candidate(candidate.unwrap());
            let (offers, inbox) = mpsc::unbounded_channel();
            let person = sfu.join(room, 0, offers).await.unwrap();
            let mut change = rtc.sdp_api();
            let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let (offer, pending) = change.apply().unwrap();
            let answer = sfu.offer(person, offer.to_sdp_string()).await.unwrap();
            rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
            (Self { rtc, link, mid, frames: 0 }, person, inbox)
        }

        /// Sends what the `Rtc` has, reads for up to 10 ms, and moves its clock on.
        async fn step(&mut self) {
            while let Ok(output) = self.rtc.poll_output() {
                match output {
                    Output::Transmit(transmit) => match &mut self.link {
                        Link::Udp(socket) => {
                            socket.send_to(&transmit.contents, transmit.destination).await.unwrap();
                        }
                        Link::Tcp(framed) => framed.send(&*transmit.contents).await.unwrap(),
                    },
                    Output::Event(Event::MediaData(_)) => self.frames += 1,
                    Output::Event(_) => {}
                    Output::Timeout(_) => break,
                }
            }
            let local = self.link.local();
            let wait = Duration::from_millis(10);
            let received = match &mut self.link {
                Link::Udp(socket) => {
                    let mut buffer = [0; MAX_DATAGRAM];
                    match tokio::time::timeout(wait, socket.recv_from(&mut buffer)).await {
                        Ok(Ok((length, source))) => Some((Protocol::Udp, source, buffer[..length].to_vec())),
                        _ => None,
                    }
                }
                Link::Tcp(framed) => match tokio::time::timeout(wait, framed.next()).await {
                    Ok(Some(Ok(frame))) => Some((Protocol::Tcp, framed.get_ref().peer_addr().unwrap(), frame.to_vec())),
                    Ok(_) => panic!("the server closed the ICE-TCP connection"),
                    Err(_) => None,
                },
            };
            if let Some((proto, source, bytes)) = received {
                let receive = Receive::new(proto, source, local, &bytes).unwrap();
                self.rtc.handle_input(Input::Receive(Instant::now(), receive)).unwrap();
            }
            self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
        }
    }

    /// The task on loopback sockets: UDP, and ICE-TCP.
    async fn start() -> (Sfu, SocketAddr, SocketAddr) {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (udp_advertised, tcp_address) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let tcp = IceTcp { listener: tcp, advertised: tcp_address, per_client: OpenPerClient::new(8) };
        let sfu = Sfu::spawn(Sockets { udp, udp_advertised, tcp: Some(tcp) }).unwrap();
        (sfu, udp_advertised, tcp_address)
    }

    #[test]
    fn timers_are_woken_for_at_the_end_of_their_grain_never_before() {
        let start = Instant::now();
        let grain = TIMER_GRAIN;
        assert_eq!(coarse(start, start), start);
        assert_eq!(coarse(start, start + Duration::from_nanos(1)), start + grain);
        assert_eq!(coarse(start, start + grain), start + grain);
        assert_eq!(coarse(start, start + grain * 3 + Duration::from_millis(1)), start + grain * 4);
        // A deadline already past (before the task started) is woken for at once.
        assert_eq!(coarse(start + grain, start), start + grain);
        // Far on: no overflow, still after the deadline.
        let far = start + Duration::from_secs(600 * 86_400) + Duration::from_nanos(7);
        assert!(coarse(start, far) >= far && coarse(start, far) <= far + grain);
    }

    #[tokio::test]
    async fn a_browser_on_udp_and_one_on_ice_tcp_hear_each_other_through_the_task() {
        let (sfu, _, tcp) = start().await;
        let udp = Link::Udp(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (mut ann, ann_id, mut ann_offers) = Client::call(&sfu, "room", udp).await;
        let (mut bob, bob_id, mut bob_offers) = Client::call(&sfu, "room", Link::tcp(tcp).await).await;
        let pt = ann.rtc.writer(ann.mid).unwrap().payload_params().next().unwrap().pt();
        let started = Instant::now();
        let mut frame = 0;
        while bob.frames < 5 || ann.frames < 5 {
            assert!(started.elapsed() < Duration::from_secs(10), "no audio both ways through the SFU in 10 s");
            // The server's offers, answered as a browser answers them.
            for (client, offers, person) in [(&mut ann, &mut ann_offers, ann_id), (&mut bob, &mut bob_offers, bob_id)] {
                while let Ok(offer) = offers.try_recv() {
                    let answer =
                        client.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer.sdp).unwrap()).unwrap();
                    sfu.answer(person, answer.to_sdp_string()).await.unwrap();
                }
            }
            if ann.rtc.is_connected() && bob.rtc.is_connected() {
                let time = MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ);
                for client in [&mut ann, &mut bob] {
                    client.rtc.writer(client.mid).unwrap().write(pt, Instant::now(), time, vec![0x55; 40]).unwrap();
                }
                frame += 1;
            }
            ann.step().await;
            bob.step().await;
        }
    }

    /// Whether the server closed `framed`'s connection within ten seconds.
    async fn closed(framed: &mut Framed<TcpStream, LengthDelimitedCodec>) -> bool {
        matches!(tokio::time::timeout(Duration::from_secs(10), framed.next()).await, Ok(None | Some(Err(_))))
    }

    #[tokio::test]
    async fn an_ice_tcp_connection_that_says_nothing_is_closed_after_three_seconds() {
        let (_sfu, _, tcp) = start().await;
        let Link::Tcp(mut framed) = Link::tcp(tcp).await else { unreachable!() };
        let opened = Instant::now();
        assert!(closed(&mut framed).await);
        assert!(opened.elapsed() >= Duration::from_secs(3), "{:?}", opened.elapsed());
    }

    #[tokio::test]
    async fn one_client_address_holds_at_most_its_share_of_ice_tcp_connections() {
        let (_sfu, _, tcp) = start().await;
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(Link::tcp(tcp).await);
        }
        let Link::Tcp(mut ninth) = Link::tcp(tcp).await else { unreachable!() };
        let opened = Instant::now();
        assert!(closed(&mut ninth).await);
        assert!(opened.elapsed() < Duration::from_secs(1), "closed at once, not by a timer: {:?}", opened.elapsed());
    }

    #[tokio::test]
    async fn an_ice_tcp_connection_is_closed_at_a_frame_longer_than_a_datagram() {
        let (_sfu, _, tcp) = start().await;
        let Link::Tcp(mut framed) = Link::tcp(tcp).await else { unreachable!() };
        // Its length field says 3,000: the server reads no further.
        framed.get_mut().write_all(&[0x0b, 0xb8, 0x00, 0x01]).await.unwrap();
        let sent = Instant::now();
        assert!(closed(&mut framed).await);
        assert!(sent.elapsed() < Duration::from_secs(1), "closed at once, not by a timer: {:?}", sent.elapsed());
    }

    #[tokio::test]
    async fn an_ice_tcp_connection_that_is_nobodys_is_closed_at_its_first_frame() {
        let (_sfu, _, tcp) = start().await;
        let Link::Tcp(mut framed) = Link::tcp(tcp).await else { unreachable!() };
        framed.send(&b"\x80\x60 not from anyone"[..]).await.unwrap();
        assert!(closed(&mut framed).await);
    }
}
