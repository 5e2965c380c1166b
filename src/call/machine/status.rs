//! What the page is told: the status line, worked out from the state after every input, and
//! the tiles, the room and the speaking ring, each only when it changed.

use super::{mesh::is_relay, people::Peer, CallMachine, ConnectionState, Effect, GROUP_VIDEO_BPS};
use crate::{
    call::{CallStatus, Remote},
    protocol::{IceTransportPolicy, PeerId},
};

impl CallMachine {
    /// The status line, from the state: what needs the person's attention first, then how
    /// the connections are doing (one that works is enough to be in a call).
    pub(super) fn status(&self) -> CallStatus {
        let status = if self.signaling_lost && self.sfu.is_some() {
            CallStatus::ServerReconnecting
        } else if self.signaling_lost {
            CallStatus::SignalingReconnecting
        } else if !self.welcomed {
            CallStatus::Joining
        } else if self.peers.is_empty() {
            match (self.someone_left, self.room.is_empty()) {
                (true, _) if self.company > 1 => CallStatus::OthersLeft,
                (true, _) => CallStatus::PeerLeft,
                (false, true) => CallStatus::WaitingForPeer,
                (false, false) => CallStatus::Connecting,
            }
        } else if self.peers.iter().any(|peer| peer.connection == ConnectionState::Connected) {
            let group = self.peers.len() > 1;
            let connected = self.peers.iter().filter(|peer| peer.connection == ConnectionState::Connected);
            let names = connected.filter_map(|peer| peer.remote().called(group)).collect();
            match self.sfu {
                Some(_) => CallStatus::ConnectedThroughServer(names),
                None => CallStatus::Connected(names),
            }
        } else if self.turn_refused
            && (self.ice_policy == IceTransportPolicy::Relay || self.peers.iter().any(Peer::could_not_connect))
        {
            CallStatus::TurnRefused
        } else if self.peers.iter().any(|peer| peer.ever_connected) {
            // Not connected now (that is above), whether `disconnected`, `failed` or
            // `connecting` again after an ICE restart: one text until it is back.
            CallStatus::ConnectionInterrupted
        } else if self.peers.iter().any(Peer::could_not_connect) {
            if self.ice_servers.iter().flat_map(|server| &server.urls).any(|url| is_relay(url)) {
                CallStatus::RelayFailed
            } else {
                CallStatus::NeedsRelay
            }
        } else {
            CallStatus::Connecting
        };
        if self.media.starting {
            status.while_media_starts()
        } else {
            status
        }
    }

    /// Tells the page (and the socket) what changed: the status line, the tiles, who is here.
    pub(super) fn show_changes(&mut self) {
        if !self.peers.is_empty() {
            self.unsent_chat.clear();
        }
        let status = self.status();
        if self.shown.0.as_ref() != Some(&status) {
            self.shown.0 = Some(status.clone());
            self.push(Effect::Status(status));
        }
        let remotes: Vec<Remote> = self.peers.iter().map(Peer::remote).collect();
        if self.shown.1 != remotes {
            self.shown.1 = remotes.clone();
            self.push(Effect::Remotes(remotes));
        }
        let everyone: Vec<PeerId> = self.room.iter().map(|member| member.peer_id).collect();
        if self.shown.2 != everyone {
            self.shown.2 = everyone.clone();
            self.push(Effect::Everyone(everyone));
        }
        // Muted is silent at once, whatever the last reading said.
        let speaking = self.voice.speaking && self.media.state().audio;
        if self.shown.3 != speaking {
            self.shown.3 = speaking;
            self.push(Effect::Speaking(speaking));
        }
        // With more people, each gets a share of one call's upload (on the server, it goes once).
        let cap = (self.sfu.is_none() && self.peers.len() > 1).then(|| GROUP_VIDEO_BPS / self.peers.len() as u32);
        if cap != self.video_cap {
            self.video_cap = cap;
            for peer in self.generations() {
                self.push(Effect::CapVideo { peer, max_bps: cap });
            }
        }
    }
}
