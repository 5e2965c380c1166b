//! The statistics panel's arithmetic, and the audio level the speaking ring reads: one reading
//! from a `getStats()` report list and the counts of the reading before; and the join screen's
//! microphone level, from samples. Pure, so it is tested without a browser.

use super::CallStats;

/// One `RTCStats` report, with the fields the panel reads. The browser side reads them off the
/// report objects one by one (parsing every report as JSON cost more wasm than this whole
/// module); the tests parse reports written as the browser gives them.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(test, derive(serde::Deserialize), serde(default, rename_all = "camelCase"))]
pub struct Report {
    pub id: String,
    #[cfg_attr(test, serde(rename = "type"))]
    pub report_type: String,
    pub kind: Option<String>,
    /// The m-line of an `inbound-rtp` stream: on the connection to the server, whose it is.
    pub mid: Option<String>,
    pub bytes_received: f64,
    pub bytes_sent: f64,
    pub packets_lost: f64,
    pub packets_received: f64,
    pub frames_decoded: f64,
    pub frame_width: Option<u32>,
    pub frame_height: Option<u32>,
    pub frames_per_second: Option<f64>,
    /// Chromium's `transport` report names the candidate pair in use.
    pub selected_candidate_pair_id: Option<String>,
    /// Firefox marks the candidate pair in use itself.
    pub selected: bool,
    pub local_candidate_id: Option<String>,
    pub remote_candidate_id: Option<String>,
    pub current_round_trip_time: Option<f64>,
    pub candidate_type: Option<String>,
    /// Of received audio: the sum of each sample's level squared times its duration, and the
    /// seconds of samples. Their growth between readings gives the level in between.
    pub total_audio_energy: f64,
    pub total_samples_duration: f64,
}

/// Bytes received and sent, and when (milliseconds), at one reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    bytes_in: f64,
    bytes_out: f64,
    /// Of the audio received, and of the microphone sent.
    audio_in: Audio,
    audio_out: Audio,
    at_ms: f64,
}

/// The running sums of an audio stream's squared levels and of its seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Audio {
    energy: f64,
    seconds: f64,
}

impl Audio {
    fn add(&mut self, report: &Report) {
        self.energy += report.total_audio_energy;
        self.seconds += report.total_samples_duration;
    }

    /// The mean of the squared level over the samples since `before`, as a level; no samples
    /// (nothing played or captured, or a new connection's counters) is no reading.
    fn level_since(&self, before: &Audio) -> Option<f64> {
        let seconds = self.seconds - before.seconds;
        (seconds > 0.0).then(|| ((self.energy - before.energy).max(0.0) / seconds).sqrt())
    }
}

/// How loud the join screen's microphone meter shows `samples` (-1.0 to 1.0): 0 at or below
/// [`QUIETEST_DB`], 1 at full scale, evenly in decibels between, as people hear loudness.
pub fn meter_level(samples: &[f32]) -> f64 {
    let peak = samples.iter().fold(0.0_f32, |peak, sample| peak.max(sample.abs()));
    let db = 20.0 * f64::from(peak).log10();
    (1.0 - db / QUIETEST_DB).clamp(0.0, 1.0)
}

/// The quietest sound the meter shows, in decibels below full scale: about a room's hum.
pub const QUIETEST_DB: f64 = -60.0;

/// One statistics-panel reading from `getStats()`'s reports, taken at `now_ms`; rates are over
/// the time since `before`. Returns the reading and its traffic, for the next.
pub fn summarize(reports: &[Report], before: Option<Traffic>, now_ms: f64) -> (CallStats, Traffic) {
    let by_id = |id: &Option<String>| reports.iter().find(|r| Some(&r.id) == id.as_ref());
    let mut stats = CallStats::default();
    let (mut bytes_in, mut bytes_out, mut lost, mut received) = (0.0, 0.0, 0.0, 0.0);
    let (mut audio_in, mut audio_out) = (Audio::default(), Audio::default());
    for report in reports {
        match report.report_type.as_str() {
            "inbound-rtp" => {
                bytes_in += report.bytes_received;
                lost += report.packets_lost.max(0.0);
                received += report.packets_received;
                match report.kind.as_deref() {
                    Some("video") => {
                        stats.width = report.frame_width;
                        stats.height = report.frame_height;
                        stats.frames_per_second = report.frames_per_second;
                    }
                    Some("audio") => audio_in.add(report),
                    _ => {}
                }
            }
            "outbound-rtp" => bytes_out += report.bytes_sent,
            // The microphone as captured, where the browser reports it (Chromium does).
            "media-source" if report.kind.as_deref() == Some("audio") => audio_out.add(report),
            _ => {}
        }
    }
    let selected = reports
        .iter()
        .find(|r| r.report_type == "transport" && r.selected_candidate_pair_id.is_some())
        .and_then(|transport| by_id(&transport.selected_candidate_pair_id))
        .or_else(|| reports.iter().find(|r| r.report_type == "candidate-pair" && r.selected));
    if let Some(pair) = selected {
        stats.round_trip_ms = pair.current_round_trip_time.map(|s| s * 1000.0);
        let relay = |end: Option<&Report>| end.is_some_and(|c| c.candidate_type.as_deref() == Some("relay"));
        stats.relayed =
            by_id(&pair.local_candidate_id).map(|local| relay(Some(local)) || relay(by_id(&pair.remote_candidate_id)));
    }
    if lost + received > 0.0 {
        stats.packet_loss_percent = 100.0 * lost / (lost + received);
    }
    if let Some(before) = before {
        let seconds = ((now_ms - before.at_ms) / 1000.0).max(0.001);
        stats.kbps_in = (bytes_in - before.bytes_in).max(0.0) * 8.0 / 1000.0 / seconds;
        stats.kbps_out = (bytes_out - before.bytes_out).max(0.0) * 8.0 / 1000.0 / seconds;
        stats.audio_level = audio_in.level_since(&before.audio_in);
        stats.sent_audio_level = audio_out.level_since(&before.audio_out);
    }
    (stats, Traffic { bytes_in, bytes_out, audio_in, audio_out, at_ms: now_ms })
}

/// What one of the server's audio m-lines last carried, as `getSynchronizationSources()` says:
/// when its last packet was played out, and the level that packet's RFC 6464 header extension
/// gave (linear, 0 to 1), which the server passes on from the sender.
#[derive(Clone, Debug, PartialEq)]
pub struct Heard {
    pub mid: String,
    pub at: f64,
    pub level: Option<f64>,
}

/// When each of the server's audio m-lines was last heard: on the connection to the server, one
/// person's voice each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Voices(Vec<(String, f64)>);

impl Voices {
    /// Each m-line's level, by m-line: none where no packet came since the reading before (a
    /// browser keeps a source's last level for seconds after its packets stop).
    pub fn read(&mut self, heard: &[Heard]) -> Vec<(String, Option<f64>)> {
        let levels = heard
            .iter()
            .map(|heard| {
                let fresh = self.0.iter().find(|(mid, _)| *mid == heard.mid).is_none_or(|(_, at)| *at != heard.at);
                (heard.mid.clone(), heard.level.filter(|_| fresh))
            })
            .collect();
        self.0 = heard.iter().map(|heard| (heard.mid.clone(), heard.at)).collect();
        levels
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// Reports as the browser gives them, JSON with fields the panel does not read.
    pub(crate) fn parse(reports: Vec<Value>) -> Vec<Report> {
        serde_json::from_value(Value::Array(reports)).expect("reports parse")
    }

    fn reports(bytes_in: u64, bytes_out: u64, lost: i64, received: u64) -> Vec<Report> {
        parse(vec![
            json!({"id": "in-a", "type": "inbound-rtp", "kind": "audio", "bytesReceived": bytes_in / 4,
                   "packetsLost": lost, "packetsReceived": received / 2}),
            json!({"id": "in-v", "type": "inbound-rtp", "kind": "video", "bytesReceived": bytes_in - bytes_in / 4,
                   "packetsLost": 0, "packetsReceived": received - received / 2,
                   "frameWidth": 640, "frameHeight": 480, "framesPerSecond": 29.5}),
            json!({"id": "out-v", "type": "outbound-rtp", "kind": "video", "bytesSent": bytes_out}),
            json!({"id": "T", "type": "transport", "selectedCandidatePairId": "P"}),
            json!({"id": "P", "type": "candidate-pair", "localCandidateId": "L", "remoteCandidateId": "R",
                   "currentRoundTripTime": 0.042}),
            json!({"id": "L", "type": "local-candidate", "candidateType": "host"}),
            json!({"id": "R", "type": "remote-candidate", "candidateType": "relay", "port": 3478}),
        ])
    }

    #[test]
    fn rates_are_over_the_time_since_the_last_reading() {
        let (first, traffic) = summarize(&reports(10_000, 5_000, 0, 100), None, 1_000.0);
        // Nothing to compare with yet.
        assert_eq!((first.kbps_in, first.kbps_out), (0.0, 0.0));
        // 125,000 more bytes in over two seconds is 500 kbit/s; 25,000 out is 100 kbit/s.
        let (second, _) = summarize(&reports(135_000, 30_000, 0, 300), Some(traffic), 3_000.0);
        assert_eq!((second.kbps_in, second.kbps_out), (500.0, 100.0));
        assert_eq!((second.width, second.height, second.frames_per_second), (Some(640), Some(480), Some(29.5)));
        assert_eq!(second.round_trip_ms, Some(42.0));
        // The remote end of the pair is a relay: media goes through TURN.
        assert_eq!(second.relayed, Some(true));
    }

    #[test]
    fn the_meter_reads_the_peak_in_decibels() {
        assert_eq!(meter_level(&[]), 0.0);
        assert_eq!(meter_level(&[0.0; 64]), 0.0);
        assert_eq!(meter_level(&[0.0, -1.0, 0.5]), 1.0);
        // -30 dB, half way; -60 dB and quieter, nothing.
        assert!((meter_level(&[0.0316, -0.01]) - 0.5).abs() < 0.01);
        assert_eq!(meter_level(&[0.0005]), 0.0);
    }

    #[test]
    fn loss_counts_every_packet_expected_and_a_reset_counter_is_no_negative_rate() {
        let (stats, traffic) = summarize(&reports(1_000, 1_000, 5, 95), None, 0.0);
        assert_eq!(stats.packet_loss_percent, 5.0);
        // A negative packetsLost (duplicates) counts as none; fewer bytes than before (a new
        // connection's counters) is no traffic, not a negative rate.
        let (stats, _) = summarize(&reports(500, 500, -3, 100), Some(traffic), 0.0);
        assert_eq!(stats.packet_loss_percent, 0.0);
        assert_eq!((stats.kbps_in, stats.kbps_out), (0.0, 0.0));
    }

    #[test]
    fn the_audio_level_is_the_root_mean_square_since_the_reading_before() {
        let audio = |energy: f64, seconds: f64| {
            parse(vec![json!({"id": "in-a", "type": "inbound-rtp", "kind": "audio",
                              "totalAudioEnergy": energy, "totalSamplesDuration": seconds})])
        };
        let (first, traffic) = summarize(&audio(3.0, 10.0), None, 0.0);
        assert_eq!(first.audio_level, None);
        // 0.02 more energy over half a second: a mean square of 0.04, a level of 0.2.
        let (second, traffic) = summarize(&audio(3.02, 10.5), Some(traffic), 500.0);
        assert!((second.audio_level.unwrap() - 0.2).abs() < 1e-9, "{second:?}");
        // Silence, and then no samples at all (nothing played them out).
        let (silent, traffic) = summarize(&audio(3.02, 11.0), Some(traffic), 1_000.0);
        assert_eq!(silent.audio_level, Some(0.0));
        let (none, _) = summarize(&audio(3.02, 11.0), Some(traffic), 1_500.0);
        assert_eq!(none.audio_level, None);
        // The microphone's own level comes from its media source, apart from what is received.
        let sent = |energy: f64, seconds: f64| {
            parse(vec![json!({"id": "m", "type": "media-source", "kind": "audio",
                              "totalAudioEnergy": energy, "totalSamplesDuration": seconds})])
        };
        let (_, traffic) = summarize(&sent(1.0, 4.0), None, 0.0);
        let (stats, _) = summarize(&sent(1.09, 5.0), Some(traffic), 1_000.0);
        assert!((stats.sent_audio_level.unwrap() - 0.3).abs() < 1e-9, "{stats:?}");
        assert_eq!(stats.audio_level, None);
    }

    #[test]
    fn through_the_server_each_m_line_has_the_level_its_last_packet_said_while_packets_come() {
        let heard = |mid: &str, at: f64, level: Option<f64>| Heard { mid: mid.into(), at, level };
        let mut voices = Voices::default();
        let levels = voices.read(&[heard("3", 1_000.0, Some(0.2)), heard("5", 1_000.0, None)]);
        assert_eq!(levels, [("3".into(), Some(0.2)), ("5".into(), None)]);
        // "3" went quiet: its packets stopped, and its last level is no longer news.
        let levels = voices.read(&[heard("3", 1_000.0, Some(0.2)), heard("5", 1_450.0, Some(0.01))]);
        assert_eq!(levels, [("3".into(), None), ("5".into(), Some(0.01))]);
    }

    #[test]
    fn firefox_marks_the_pair_in_use_itself() {
        let reports = parse(vec![
            json!({"id": "P1", "type": "candidate-pair", "localCandidateId": "L", "remoteCandidateId": "R",
                   "currentRoundTripTime": 0.5}),
            json!({"id": "P2", "type": "candidate-pair", "selected": true, "localCandidateId": "L",
                   "remoteCandidateId": "R", "currentRoundTripTime": 0.010}),
            json!({"id": "L", "type": "local-candidate", "candidateType": "srflx"}),
            json!({"id": "R", "type": "remote-candidate", "candidateType": "host"}),
        ]);
        let (stats, _) = summarize(&reports, None, 0.0);
        assert_eq!(stats.round_trip_ms, Some(10.0));
        assert_eq!(stats.relayed, Some(false));
        assert_eq!(stats.packet_loss_percent, 0.0);
        assert_eq!(stats.width, None);
    }
}
