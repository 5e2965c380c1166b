//! What the forwarding unit reads of a VP8 packet: whether it starts a keyframe, and that
//! keyframe's picture size. A receiver moves to another simulcast layer only at one of its
//! keyframes (the layers are separate streams: a delta frame of one means nothing after the
//! other), and the size tells which layer covers which tile.

/// The picture size a keyframe says (RFC 6386, 9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keyframe {
    pub width: u32,
    pub height: u32,
}

/// The keyframe `payload` (an RTP payload of VP8, RFC 7741) begins, if it begins one.
pub fn keyframe(payload: &[u8]) -> Option<Keyframe> {
    // The payload descriptor: X R N S R PID; a frame begins where S is set in partition 0.
    let first = *payload.first()?;
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return None;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        // I L T K RSV: a picture id of one or two bytes, TL0PICIDX, and TID/KEYIDX share a byte.
        let extension = *payload.get(1)?;
        at += 1;
        if extension & 0x80 != 0 {
            at += if *payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        at += usize::from(extension & 0x40 != 0) + usize::from(extension & 0x30 != 0);
    }
    // The frame: a 3-byte tag whose lowest bit is 0 in a keyframe, the start code, and 14 bits
    // each of width and height (the top two bits scale, which the size does not need).
    let frame = payload.get(at..at + 10)?;
    if frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some(Keyframe { width: width.into(), height: height.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyframe's first bytes for a 640×360 picture: tag, start code, sizes.
    const KEY_640_360: [u8; 10] = [0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];

    fn packet(descriptor: &[u8], frame: &[u8]) -> Vec<u8> {
        [descriptor, frame].concat()
    }

    #[test]
    fn a_keyframe_start_gives_its_size_whatever_the_descriptor_carries() {
        let size = Some(Keyframe { width: 640, height: 360 });
        // No extension.
        assert_eq!(keyframe(&packet(&[0x10], &KEY_640_360)), size);
        // As Chromium sends it: a 15-bit picture id, TL0PICIDX, TID.
        assert_eq!(keyframe(&packet(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x20], &KEY_640_360)), size);
        // A 7-bit picture id only.
        assert_eq!(keyframe(&packet(&[0x90, 0x80, 0x12], &KEY_640_360)), size);
        // The scaling bits are not part of the size.
        let mut scaled = KEY_640_360;
        scaled[7] |= 0x40;
        assert_eq!(keyframe(&packet(&[0x10], &scaled)), size);
    }

    #[test]
    fn delta_frames_later_packets_and_short_payloads_are_no_keyframe() {
        let mut delta = KEY_640_360;
        delta[0] |= 0x01;
        assert_eq!(keyframe(&packet(&[0x10], &delta)), None);
        // Not the frame's first packet (S clear), or another partition's.
        assert_eq!(keyframe(&packet(&[0x00], &KEY_640_360)), None);
        assert_eq!(keyframe(&packet(&[0x11], &KEY_640_360)), None);
        // Cut short anywhere.
        let whole = packet(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x20], &KEY_640_360);
        for len in 0..whole.len() {
            assert_eq!(keyframe(&whole[..len]), None, "{len} bytes");
        }
        // No start code.
        let mut garbage = KEY_640_360;
        garbage[4] = 0;
        assert_eq!(keyframe(&packet(&[0x10], &garbage)), None);
    }
}
