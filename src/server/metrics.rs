//! What `/metrics` reports, in Prometheus text format: one place that names every metric.

use std::{sync::LazyLock, time::Duration};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{
    protocol::Relayed,
    server::sfu::{
        core::{Counts, Load},
        sockets::Traffic,
    },
};

const OPEN_CONNECTIONS: &str = "duo_open_connections";
const ACTIVE_ROOMS: &str = "duo_active_rooms";
const RELAYED: &str = "duo_messages_relayed_total";
const REJECTED: &str = "duo_messages_rejected_total";
const RELAY_LATENCY: &str = "duo_relay_latency_seconds";
const BUILD_INFO: &str = "duo_build_info";
const CONNECTIONS: &str = "duo_tcp_connections";
const REFUSED_CONNECTIONS: &str = "duo_connections_refused_total";
const REFUSED_UPGRADES: &str = "duo_upgrades_refused_total";
const REDIS_UP: &str = "duo_redis_up";
const REDIS_DROPPED: &str = "duo_redis_frames_dropped_total";
const REDIS_LOST: &str = "duo_redis_frames_lost_total";
const SFU_PEOPLE: &str = "duo_sfu_people";
const SFU_PACKETS: &str = "duo_sfu_packets_total";
const SFU_DROPPED: &str = "duo_sfu_datagrams_dropped_total";
const SFU_KEYFRAMES: &str = "duo_sfu_keyframe_requests_total";
const SFU_MESSAGES: &str = "duo_sfu_channel_messages_total";
const ROOMS_MOVED: &str = "duo_rooms_moved_to_sfu_total";
const SFU_ROOMS: &str = "duo_sfu_rooms";
const SFU_TRACKS: &str = "duo_sfu_tracks_forwarded";
const SFU_BYTES: &str = "duo_sfu_bytes_total";
const SFU_TRACKS_REFUSED: &str = "duo_sfu_tracks_refused_total";
const SFU_TCP: &str = "duo_sfu_tcp_connections";
const SFU_OWNER_CHANGES: &str = "duo_sfu_owner_changes_total";
const SFU_REMOTE: &str = "duo_sfu_remote_requests_total";

/// Installs the process-wide recorder; `/metrics` renders from the handle.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        // From 20 µs (a relay on an idle server) to 1 s (a reader that fell far behind).
        .set_buckets_for_metric(
            Matcher::Full(RELAY_LATENCY.into()),
            &[0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0],
        )?
        .install_recorder()?;
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    OPEN.set(0.0);
    ROOMS.set(0.0);
    Ok(handle)
}

// Handles looked up once: per message, `counter!` would hash its name and labels again.
static OPEN: LazyLock<Gauge> = LazyLock::new(|| gauge!(OPEN_CONNECTIONS));
static ROOMS: LazyLock<Gauge> = LazyLock::new(|| gauge!(ACTIVE_ROOMS));
static LATENCY: LazyLock<Histogram> = LazyLock::new(|| histogram!(RELAY_LATENCY));
static RELAYED_BY_TYPE: LazyLock<[Counter; 3]> = LazyLock::new(|| {
    [Relayed::Sdp, Relayed::Candidate, Relayed::Bye]
        .map(|kind| counter!(RELAYED, "message_type" => kind.message_type()))
});

pub(crate) fn connection_opened() {
    OPEN.increment(1.0);
}

pub(crate) fn connection_closed() {
    OPEN.decrement(1.0);
}

/// A TCP connection (of any kind) opened or closed: what `--max-connections` counts.
pub(crate) fn tcp_connections(change: f64) {
    gauge!(CONNECTIONS).increment(change);
}

/// A connection closed at once; `reason`: `max_connections`, `connections_per_client` (opened
/// too fast) or `open_per_client`.
pub(crate) fn refused_connection(reason: &'static str) {
    counter!(REFUSED_CONNECTIONS, "reason" => reason).increment(1);
}

/// An upgrade to a signaling socket refused, or granted without TURN credentials; `reason`:
/// `origin`, `sockets_per_client`, `sockets_per_minute_per_client` or
/// `turn_credentials_per_client`.
pub(crate) fn refused_upgrade(reason: &'static str) {
    counter!(REFUSED_UPGRADES, "reason" => reason).increment(1);
}

pub(crate) fn active_rooms(count: usize) {
    ROOMS.set(count as f64);
}

/// A room's media moved to the forwarding unit (`--media auto`, at its fifth person).
pub(crate) fn room_moved() {
    counter!(ROOMS_MOVED).increment(1);
}

/// With `--redis`: a room's media went to another instance's forwarding unit (`took`: this one's),
/// because its owner stopped.
pub(crate) fn owner_changed(took: bool) {
    counter!(SFU_OWNER_CHANGES, "this_instance" => if took { "took" } else { "other" }).increment(1);
}

/// With `--redis`: SDP another instance sent this one's forwarding unit for one of its people,
/// taken or refused (this instance does not carry that room's media at that epoch, or the room
/// has no such person there).
pub(crate) fn remote_request(taken: bool) {
    counter!(SFU_REMOTE, "outcome" => if taken { "taken" } else { "refused" }).increment(1);
}

pub(crate) fn relayed(kind: Relayed) {
    RELAYED_BY_TYPE[kind as usize].increment(1);
}

pub(crate) fn rejected(code: &'static str) {
    counter!(REJECTED, "code" => code).increment(1);
}

/// From reading a frame off one socket to handing it to the other's (written at the next flush,
/// right after the frames queued behind it).
pub(crate) fn relay_latency(latency: Duration) {
    LATENCY.record(latency.as_secs_f64());
}

/// With `--redis`: whether Redis answers (and this instance listens on its channel).
pub(crate) fn redis_up(up: bool) {
    gauge!(REDIS_UP).set(if up { 1.0 } else { 0.0 });
}

/// A frame for another instance given up on; `reason`: `budget` (too much waited for Redis)
/// or `unreachable` (the instance died, or did not listen for 30 s).
pub(crate) fn redis_dropped(reason: &'static str) {
    counter!(REDIS_DROPPED, "reason" => reason).increment(1);
}

/// Frames from another instance that never arrived (a gap in its sequence that did not fill).
pub(crate) fn redis_lost(frames: u64) {
    counter!(REDIS_LOST).increment(frames);
}

/// The forwarding unit's counts, load and bytes went from `before` to `now`.
pub(crate) fn sfu(before: &(Counts, Load, Traffic), now: &(Counts, Load, Traffic)) {
    let ((before, _, traffic_before), (now, load, traffic)) = (before, now);
    gauge!(SFU_TCP).set(traffic.tcp_connections as f64);
    gauge!(SFU_PEOPLE).set(load.people as f64);
    gauge!(SFU_ROOMS).set(load.rooms as f64);
    gauge!(SFU_TRACKS).set(load.tracks as f64);
    let grew = |counter: Counter, before: u64, now: u64| counter.increment(now.saturating_sub(before));
    grew(counter!(SFU_PACKETS, "direction" => "in"), before.packets_in, now.packets_in);
    grew(counter!(SFU_PACKETS, "direction" => "out"), before.packets_out, now.packets_out);
    grew(counter!(SFU_DROPPED, "reason" => "unknown_source"), before.from_strangers, now.from_strangers);
    grew(counter!(SFU_DROPPED, "reason" => "refused_check"), before.refused_checks, now.refused_checks);
    grew(counter!(SFU_DROPPED, "reason" => "malformed"), before.malformed, now.malformed);
    grew(counter!(SFU_TRACKS_REFUSED), before.tracks_refused, now.tracks_refused);
    grew(counter!(SFU_KEYFRAMES, "outcome" => "forwarded"), before.keyframe_requests, now.keyframe_requests);
    grew(counter!(SFU_KEYFRAMES, "outcome" => "held"), before.keyframe_requests_held, now.keyframe_requests_held);
    grew(counter!(SFU_MESSAGES, "outcome" => "passed"), before.messages_passed, now.messages_passed);
    grew(counter!(SFU_MESSAGES, "outcome" => "dropped"), before.messages_dropped, now.messages_dropped);
    grew(counter!(SFU_BYTES, "direction" => "in"), traffic_before.received, traffic.received);
    grew(counter!(SFU_BYTES, "direction" => "out"), traffic_before.sent, traffic.sent);
}
