//! The SFU (selective forwarding unit) for rooms beyond a mesh (`--media auto` from a room's
//! fifth person, or `sfu`): each person sends their media once, to this server, and receives
//! everyone else's from it; their names, states and chat come and go on its data channel.
//!
//! - `router`: which person a datagram belongs to, before anything is parsed.
//! - `core`: the sans-IO core: one str0m `Rtc` per person, driven by datagrams and the clock.
//! - `slots`: the m-lines each person receives others' tracks on, reused as people come and go.
//! - `layers`: which simulcast layer each receiver gets of each camera: tile size, bandwidth.
//! - `relay`: how a forwarded packet goes down one of those m-lines: layer, payload type,
//!   numbering.
//! - `voices`: whose voice a large room forwards: the loudest few, and whoever speaks.
//! - `vp8`: what the unit reads of a VP8 packet: whether it starts a keyframe, and its size.
//! - `sockets`: the socket edge: the task that owns the media socket, the ICE-TCP connections'
//!   write ends, and the core.
//! - `tcp`: ICE-TCP, for networks that block UDP: a listener and a task per connection.
//! - `link`: a person's place on the unit as signaling sees it (SDP in, frames out), and the
//!   stand-in that holds one for a person whose signaling is on another instance.

pub(crate) mod core;
pub(crate) mod layers;
pub(crate) mod link;
pub(crate) mod relay;
pub(crate) mod router;
pub(crate) mod slots;
pub(crate) mod sockets;
pub(crate) mod tcp;
pub(crate) mod voices;
pub(crate) mod vp8;
