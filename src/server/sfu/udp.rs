//! The SFU's socket edge: one task owns the media socket and the [`Core`], and nothing else
//! touches either. Signaling talks to it through a [`Sfu`] handle (join, offer, answer, leave);
//! the server's own offers come back on the channel each person joined with. Datagrams that
//! cannot be sent at once (the socket's buffer full) are dropped, as a router would: media is
//! late or not at all, and ICE and DTLS send theirs again.

use std::{net::SocketAddr, time::Instant};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot},
};

use super::core::{Core, Counts, Load, Offer, PersonId, SfuError};

/// Bytes the media socket received and sent, in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bytes {
    pub(crate) received: u64,
    pub(crate) sent: u64,
}

/// The largest datagram read: above any path's MTU, so nothing is cut short.
const MAX_DATAGRAM: usize = 2048;
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
    /// Starts the task on `socket`, which people reach at `advertised` (its own address, or
    /// the public one in front of it).
    pub(crate) fn spawn(socket: UdpSocket, advertised: SocketAddr) -> Self {
        let (commands, inbox) = mpsc::channel(COMMANDS);
        tokio::spawn(run(socket, Core::new(advertised), inbox));
        Self { commands }
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

async fn run(socket: UdpSocket, mut core: Core, mut inbox: mpsc::Receiver<Command>) {
    let mut buffer = vec![0; MAX_DATAGRAM];
    let mut offers: Vec<(PersonId, mpsc::UnboundedSender<Offer>)> = Vec::new();
    let mut reported = (Counts::default(), Load::default(), Bytes::default());
    let mut bytes = Bytes::default();
    loop {
        // Without anyone, nothing needs the clock: wake for a datagram or a command.
        let deadline = core.next_deadline().unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                if let Ok((length, source)) = received {
                    bytes.received += length as u64;
                    core.receive(Instant::now(), source, &buffer[..length]);
                }
            }
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
            () = tokio::time::sleep_until(deadline.into()) => core.tick(Instant::now()),
        }
        while let Some(transmit) = core.poll_transmit() {
            if socket.try_send_to(&transmit.bytes, transmit.to).is_ok() {
                bytes.sent += transmit.bytes.len() as u64;
            }
        }
        // What changed goes to `/metrics`.
        let now = (core.counts(), core.load(), bytes);
        if now != reported {
            crate::server::metrics::sfu(&reported, &now);
            reported = now;
        }
        while let Some(offer) = core.poll_offer() {
            if let Some((_, channel)) = offers.iter().find(|(id, _)| *id == offer.to) {
                let _ = channel.send(offer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use str0m::{
        change::{SdpAnswer, SdpOffer},
        media::{Direction, Frequency, MediaKind, MediaTime, Mid},
        net::{Protocol, Receive},
        Candidate, Event, Input, Output, Rtc, RtcConfig,
    };

    use super::*;

    /// A browser stand-in on a real loopback socket.
    struct Client {
        rtc: Rtc,
        socket: UdpSocket,
        mid: Mid,
        frames: usize,
    }

    impl Client {
        async fn call(sfu: &Sfu, room: &str) -> (Self, PersonId, mpsc::UnboundedReceiver<Offer>) {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut rtc = RtcConfig::new().clear_codecs().enable_opus(true, false).build(Instant::now());
            rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
            let (offers, inbox) = mpsc::unbounded_channel();
            let person = sfu.join(room, 0, offers).await.unwrap();
            let mut change = rtc.sdp_api();
            let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let (offer, pending) = change.apply().unwrap();
            let answer = sfu.offer(person, offer.to_sdp_string()).await.unwrap();
            rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
            (Self { rtc, socket, mid, frames: 0 }, person, inbox)
        }

        /// Sends what the `Rtc` has, reads for up to 10 ms, and moves its clock on.
        async fn step(&mut self) {
            while let Ok(output) = self.rtc.poll_output() {
                match output {
                    Output::Transmit(transmit) => {
                        self.socket.send_to(&transmit.contents, transmit.destination).await.unwrap();
                    }
                    Output::Event(Event::MediaData(_)) => self.frames += 1,
                    Output::Event(_) => {}
                    Output::Timeout(_) => break,
                }
            }
            let mut buffer = [0; MAX_DATAGRAM];
            if let Ok(Ok((length, source))) =
                tokio::time::timeout(Duration::from_millis(10), self.socket.recv_from(&mut buffer)).await
            {
                let receive =
                    Receive::new(Protocol::Udp, source, self.socket.local_addr().unwrap(), &buffer[..length]).unwrap();
                self.rtc.handle_input(Input::Receive(Instant::now(), receive)).unwrap();
            }
            self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
        }
    }

    #[tokio::test]
    async fn two_browsers_on_real_sockets_hear_each_other_through_the_task() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let sfu = Sfu::spawn(socket, address);
        let (mut ann, ann_id, mut ann_offers) = Client::call(&sfu, "room").await;
        let (mut bob, bob_id, mut bob_offers) = Client::call(&sfu, "room").await;
        let pt = ann.rtc.writer(ann.mid).unwrap().payload_params().next().unwrap().pt();
        let started = Instant::now();
        let mut frame = 0;
        while bob.frames < 5 {
            assert!(started.elapsed() < Duration::from_secs(10), "no audio through the SFU in 10 s");
            // The server's offers, answered as a browser answers them.
            for (client, offers, person) in [(&mut ann, &mut ann_offers, ann_id), (&mut bob, &mut bob_offers, bob_id)] {
                while let Ok(offer) = offers.try_recv() {
                    let answer =
                        client.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer.sdp).unwrap()).unwrap();
                    sfu.answer(person, answer.to_sdp_string()).await.unwrap();
                }
            }
            if ann.rtc.is_connected() {
                let time = MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ);
                ann.rtc.writer(ann.mid).unwrap().write(pt, Instant::now(), time, vec![0x55; 40]).unwrap();
                frame += 1;
            }
            ann.step().await;
            bob.step().await;
        }
    }
}
