//! Whose voice a large room forwards. Pure: the core keeps each sender's [`Voice`] from the
//! audio level their packets carry (RFC 6464) and forwards each receiver the voices
//! [`Audible::hears`] says.
//!
//! Up to [`ALL_FROM`] people everyone is heard, as in any call. Above it, a room where
//! everyone's microphone noise reached everyone would be a roar, and each receiver would decode
//! that many streams: the server forwards each receiver the [`LOUDEST`] loudest other voices of
//! the last moments, and whoever is speaking now besides. Audio is never dropped to make room
//! for video.

use std::time::{Duration, Instant};

/// From how many people on (more than ten) a room forwards only some voices.
pub const ALL_FROM: usize = 11;

/// How many of the loudest voices are always forwarded in a large room.
pub const LOUDEST: usize = 3;

/// A voice is speech at this RFC 6464 level (dB of full scale) or louder: a quiet voice near
/// the microphone.
pub const SPEECH_LEVEL: i8 = -45;

/// How long a voice counts as speaking after its last packet of speech, and as heard at all
/// after its last packet (a muted microphone in Chromium goes on sending silence; one that sends
/// nothing is not heard).
const SPEAKING_FOR: Duration = Duration::from_secs(1);
const HEARD_FOR: Duration = Duration::from_secs(1);

/// One sender's voice: how loud lately (smoothed over about half a second of packets), and
/// when last speech and any audio came.
#[derive(Clone, Copy, Debug)]
pub struct Voice {
    loudness: f32,
    spoke: Option<Instant>,
    heard: Option<Instant>,
}

impl Default for Voice {
    fn default() -> Self {
        Self { loudness: -127.0, spoke: None, heard: None }
    }
}

impl Voice {
    /// A packet came at `now` with `level` (none: the sender does not say).
    pub fn hear(&mut self, now: Instant, level: Option<i8>) {
        self.heard = Some(now);
        let Some(level) = level else { return };
        // A packet is 20 ms: each weighs a twenty-fifth, half a second in all.
        self.loudness += (f32::from(level) - self.loudness) / 25.0;
        if level >= SPEECH_LEVEL {
            self.spoke = Some(now);
        }
    }

    pub fn speaking(&self, now: Instant) -> bool {
        self.spoke.is_some_and(|at| now.saturating_duration_since(at) < SPEAKING_FOR)
    }

    fn heard(&self, now: Instant) -> bool {
        self.heard.is_some_and(|at| now.saturating_duration_since(at) < HEARD_FOR)
    }
}

/// Whose voices a large room forwards now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audible<K> {
    /// The loudest voices heard lately, loudest first: one more than [`LOUDEST`], so that each
    /// receiver has that many besides their own.
    loudest: Vec<K>,
    speaking: Vec<K>,
}

impl<K: Copy + PartialEq> Audible<K> {
    /// Whether `receiver` is sent `source`'s voice.
    pub fn hears(&self, receiver: K, source: K) -> bool {
        self.speaking.contains(&source)
            || self.loudest.iter().filter(|key| **key != receiver).take(LOUDEST).any(|key| *key == source)
    }
}

/// Whose voices a room of `voices` forwards now: `None` (everyone's) in a room of fewer than
/// [`ALL_FROM`].
pub fn audible<K: Copy>(voices: &[(K, Voice)], now: Instant) -> Option<Audible<K>> {
    if voices.len() < ALL_FROM {
        return None;
    }
    let mut heard: Vec<&(K, Voice)> = voices.iter().filter(|(_, voice)| voice.heard(now)).collect();
    heard.sort_by(|(_, a), (_, b)| b.loudness.total_cmp(&a.loudness));
    let speaking = heard.iter().filter(|(_, voice)| voice.speaking(now)).map(|(key, _)| *key).collect();
    Some(Audible { loudest: heard.iter().take(LOUDEST + 1).map(|(key, _)| *key).collect(), speaking })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voice that sent `packets` packets of 20 ms at `level`, the last at `now`.
    fn voice(level: i8, packets: u32, now: Instant) -> Voice {
        let mut voice = Voice::default();
        for packet in (0..packets).rev() {
            voice.hear(now - Duration::from_millis(20) * packet, Some(level));
        }
        voice
    }

    /// Whom `receiver` hears of `room`.
    fn heard_by(room: &[(u32, Voice)], receiver: u32, now: Instant) -> Vec<u32> {
        let audible = audible(room, now);
        let hears = |source: u32| audible.as_ref().is_none_or(|audible| audible.hears(receiver, source));
        room.iter().map(|(key, _)| *key).filter(|key| *key != receiver && hears(*key)).collect()
    }

    #[test]
    fn a_room_of_ten_hears_everyone_even_the_silent() {
        let now = Instant::now();
        let room: Vec<(u32, Voice)> = (0..10).map(|key| (key, Voice::default())).collect();
        assert_eq!(audible(&room, now), None);
        assert_eq!(heard_by(&room, 0, now), (1..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_larger_room_hears_the_three_loudest_and_whoever_speaks() {
        let now = Instant::now();
        // Twelve people: eight in quiet rooms at different levels, two silent, two speaking.
        let mut room: Vec<(u32, Voice)> = (0..8).map(|key| (key, voice(-70 + key as i8, 50, now))).collect();
        room.push((8, Voice::default()));
        room.push((9, Voice::default()));
        room.push((10, voice(-20, 50, now)));
        room.push((11, voice(-30, 50, now)));
        // The two speakers are the loudest; the third loudest is the least quiet room.
        assert_eq!(heard_by(&room, 8, now), [7, 10, 11]);
        // Whoever is among the loudest hears the three loudest others.
        assert_eq!(heard_by(&room, 7, now), [6, 10, 11]);
        assert_eq!(heard_by(&room, 10, now), [6, 7, 11]);
        // A fourth voice starts speaking: heard at once, though not yet among the loudest.
        room[0].1.hear(now, Some(-25));
        assert_eq!(heard_by(&room, 8, now), [0, 7, 10, 11]);
    }

    #[test]
    fn a_voice_that_stopped_coming_is_not_among_the_loudest() {
        let now = Instant::now();
        let mut room: Vec<(u32, Voice)> = (0..11).map(|key| (key, voice(-60, 50, now))).collect();
        // The loudest of all, until a second ago.
        room[3].1 = voice(-10, 50, now - Duration::from_secs(2));
        let heard = heard_by(&room, 0, now);
        assert!(!heard.contains(&3));
        assert_eq!(heard.len(), LOUDEST);
    }

    #[test]
    fn speech_is_a_level_and_lasts_a_second() {
        let now = Instant::now();
        let mut quiet = Voice::default();
        quiet.hear(now, Some(-50));
        assert!(!quiet.speaking(now));
        quiet.hear(now, Some(-45));
        assert!(quiet.speaking(now + Duration::from_millis(999)));
        assert!(!quiet.speaking(now + SPEAKING_FOR));
        // A sender that says no level is heard, never speaking.
        let mut unsaid = Voice::default();
        unsaid.hear(now, None);
        assert!(unsaid.heard(now) && !unsaid.speaking(now));
    }
}
