//! How the server sends one forwarded track down one of its m-lines to a browser: which of the
//! sender's simulcast layers, the payload type the browser gave the codec, and the RTP
//! numbering. Pure: the core looks things up in the `Rtc`s and writes the packet.
//!
//! Each of the server's m-lines is one outgoing RTP stream with an SSRC of its own, whose
//! sequence numbers and timestamps must run on without a jump though what it carries changes (a
//! newcomer's track on a reused m-line, a sender whose browser picked a new SSRC). Forwarded
//! with the sender's numbers, the browser would take a jump for thousands of lost packets and
//! ask for them again, or drop the new packets as old ones.

use std::time::Instant;

use str0m::media::Pt;

use super::layers::{Choice, Layer};
use str0m::{
    format::PayloadParams,
    rtp::{SeqNo, Ssrc},
};

#[derive(Debug, Default)]
pub struct Relay {
    /// The outgoing stream's SSRC, once looked up by its m-line (a scan in str0m).
    pub ssrc: Option<Ssrc>,
    /// The last payload type seen from the sender and the browser's for the same codec.
    pts: Option<(Pt, Option<Pt>)>,
    /// The incoming stream the offsets apply to, and the offsets.
    from: Option<Ssrc>,
    seq_offset: u64,
    time_offset: u32,
    /// The highest sequence number sent, its timestamp, and when it was sent.
    last: Option<(u64, u32, Instant)>,
    /// The simulcast layer being sent, and the one to move to at its next keyframe, and why.
    layer: Option<Layer>,
    pub choice: Option<Choice>,
}

impl Relay {
    /// The browser's payload type for the sender's `pt`; `find` matches the codec (asked again
    /// only when the sender's payload type changes).
    pub fn pt(&mut self, pt: Pt, find: impl FnOnce() -> Option<Pt>) -> Option<Pt> {
        match self.pts {
            Some((from, to)) if from == pt => to,
            _ => {
                let to = find();
                self.pts = Some((pt, to));
                to
            }
        }
    }

    /// The layer being sent: what a keyframe request from the browser is passed on to.
    pub fn layer(&self) -> Option<Layer> {
        self.layer
    }

    /// Moves to `choice`: at once if it is to send nothing, else at the layer's next keyframe.
    /// Whether a keyframe of it is needed (it is not the layer being sent).
    pub fn choose(&mut self, choice: Choice) -> bool {
        self.choice = Some(choice);
        if choice.layer.is_none() {
            self.layer = None;
        }
        choice.layer.is_some() && choice.layer != self.layer
    }

    /// Whether a packet of `layer` (`None`: the sender sends no layers) goes down this m-line;
    /// `keyframe`: it begins one.
    pub fn passes(&mut self, layer: Option<Layer>, keyframe: bool) -> bool {
        let Some(layer) = layer else { return true };
        let target = self.choice.and_then(|choice| choice.layer);
        if keyframe && target == Some(layer) {
            self.layer = target;
        }
        self.layer == Some(layer)
    }

    /// The sequence number and timestamp to send a packet with that came from stream `from`
    /// with `seq` and `time`, at `now`, on a clock of `clock_rate` ticks a second. A new stream
    /// goes on right after the last packet sent: the next sequence number, and the timestamp as
    /// much later as time passed. Packets of one stream keep their spacing, reordering and gaps
    /// (a gap is a loss the browser should ask for again).
    pub fn renumber(&mut self, from: Ssrc, seq: SeqNo, time: u32, now: Instant, clock_rate: u32) -> (SeqNo, u32) {
        let seq = *seq;
        if self.from != Some(from) {
            self.from = Some(from);
            if let Some((last_seq, last_time, at)) = self.last {
                let ticks = (now.saturating_duration_since(at).as_secs_f64() * f64::from(clock_rate)) as u32;
                self.seq_offset = (last_seq + 1).wrapping_sub(seq);
                self.time_offset = last_time.wrapping_add(ticks.max(1)).wrapping_sub(time);
            }
        }
        let out = (seq.wrapping_add(self.seq_offset), time.wrapping_add(self.time_offset));
        if self.last.is_none_or(|(last, ..)| out.0 > last) {
            self.last = Some((out.0, out.1, now));
        }
        (out.0.into(), out.1)
    }
}

/// The clock rate of a codec's RTP timestamps.
pub fn clock_rate(params: &PayloadParams) -> u32 {
    params.spec().clock_rate.get()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const VIDEO: u32 = 90_000;

    fn send(relay: &mut Relay, from: u32, seq: u64, time: u32, at: Instant) -> (u64, u32) {
        let (seq, time) = relay.renumber(from.into(), seq.into(), time, at, VIDEO);
        (*seq, time)
    }

    #[test]
    fn a_first_stream_keeps_its_numbers_and_their_gaps_and_order() {
        let mut relay = Relay::default();
        let now = Instant::now();
        assert_eq!(send(&mut relay, 7, 100, 9_000, now), (100, 9_000));
        assert_eq!(send(&mut relay, 7, 102, 15_000, now), (102, 15_000));
        // The lost one arrives late (the sender resent it): it keeps its place.
        assert_eq!(send(&mut relay, 7, 101, 12_000, now), (101, 12_000));
    }

    #[test]
    fn a_new_stream_goes_on_from_the_last_packet_sent() {
        let mut relay = Relay::default();
        let now = Instant::now();
        send(&mut relay, 7, 100, 9_000, now);
        send(&mut relay, 7, 101, 12_000, now);
        // A reordered old packet does not move where the next stream starts.
        send(&mut relay, 7, 99, 6_000, now);
        let later = now + Duration::from_millis(500);
        assert_eq!(send(&mut relay, 8, 40_000, 1_000_000, later), (102, 12_000 + 45_000));
        assert_eq!(send(&mut relay, 8, 40_001, 1_003_000, later), (103, 12_000 + 48_000));
    }

    #[test]
    fn numbers_wrap_as_rtp_numbers_do() {
        let mut relay = Relay::default();
        let now = Instant::now();
        send(&mut relay, 7, 70_000, u32::MAX - 10, now);
        // The new stream's numbers are smaller than the old one's: no underflow.
        assert_eq!(send(&mut relay, 8, 5, 3, now), (70_001, u32::MAX - 9));
        assert_eq!(send(&mut relay, 8, 6, 30, now), (70_002, (u32::MAX - 9).wrapping_add(27)));
    }

    fn choice(layer: Option<Layer>) -> Choice {
        Choice { layer, reason: crate::protocol::Reason::Tile }
    }

    #[test]
    fn a_layer_is_switched_to_at_its_keyframe_and_off_at_once() {
        let mut relay = Relay::default();
        // Nothing chosen yet: no layer passes; a sender without layers always does.
        assert!(!relay.passes(Some(Layer::Quarter), true));
        assert!(relay.passes(None, false));
        assert!(relay.choose(choice(Some(Layer::Quarter))));
        assert!(!relay.passes(Some(Layer::Quarter), false));
        assert!(relay.passes(Some(Layer::Quarter), true));
        assert!(relay.passes(Some(Layer::Quarter), false));
        assert!(!relay.passes(Some(Layer::Full), true));
        // Up to the full layer: the quarter goes on until the full one's keyframe.
        assert!(relay.choose(choice(Some(Layer::Full))));
        assert!(relay.passes(Some(Layer::Quarter), false));
        assert!(!relay.passes(Some(Layer::Full), false));
        assert_eq!(relay.layer(), Some(Layer::Quarter));
        assert!(relay.passes(Some(Layer::Full), true));
        assert!(!relay.passes(Some(Layer::Quarter), false));
        assert_eq!(relay.layer(), Some(Layer::Full));
        // The same again needs no keyframe; nothing stops at once.
        assert!(!relay.choose(choice(Some(Layer::Full))));
        assert!(!relay.choose(choice(None)));
        assert!(!relay.passes(Some(Layer::Full), true));
        assert_eq!(relay.layer(), None);
    }

    #[test]
    fn the_payload_type_is_matched_once_per_sender_payload_type() {
        let mut relay = Relay::default();
        let mut asked = 0;
        let mut find = |to| {
            asked += 1;
            Some(Pt::from(to))
        };
        assert_eq!(relay.pt(109.into(), || find(111)), Some(111.into()));
        assert_eq!(relay.pt(109.into(), || find(0)), Some(111.into()));
        assert_eq!(relay.pt(96.into(), || find(98)), Some(98.into()));
        assert_eq!(asked, 2);
    }
}
