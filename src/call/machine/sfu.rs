//! Media through the server (a room whose `WELCOME` says `sfu`): one peer connection, to the
//! server's forwarding unit. This side offers what it sends; the server answers, then offers
//! each change in what this side receives, naming whose media each of its m-lines carries, and
//! this side answers. The other people are tiles with no connection of their own: their media
//! comes on the server's m-lines, their names, states and chat on its data channel.

use super::{
    people::Peer, signaling::same_person, CallMachine, ConnectionState, Effect, Negotiated, PeerEvent, Signaling,
    Timer, STATS_EVERY_MS, VIEW_EVERY_MS, VOICES_EVERY_MS,
};
use crate::{
    call::stats::{summarize, Report, Traffic, Voices},
    protocol::{
        ChatMessage, FromUnit, MediaDescription, Message, PeerId, PeerInfo, PeerMessage, Receiving, SdpType,
        SessionDescription, Track, ViewTile,
    },
};

/// The connection to the server's forwarding unit.
#[derive(Debug)]
pub(super) struct Sfu {
    pub(super) generation: u32,
    signaling: Signaling,
    /// Whose media each of the server's m-lines carries, as its last answered offer said.
    tracks: Vec<Track>,
    /// What the server's offer being applied says, until its answer is made.
    offered_tracks: Option<Vec<Track>>,
    pub(super) channel_open: bool,
    /// Chat typed before the channel opened, or that it could not take.
    pub(super) unsent_chat: Vec<ChatMessage>,
    connection: ConnectionState,
    /// The statistics' last reading.
    traffic: Option<Traffic>,
    voices: Voices,
    /// Names and media states from people whose `PEER_JOINED` has not come yet (the server's
    /// channel and signaling race): theirs once it does.
    early: Vec<(PeerId, PeerMessage)>,
    /// The tiles the server was last told this page shows (`VIEW`), since the channel opened.
    view_sent: Option<Vec<ViewTile>>,
    /// What the server last said this page receives of each camera.
    pub(super) receiving: Option<Receiving>,
}

/// Early messages kept, at most: a name and a media state for each of a room's people.
const EARLY_MAX: usize = 50;

impl CallMachine {
    /// Joins a room on the server: a connection to it (one before, on a socket that dropped, is
    /// gone on the server's side), and a tile for everyone already there. A connection of this
    /// side's own to someone (a mesh) stays until the server carries their media
    /// (make-before-break), while they are in the room or it works.
    pub(super) fn join_sfu(&mut self) {
        for index in (0..self.peers.len()).rev() {
            let peer = &self.peers[index];
            let here = self
                .room
                .iter()
                .any(|member| member.peer_id == peer.peer_id || same_person(&member.public_id, &peer.public_id));
            let working = peer.own_connection && peer.connection == ConnectionState::Connected;
            if !here && !working {
                self.drop_peer(index);
            }
        }
        // Chat the old connection could not take goes on the new one.
        self.forget_slow_link();
        let unsent_chat = self.sfu.as_ref().map(|sfu| sfu.unsent_chat.clone()).unwrap_or_default();
        for old in [self.sfu.take().map(|sfu| sfu.generation), self.standby.take()].into_iter().flatten() {
            self.push(Effect::DropPeer { peer: old });
        }
        let generation = self.create_peer(true);
        self.sfu = Some(Sfu {
            generation,
            signaling: Signaling::Stable,
            tracks: Vec::new(),
            offered_tracks: None,
            connection: ConnectionState::New,
            channel_open: false,
            unsent_chat,
            traffic: None,
            voices: Voices::default(),
            early: Vec::new(),
            view_sent: None,
            receiving: None,
        });
        let (audio, video) = (self.media.audio, self.media.video());
        self.push(Effect::AddTransceivers { peer: generation, audio, video });
        self.push(Effect::Offer { peer: generation });
        self.push(Effect::Arm { timer: Timer::StatsTick { peer: generation }, after_ms: STATS_EVERY_MS });
        self.push(Effect::Arm { timer: Timer::VoicesTick { peer: generation }, after_ms: VOICES_EVERY_MS });
        self.push(Effect::Arm { timer: Timer::ViewTick { peer: generation }, after_ms: VIEW_EVERY_MS });
        let room = self.room.clone();
        for member in &room {
            self.add_person(member, false);
        }
        self.route_tracks();
    }

    /// Leaves the server's forwarding unit (the server restarted with media browser to browser).
    pub(super) fn leave_sfu(&mut self) {
        if self.sfu.is_none() {
            return;
        }
        self.forget_slow_link();
        for index in (0..self.peers.len()).rev() {
            self.drop_peer(index);
        }
        if let Some(old) = self.sfu.take() {
            self.push(Effect::DropPeer { peer: old.generation });
        }
    }

    /// A slow link said is unsaid: the connection it was about is going.
    pub(super) fn forget_slow_link(&mut self) {
        if self.sfu.as_mut().and_then(|sfu| sfu.receiving.take()).is_some_and(|receiving| receiving.slow) {
            self.push(Effect::SlowLink(false));
        }
    }

    /// A tile for `member`, unless they have one (they came back on a new socket).
    pub(super) fn add_person(&mut self, member: &PeerInfo, newcomer: bool) {
        let same = |peer: &Peer| peer.peer_id == member.peer_id || same_person(&peer.public_id, &member.public_id);
        if let Some(peer) = self.peers.iter_mut().find(|peer| same(peer)) {
            peer.peer_id = member.peer_id;
            return;
        }
        let number = self.count_in();
        // Tiles are keyed as connections are, from the same count: never two alike.
        self.last_peer_generation += 1;
        let mut peer = Peer::new(self.last_peer_generation, member, self.polite, number, newcomer);
        if let Some(sfu) = &mut self.sfu {
            peer.connection = sfu.connection;
            peer.ever_connected = sfu.connection == ConnectionState::Connected;
            // Typed while alone: for whoever comes.
            sfu.unsent_chat.append(&mut self.unsent_chat);
        }
        self.peers.push(peer);
        let index = self.peers.len() - 1;
        let early = self.sfu.as_mut().map(|sfu| std::mem::take(&mut sfu.early)).unwrap_or_default();
        let (theirs, others): (Vec<_>, Vec<_>) = early.into_iter().partition(|(from, _)| *from == member.peer_id);
        if let Some(sfu) = &mut self.sfu {
            sfu.early = others;
        }
        for (_, message) in theirs {
            // (Names and media states only: no chat, whose allowance counts time.)
            self.heard(index, message, 0.0);
        }
        self.route_tracks();
    }

    /// The server's `MEDIA_SDP`.
    pub(super) fn media_description(&mut self, description: MediaDescription) {
        let Some(sfu) = &mut self.sfu else { return };
        let generation = sfu.generation;
        if description.kind == SdpType::Offer {
            sfu.offered_tracks = Some(description.tracks);
        } else if sfu.signaling != Signaling::HaveLocalOffer {
            return self.push(Effect::Warn("an answer from the server to no offer".into()));
        }
        let description = SessionDescription { kind: description.kind, sdp: description.sdp };
        let (audio, video) = (self.media.audio, self.media.video());
        self.push(Effect::Apply { peer: generation, description, audio, video });
    }

    /// What the connection to the server reports; the event back if it is not that connection.
    pub(super) fn sfu_event(&mut self, generation: u32, event: PeerEvent, now_ms: f64) -> Result<(), PeerEvent> {
        let Some(sfu) = self.sfu.as_mut().filter(|sfu| sfu.generation == generation) else { return Err(event) };
        match event {
            PeerEvent::Negotiated(Negotiated { signaling, local, .. }) => {
                sfu.signaling = signaling;
                let Some(local) = local else { return Ok(()) };
                if local.kind == SdpType::Answer {
                    if let Some(tracks) = sfu.offered_tracks.take() {
                        sfu.tracks = tracks;
                    }
                }
                let description = MediaDescription { kind: local.kind, sdp: local.sdp, tracks: Vec::new() };
                self.push(Effect::Mark(if local.kind == SdpType::Offer { "offer-sent" } else { "answer-sent" }));
                self.send(None, Message::MediaSdp(description));
                self.route_tracks();
            }
            PeerEvent::ConnectionState(state) => {
                sfu.connection = state;
                if state == ConnectionState::Connected {
                    self.push(Effect::Mark("connected"));
                }
                // Every tile's media comes the same way: each is as connected as this one.
                for peer in self.peers.iter_mut().filter(|peer| !peer.own_connection) {
                    peer.connection = state;
                    peer.ever_connected |= state == ConnectionState::Connected;
                }
            }
            PeerEvent::ChannelOpen => {
                sfu.channel_open = true;
                sfu.view_sent = None;
                let unsent = std::mem::take(&mut sfu.unsent_chat);
                self.greet(generation, unsent);
            }
            PeerEvent::ChannelClosed => sfu.channel_open = false,
            PeerEvent::Undelivered(message) => {
                sfu.channel_open = false;
                if let PeerMessage::Chat(chat) = message {
                    sfu.unsent_chat.push(chat);
                }
            }
            PeerEvent::Relayed(relayed) => {
                if let Some(index) = self.peers.iter().position(|peer| peer.peer_id == relayed.from) {
                    self.heard(index, relayed.message, now_ms);
                } else if matches!(relayed.message, PeerMessage::Name(_) | PeerMessage::MediaState(_)) {
                    let kind = std::mem::discriminant(&relayed.message);
                    let early = &mut sfu.early;
                    early.retain(|(from, message)| *from != relayed.from || std::mem::discriminant(message) != kind);
                    if early.len() < EARLY_MAX {
                        early.push((relayed.from, relayed.message));
                    }
                }
            }
            PeerEvent::Voices(heard) => {
                // Each person's voice comes on an m-line of their own.
                for (mid, level) in sfu.voices.read(&heard) {
                    if let Some(peer) = self.peers.iter_mut().find(|peer| peer.mids.contains(&mid)) {
                        peer.voice.hear(level, now_ms);
                    }
                }
            }
            PeerEvent::Unit(FromUnit::SendLayers(layers)) => self.push(Effect::SendLayers { peer: generation, layers }),
            PeerEvent::Unit(FromUnit::Receiving(receiving)) => {
                let was_slow = sfu.receiving.as_ref().is_some_and(|before| before.slow);
                if receiving.slow != was_slow {
                    self.push(Effect::SlowLink(receiving.slow));
                }
                self.sfu.as_mut().expect("matched above").receiving = Some(receiving);
            }
            PeerEvent::View(shown) => {
                // Each tile's person's m-lines on the server (it reads its video's) at the tile's
                // size. Also while the tile still plays a connection of this side's own (the
                // room is moving): the server's video for it must come before that one goes.
                let view: Vec<ViewTile> = self
                    .peers
                    .iter()
                    .filter_map(|peer| Some((peer.peer_id, shown.iter().find(|(tile, _)| *tile == peer.generation)?.1)))
                    .flat_map(|(person, (width, height))| {
                        let theirs = sfu.tracks.iter().filter(move |track| track.peer_id == person);
                        theirs.map(move |track| ViewTile { mid: track.mid.clone(), width, height })
                    })
                    .collect();
                if sfu.channel_open && sfu.view_sent.as_ref() != Some(&view) {
                    sfu.view_sent = Some(view.clone());
                    self.push(Effect::ToPeer { peer: generation, message: PeerMessage::View(view) });
                }
            }
            PeerEvent::Stats(reports) => {
                let (mut stats, traffic) = summarize(&reports, sfu.traffic, now_ms);
                sfu.traffic = Some(traffic);
                let group = self.peers.len() > 1;
                stats.layers = (sfu.receiving.iter().flat_map(|receiving| &receiving.tiles))
                    .filter_map(|tile| {
                        let peer = self.peers.iter().find(|peer| peer.mids.contains(&tile.mid))?;
                        Some((peer.remote().named(group), tile.layer, tile.reason))
                    })
                    .collect();
                self.voice.hear(stats.sent_audio_level, now_ms);
                self.push(Effect::Stats(Some(stats)));
                self.take_over(&reports);
            }
            // The server is ICE-lite: it learns this side's address from its checks, and takes
            // no candidates. It offers what changes; this side offers once.
            PeerEvent::LocalCandidate(_)
            | PeerEvent::NegotiationNeeded
            | PeerEvent::RemoteTrack
            | PeerEvent::Message(_)
            | PeerEvent::Oversized => {}
            PeerEvent::IceServerError { .. } => unreachable!("handled before"),
        }
        Ok(())
    }

    /// Someone's media plays through the server (their video decodes; their audio, if they send
    /// no video): their tile shows it from now on, and a connection of this side's own to them
    /// (the room moved) goes. Until then, that connection's media plays on: no gap.
    fn take_over(&mut self, reports: &[Report]) {
        let Some(sfu) = &self.sfu else { return };
        let playing: Vec<(PeerId, bool)> = reports
            .iter()
            .filter(|report| report.report_type == "inbound-rtp")
            .filter(|report| report.frames_decoded > 0.0 || report.total_samples_duration > 0.0)
            .filter_map(|report| {
                let track = sfu.tracks.iter().find(|track| Some(&track.mid) == report.mid.as_ref())?;
                Some((track.peer_id, report.frames_decoded > 0.0))
            })
            .collect();
        let connection = sfu.connection;
        let mut moved = Vec::new();
        for peer in self.peers.iter_mut().filter(|peer| peer.own_connection) {
            let sends_video = peer.media.is_none_or(|media| media.video);
            if playing.iter().any(|(whose, video)| *whose == peer.peer_id && (*video || !sends_video)) {
                peer.own_connection = false;
                peer.connection = connection;
                peer.ever_connected |= connection == ConnectionState::Connected;
                moved.push(peer.generation);
            }
        }
        for peer in moved {
            self.push(Effect::DropPeer { peer });
        }
        self.route_tracks();
    }

    /// Gives each tile the server's m-lines that carry its person's media, where that changed.
    pub(super) fn route_tracks(&mut self) {
        let Some(sfu) = &self.sfu else { return };
        let mut changed = Vec::new();
        // Someone this side still has a connection of its own to keeps it until the server's
        // media for them plays through the server ([`Self::take_over`]).
        for peer in self.peers.iter_mut().filter(|peer| !peer.own_connection) {
            let mids: Vec<String> = sfu
                .tracks
                .iter()
                .filter(|track| track.peer_id == peer.peer_id)
                .map(|track| track.mid.clone())
                .collect();
            if mids != peer.mids {
                peer.receiving = !mids.is_empty();
                peer.mids = mids.clone();
                changed.push((peer.generation, mids));
            }
        }
        if !changed.is_empty() {
            self.push(Effect::RouteTracks { peer: sfu.generation, tiles: changed });
        }
    }
}
