//! The full mesh: one peer connection per other person, perfect negotiation on each, ICE
//! restarts for a path that worked and broke, and the standby connection for whoever comes next.

use super::{
    people::Peer, CallMachine, ConnectionState, Effect, Negotiated, PeerEvent, Signaling, Timer, CONNECT_TIMEOUT_MS,
    DISCONNECTED_GRACE_MS, ICE_RETRY_MS, STATS_EVERY_MS,
};
use crate::{
    call::stats::summarize,
    protocol::{Message, PeerId, PeerInfo, PeerMessage, SdpType, SessionDescription},
};

/// Whether an ICE server URL is a relay's (TURN), rather than STUN's.
pub(super) fn is_relay(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

impl CallMachine {
    pub(super) fn description(&mut self, from: Option<PeerId>, description: SessionDescription) {
        let is_offer = description.kind == SdpType::Offer;
        self.push(Effect::Mark(if is_offer { "offer-received" } else { "answer-received" }));
        let index = match self.sender(from) {
            Some(index) => index,
            None if is_offer => {
                let sender = self.sender_id(from);
                let Some(member) = self.room.iter().find(|member| Some(member.peer_id) == sender).cloned() else {
                    return;
                };
                self.new_peer(&member, true);
                self.peers.len() - 1
            }
            None => return,
        };
        let peer = &mut self.peers[index];
        let collision = is_offer && peer.signaling != Signaling::Stable;
        peer.ignore_offer = !peer.polite && collision;
        if peer.ignore_offer {
            return;
        }
        if description.kind == SdpType::Answer && peer.signaling != Signaling::HaveLocalOffer {
            // A stale answer, to an offer we rolled back.
            return;
        }
        let effect =
            Effect::Apply { peer: peer.generation, description, audio: self.media.audio, video: self.media.video() };
        self.push(effect);
    }

    pub(super) fn negotiated(&mut self, index: usize, outcome: Negotiated) {
        let peer = &mut self.peers[index];
        peer.signaling = outcome.signaling;
        peer.has_remote_description = outcome.has_remote_description;
        let (generation, to) = (peer.generation, peer.peer_id);
        let stable = peer.signaling == Signaling::Stable && peer.has_remote_description;
        if peer.has_remote_description {
            let failure_expected = peer.ignore_offer;
            for candidate in std::mem::take(&mut peer.early_candidates) {
                self.push(Effect::AddCandidate { peer: generation, candidate, failure_expected });
            }
        }
        if let Some(local) = outcome.local {
            self.push(Effect::Mark(if local.kind == SdpType::Offer { "offer-sent" } else { "answer-sent" }));
            self.send(Some(to), Message::Sdp(local));
        }
        // A sender's encodings exist once a negotiation is done: that is when a cap can go on.
        if stable && self.video_cap.is_some() {
            self.push(Effect::CapVideo { peer: generation, max_bps: self.video_cap });
        }
    }

    pub(super) fn peer_event(&mut self, generation: u32, event: PeerEvent, now_ms: f64) {
        // The standby connection gathers candidates while waiting: a TURN refusal then is news.
        if let PeerEvent::IceServerError { code, url } = &event {
            if self.standby == Some(generation) || self.peers.iter().any(|p| p.generation == generation) {
                self.push(Effect::Warn(format!("ICE server {url} answered {code}")));
                // 401: TURN refused the credentials. With relay-only ICE nothing else can work.
                self.turn_refused |= *code == 401;
            }
            return;
        }
        let Err(event) = self.sfu_event(generation, event, now_ms) else { return };
        // Anything else only from a connection in use.
        let Some(index) = self.peers.iter().position(|peer| peer.generation == generation) else { return };
        let peer = &mut self.peers[index];
        let to = peer.peer_id;
        match event {
            PeerEvent::NegotiationNeeded => self.offer(generation),
            PeerEvent::Negotiated(outcome) => self.negotiated(index, outcome),
            PeerEvent::LocalCandidate(candidate) => {
                self.push(Effect::Mark("candidate-sent"));
                self.send(Some(to), Message::Candidate(candidate));
            }
            PeerEvent::RemoteTrack => {
                peer.receiving = true;
                self.push(Effect::Mark("remote-track"));
            }
            PeerEvent::ConnectionState(state) => {
                peer.connection = state;
                self.connection_state_changed(index, state);
            }
            PeerEvent::ChannelOpen => {
                peer.channel_open = true;
                let unsent = std::mem::take(&mut peer.unsent_chat);
                self.greet(generation, unsent);
            }
            PeerEvent::ChannelClosed => peer.channel_open = false,
            PeerEvent::Undelivered(message) => {
                peer.channel_open = false;
                // Chat waits for the channel; the media state is announced again when it opens.
                if let PeerMessage::Chat(chat) = message {
                    peer.unsent_chat.push(chat);
                }
            }
            PeerEvent::Message(message) => self.heard(index, message, now_ms),
            PeerEvent::Oversized => self.withhold(index, now_ms),
            // Only the connection to the server reports these.
            PeerEvent::Relayed(_) | PeerEvent::Voices(_) | PeerEvent::View(_) | PeerEvent::Unit(_) => {}
            PeerEvent::Stats(reports) => {
                let (stats, traffic) = summarize(&reports, peer.traffic, now_ms);
                peer.traffic = Some(traffic);
                peer.voice.hear(stats.audio_level, now_ms);
                // The panel shows the first connection's statistics; this side's microphone is
                // the same on every connection.
                if index == 0 {
                    self.voice.hear(stats.sent_audio_level, now_ms);
                    self.push(Effect::Stats(Some(stats)));
                }
            }
            PeerEvent::IceServerError { .. } => unreachable!("handled above"),
        }
    }

    pub(super) fn connection_state_changed(&mut self, index: usize, state: ConnectionState) {
        let peer = &mut self.peers[index];
        let generation = peer.generation;
        let here = self.room.iter().any(|member| member.peer_id == peer.peer_id);
        let ever_connected = peer.ever_connected;
        match state {
            ConnectionState::Connected => {
                peer.timed_out = false;
                peer.ever_connected = true;
                self.push(Effect::Mark("connected"));
            }
            ConnectionState::Disconnected if ever_connected => {
                self.push(Effect::Arm { timer: Timer::IceCheck { peer: generation }, after_ms: DISCONNECTED_GRACE_MS });
            }
            // They are gone from the room and the media path is dead.
            ConnectionState::Failed if !here && self.socket_up => {
                self.drop_peer(index);
                self.after_someone_left();
            }
            ConnectionState::Failed if ever_connected => self.restart_ice_if_broken(generation),
            // The browser tried every pair of candidates; the status line says what would help.
            ConnectionState::Failed => {
                self.push(Effect::Warn("no network path to the other person: ICE failed".into()))
            }
            ConnectionState::Disconnected
            | ConnectionState::New
            | ConnectionState::Connecting
            | ConnectionState::Closed => {}
        }
    }

    /// Makes and sends an offer on connection `generation`, unless the other side offers first
    /// or an exchange is under way (then `negotiationneeded` fires again when it ends, if
    /// still needed).
    pub(super) fn offer(&mut self, generation: u32) {
        let Some(peer) = self.peers.iter().find(|peer| peer.generation == generation) else { return };
        let waiting = peer.awaits_offer && !peer.has_remote_description;
        if !waiting && peer.signaling == Signaling::Stable {
            self.push(Effect::Offer { peer: generation });
        }
    }

    /// Restarts ICE on connection `generation` (one that has worked) while its media path is
    /// down and both sides are reachable by signaling, and looks again later.
    pub(super) fn restart_ice_if_broken(&mut self, generation: u32) {
        let Some(peer) = self.peers.iter().find(|peer| peer.generation == generation && peer.own_connection) else {
            return;
        };
        if !matches!(peer.connection, ConnectionState::Disconnected | ConnectionState::Failed) {
            return;
        }
        if self.socket_up && self.room.iter().any(|member| member.peer_id == peer.peer_id) {
            self.push(Effect::Log("restarting ICE".into()));
            self.push(Effect::RestartIce { peer: generation });
        }
        self.push(Effect::Arm { timer: Timer::IceCheck { peer: generation }, after_ms: ICE_RETRY_MS });
    }

    /// The connections that send this side's media, by generation: the one to the server, or
    /// one to each person in the order they came.
    pub(super) fn generations(&self) -> Vec<u32> {
        let own = self.peers.iter().filter(|peer| peer.own_connection).map(|peer| peer.generation);
        self.sfu.iter().map(|sfu| sfu.generation).chain(own).collect()
    }

    /// A connection to `member`: the standby one, or a new one. Returns its generation.
    pub(super) fn new_peer(&mut self, member: &PeerInfo, answers: bool) -> u32 {
        let generation = match self.standby.take() {
            Some(standby) => standby,
            None => self.create_peer(false),
        };
        self.push(Effect::Arm { timer: Timer::ConnectTimeout { peer: generation }, after_ms: CONNECT_TIMEOUT_MS });
        self.push(Effect::Arm { timer: Timer::StatsTick { peer: generation }, after_ms: STATS_EVERY_MS });
        let number = self.count_in();
        let mut peer = Peer::new(generation, member, self.polite, number, answers);
        peer.own_connection = true;
        // Everyone called at once gets what was typed while alone.
        peer.unsent_chat = self.unsent_chat.clone();
        self.peers.push(peer);
        generation
    }

    /// A new connection, to another browser or (`to_server`) the server's forwarding unit.
    pub(super) fn create_peer(&mut self, to_server: bool) -> u32 {
        self.last_peer_generation += 1;
        let peer = self.last_peer_generation;
        let (ice_servers, policy) = (self.ice_servers.clone(), self.ice_policy);
        self.push(Effect::CreatePeer { peer, ice_servers, policy, to_server });
        peer
    }

    /// Alone in the room: makes the connection whoever comes next will be answered on (in a
    /// mesh; on the server, the connection to it is there already).
    pub(super) fn stand_by(&mut self) {
        if self.sfu.is_some() {
            return;
        }
        if let Some(old) = self.standby.take() {
            self.push(Effect::DropPeer { peer: old });
        }
        self.standby = Some(self.create_peer(false));
    }

    pub(super) fn drop_peer(&mut self, index: usize) {
        // What was not shown of theirs is said before they go.
        self.note_withheld(index);
        let peer = self.peers.remove(index);
        // On the server, a tile has no connection of its own.
        if peer.own_connection {
            self.push(Effect::DropPeer { peer: peer.generation });
        }
        if index == 0 && self.sfu.is_none() {
            self.push(Effect::Stats(None));
        }
    }
}
