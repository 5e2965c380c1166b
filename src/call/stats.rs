//! The statistics panel's arithmetic: one reading from a `getStats()` report list and the
//! byte counts of the reading before. Pure, so it is tested without a browser.

use serde_json::Value;

use super::CallStats;

/// Bytes received and sent, and when (milliseconds), at one reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    bytes_in: f64,
    bytes_out: f64,
    at_ms: f64,
}

/// One statistics-panel reading from `getStats()`'s reports (as JSON), taken at `now_ms`;
/// rates are over the time since `before`. Returns the reading and its traffic, for the next.
pub fn summarize(reports: &[Value], before: Option<Traffic>, now_ms: f64) -> (CallStats, Traffic) {
    let by_id = |id: &Value| reports.iter().find(|r| r["id"] == *id);
    let number = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut stats = CallStats::default();
    let (mut bytes_in, mut bytes_out, mut lost, mut received) = (0.0, 0.0, 0.0, 0.0);
    for report in reports {
        match report["type"].as_str() {
            Some("inbound-rtp") => {
                bytes_in += number(&report["bytesReceived"]);
                lost += number(&report["packetsLost"]).max(0.0);
                received += number(&report["packetsReceived"]);
                if report["kind"] == "video" {
                    stats.width = report["frameWidth"].as_u64().map(|w| w as u32);
                    stats.height = report["frameHeight"].as_u64().map(|h| h as u32);
                    stats.frames_per_second = report["framesPerSecond"].as_f64();
                }
            }
            Some("outbound-rtp") => bytes_out += number(&report["bytesSent"]),
            _ => {}
        }
    }
    // Chromium names the pair in use on its `transport` report; Firefox has no such report
    // and marks the pair itself `selected`.
    let selected = reports
        .iter()
        .find(|r| r["type"] == "transport" && !r["selectedCandidatePairId"].is_null())
        .and_then(|transport| by_id(&transport["selectedCandidatePairId"]))
        .or_else(|| reports.iter().find(|r| r["type"] == "candidate-pair" && r["selected"] == true));
    if let Some(pair) = selected {
        stats.round_trip_ms = pair["currentRoundTripTime"].as_f64().map(|s| s * 1000.0);
        stats.relayed = by_id(&pair["localCandidateId"]).map(|local| {
            local["candidateType"] == "relay"
                || by_id(&pair["remoteCandidateId"]).is_some_and(|r| r["candidateType"] == "relay")
        });
    }
    if lost + received > 0.0 {
        stats.packet_loss_percent = 100.0 * lost / (lost + received);
    }
    if let Some(before) = before {
        let seconds = ((now_ms - before.at_ms) / 1000.0).max(0.001);
        stats.kbps_in = (bytes_in - before.bytes_in).max(0.0) * 8.0 / 1000.0 / seconds;
        stats.kbps_out = (bytes_out - before.bytes_out).max(0.0) * 8.0 / 1000.0 / seconds;
    }
    (stats, Traffic { bytes_in, bytes_out, at_ms: now_ms })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reports(bytes_in: u64, bytes_out: u64, lost: i64, received: u64) -> Vec<Value> {
        vec![
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
            json!({"id": "R", "type": "remote-candidate", "candidateType": "relay"}),
        ]
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
    fn firefox_marks_the_pair_in_use_itself() {
        let reports = vec![
            json!({"id": "P1", "type": "candidate-pair", "localCandidateId": "L", "remoteCandidateId": "R",
                   "currentRoundTripTime": 0.5}),
            json!({"id": "P2", "type": "candidate-pair", "selected": true, "localCandidateId": "L",
                   "remoteCandidateId": "R", "currentRoundTripTime": 0.010}),
            json!({"id": "L", "type": "local-candidate", "candidateType": "srflx"}),
            json!({"id": "R", "type": "remote-candidate", "candidateType": "host"}),
        ];
        let (stats, _) = summarize(&reports, None, 0.0);
        assert_eq!(stats.round_trip_ms, Some(10.0));
        assert_eq!(stats.relayed, Some(false));
        assert_eq!(stats.packet_loss_percent, 0.0);
        assert_eq!(stats.width, None);
    }
}
