//! The signaling socket: joining, the server's messages, reconnecting after an outage with
//! jittered backoff, and what goes to the server.

use super::{CallMachine, ConnectionState, Effect, Timer, RECONNECT_CAP_MS, RECONNECT_FIRST_MS};
use crate::{
    call::CallStatus,
    protocol::{ErrorCode, MediaRoute, Message, PeerId, PeerInfo, Welcome},
};

/// Whether two public ids are known to be the same person (clients that name no session have
/// none, and never are).
pub(super) fn same_person(a: &Option<String>, b: &Option<String>) -> bool {
    a.is_some() && a == b
}

/// The delay before reconnect attempt `attempt` (from 0), `random` in [0, 1).
pub(super) fn reconnect_delay_ms(attempt: u32, random: f64) -> u32 {
    let exponential = RECONNECT_FIRST_MS * 2f64.powi(attempt.min(10) as i32);
    (exponential.min(RECONNECT_CAP_MS) * (0.5 + random / 2.0)) as u32
}

impl CallMachine {
    pub(super) fn start(&mut self, socket_ready: bool) {
        self.push(Effect::Mark("start"));
        self.media.starting = true;
        self.push(Effect::LocalMedia(self.media.state()));
        // The camera starts while the call joins and negotiates: neither waits for the other.
        self.push(Effect::RequestMedia(self.choice));
        if socket_ready {
            self.socket_up = true;
            self.joined_as = self.name.clone();
            self.push(Effect::Join { name: self.name.clone() });
        } else {
            self.connect_signaling();
        }
    }

    pub(super) fn server(&mut self, from: Option<PeerId>, message: Message) {
        match message {
            Message::Welcome(welcome) => self.welcome(welcome),
            Message::PeerJoined(info) => self.joined(info),
            Message::PeerLeft(info) => {
                self.room.retain(|member| member.peer_id != info.peer_id);
                // Only their signaling may have dropped: a working call goes on. A BYE, or the
                // media path failing, ends it.
                if let Some(index) = self.peers.iter().position(|peer| peer.peer_id == info.peer_id) {
                    // On the server, their media stops with their signaling.
                    if self.sfu.is_some() || self.peers[index].connection != ConnectionState::Connected {
                        self.drop_peer(index);
                    }
                }
                self.after_someone_left();
            }
            Message::Bye(_) => {
                if let Some(index) = self.sender(from) {
                    let peer = &self.peers[index];
                    if peer.ever_connected {
                        let who = peer.remote().named(self.peers.len() > 1);
                        self.push(Effect::Event(format!("{who} left")));
                    }
                    self.drop_peer(index);
                }
                self.after_someone_left();
            }
            Message::Sdp(description) => self.description(from, description),
            Message::Candidate(candidate) => {
                // End of candidates needs no action: ICE finishes with what it has.
                let (Some(index), Some(candidate)) = (self.sender(from), candidate) else { return };
                let peer = &mut self.peers[index];
                if !peer.has_remote_description {
                    peer.early_candidates.push(candidate);
                    return;
                }
                let effect =
                    Effect::AddCandidate { peer: peer.generation, candidate, failure_expected: peer.ignore_offer };
                self.push(effect);
            }
            Message::Error(error) if error.code == ErrorCode::RoomFull => self.end(CallStatus::RoomFull),
            Message::Error(error) => {
                self.push(Effect::Warn(format!("the server refused a message: {}", error.message)))
            }
            Message::MediaSdp(description) => self.media_description(description),
            // The room moved to the server (its fifth person came): meet everyone there, and
            // keep each browser-to-browser connection until the server carries that person.
            Message::MediaRoute(change) if change.media == MediaRoute::Sfu && self.sfu.is_none() => self.join_sfu(),
            // The room's media moved to another instance's forwarding unit (its owner stopped):
            // a new connection there; tiles stay, as everyone is still in the room.
            Message::MediaRoute(change) if change.media == MediaRoute::Sfu && change.reconnect => self.join_sfu(),
            Message::MediaRoute(_) => {}
            // Only clients send JOIN and NAME; only a socket waiting to join gets PRESENT.
            Message::Join(_) | Message::Name(_) | Message::Present(_) => {}
        }
    }

    pub(super) fn welcome(&mut self, welcome: Welcome) {
        self.push(Effect::Mark("welcome"));
        self.reconnect_attempts = 0;
        self.signaling_lost = false;
        self.welcomed = true;
        // Renamed after the join was sent: those waiting to join hear the name now.
        if self.joined_as != self.name {
            self.joined_as = self.name.clone();
            self.send(None, Message::Name(self.name.clone().unwrap_or_default()));
        }
        self.polite = welcome.polite;
        self.ice_servers = welcome.ice_servers;
        self.ice_policy = welcome.ice_transport_policy;
        self.room = welcome.peers;
        // Made with the ICE servers (and TURN credentials) of an earlier welcome.
        if let Some(standby) = self.standby.take() {
            self.push(Effect::DropPeer { peer: standby });
        }
        self.turn_refused = false;
        if welcome.media == MediaRoute::Sfu {
            return self.join_sfu();
        }
        self.leave_sfu();
        // Back after a signaling outage: the calls with the same people go on (they have new
        // peer ids). If this side is back first (the server restarted), the others will follow,
        // so a working connection is kept while the room is empty. One that never connected is
        // called afresh, as they will answer afresh.
        for index in (0..self.peers.len()).rev() {
            let peer = &mut self.peers[index];
            let same = self.room.iter().find(|member| same_person(&peer.public_id, &member.public_id));
            match same.filter(|_| peer.ever_connected) {
                Some(member) => {
                    peer.peer_id = member.peer_id;
                    peer.polite = member.polite.unwrap_or(self.polite);
                    let generation = peer.generation;
                    self.restart_ice_if_broken(generation);
                }
                None if self.room.is_empty() && peer.connection == ConnectionState::Connected => {}
                None => self.drop_peer(index),
            }
        }
        // The newcomer calls everyone else. Offers go now rather than on `negotiationneeded`,
        // a task later.
        let callees: Vec<PeerInfo> = self
            .room
            .iter()
            .filter(|member| !self.peers.iter().any(|peer| peer.peer_id == member.peer_id))
            .cloned()
            .collect();
        for member in callees {
            let peer = self.new_peer(&member, false);
            let (audio, video) = (self.media.audio, self.media.video());
            self.push(Effect::AddTransceivers { peer, audio, video });
            self.offer(peer);
        }
        if self.peers.is_empty() {
            self.stand_by();
        }
    }

    pub(super) fn joined(&mut self, info: PeerInfo) {
        // Their earlier connection, if they are coming back, is gone.
        self.room.retain(|member| member.peer_id != info.peer_id && !same_person(&member.public_id, &info.public_id));
        let polite = info.polite.unwrap_or(self.polite);
        self.room.push(PeerInfo { polite: Some(polite), ..info.clone() });
        if self.sfu.is_some() {
            return self.add_person(&info, true);
        }
        if let Some(index) = self.peers.iter().position(|peer| same_person(&peer.public_id, &info.public_id)) {
            let peer = &mut self.peers[index];
            if peer.ever_connected {
                // They reconnected; the call goes on.
                peer.peer_id = info.peer_id;
                peer.polite = polite;
                return;
            }
            // It never connected: they will call afresh, as a newcomer does.
            self.drop_peer(index);
        }
        // Someone new: they call, we answer. The connection is made now, while their offer is
        // on its way.
        self.new_peer(&PeerInfo { polite: Some(polite), ..info }, true);
    }

    /// After a BYE or a `PEER_LEFT`: with no one left to call, wait for whoever comes next.
    pub(super) fn after_someone_left(&mut self) {
        if self.peers.is_empty() {
            self.someone_left = true;
            if self.standby.is_none() {
                self.stand_by();
            }
        }
    }

    /// Who sent a relayed message: its `from`, or without one (a client that names no one, in a
    /// room of two) the room's only other person.
    pub(super) fn sender_id(&self, from: Option<PeerId>) -> Option<PeerId> {
        from.or(match self.room.as_slice() {
            [only] => Some(only.peer_id),
            _ => None,
        })
    }

    /// The connection a relayed message is for: its sender's, or without a known sender the
    /// only connection (kept to someone who left the room).
    pub(super) fn sender(&self, from: Option<PeerId>) -> Option<usize> {
        match self.sender_id(from) {
            Some(id) => self.peers.iter().position(|peer| peer.peer_id == id),
            None if self.peers.len() == 1 => Some(0),
            None => None,
        }
    }

    pub(super) fn connect_signaling(&mut self) {
        self.socket += 1;
        self.socket_up = true;
        self.push(Effect::Mark("socket"));
        self.joined_as = self.name.clone();
        self.push(Effect::OpenSocket { socket: self.socket, name: self.name.clone() });
    }

    pub(super) fn schedule_reconnect(&mut self) {
        let after_ms = reconnect_delay_ms(self.reconnect_attempts, (self.random)());
        self.reconnect_attempts += 1;
        self.push(Effect::Arm { timer: Timer::Reconnect { socket: self.socket }, after_ms });
    }

    pub(super) fn send(&mut self, to: Option<PeerId>, message: Message) {
        if self.socket_up {
            self.push(Effect::Send { to, message });
        } else {
            // As the wire has it: a derived `Debug` of every message would cost the page's wasm.
            self.push(Effect::Warn(format!("signaling is down; dropped {}", message.to_json())));
        }
    }

    pub(super) fn bye_to_everyone(&mut self) {
        let everyone: Vec<PeerId> = self.room.iter().map(|member| member.peer_id).collect();
        for to in everyone {
            self.send(Some(to), Message::Bye(None));
        }
    }
}
