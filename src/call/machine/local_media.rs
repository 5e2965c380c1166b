//! This side's media: the camera, microphone and screen as decisions need them; turning them
//! on and off, sharing the screen, and telling the others.

use super::{CallMachine, Effect, Video};
use crate::protocol::{MediaState, PeerMessage};

/// This side's camera, microphone and screen, as far as decisions need them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Media {
    /// Until the browser grants (or refuses) the camera and microphone.
    pub(super) starting: bool,
    pub(super) audio: bool,
    pub(super) camera: bool,
    pub(super) screen: bool,
    pub(super) audio_on: bool,
    pub(super) camera_on: bool,
}

impl Media {
    /// The video to send: the shared screen, else the camera unless it is off.
    pub(super) fn video(&self) -> Video {
        if self.screen {
            Video::Screen
        } else if self.camera && self.camera_on {
            Video::Camera
        } else {
            Video::None
        }
    }

    pub(super) fn state(&self) -> MediaState {
        MediaState { audio: self.audio && self.audio_on, video: self.video() != Video::None, screen: self.screen }
    }
}

/// What the page says when the camera or microphone is refused, from the error's `name`.
pub(super) fn explain_media_error(name: Option<&str>, description: &str) -> String {
    match name {
        Some("NotAllowedError") => "permission was denied".into(),
        Some("NotFoundError") => "no camera or microphone was found".into(),
        Some("NotReadableError") => "the device is in use by another program".into(),
        _ => description.into(),
    }
}

/// What to tell a person whose screen could not be shared, from the error's `name`; nothing
/// when they cancelled the browser's picker or said no (`NotAllowedError`).
pub(super) fn screen_share_failure(error_name: Option<&str>) -> Option<String> {
    let why = match error_name {
        Some("NotAllowedError") => return None,
        Some("NotFoundError") => "the browser found no screen or window to share",
        Some("NotReadableError") => "the system would not let the browser capture the screen",
        // Mobile browsers have no `getDisplayMedia`: calling it throws a TypeError.
        _ => "this browser cannot share a screen",
    };
    Some(format!("Screen sharing did not start: {why}. The call goes on with your camera."))
}

impl CallMachine {
    pub(super) fn turn_microphone(&mut self, on: bool) {
        if self.media.audio {
            self.media.audio_on = on;
            self.push(Effect::EnableAudio(on));
        }
        self.announce_media();
    }

    pub(super) fn turn_camera(&mut self, on: bool) {
        if self.media.camera {
            self.media.camera_on = on;
            self.push(Effect::ShowVideo(self.media.video()));
        }
        self.send_current_video();
    }

    /// The camera and microphone are granted: they go on the senders of connections that may
    /// already be under way.
    pub(super) fn media_started(&mut self, audio: bool, camera: bool) {
        self.push(Effect::Mark("media"));
        let (microphone_on, camera_on) = self.start_on;
        self.media = Media {
            starting: false,
            audio,
            camera,
            screen: false,
            audio_on: audio && microphone_on,
            camera_on: camera && camera_on,
        };
        if audio && !microphone_on {
            self.push(Effect::EnableAudio(false));
        }
        self.push(Effect::ShowVideo(self.media.video()));
        self.push(Effect::LocalStream(true));
        self.push(Effect::ListDevices);
        let video = self.media.video();
        for peer in self.generations() {
            self.push(Effect::StartSending { peer, audio, video });
        }
        self.announce_media();
    }

    pub(super) fn stop_screen(&mut self) {
        self.push(Effect::StopScreen);
        self.media.screen = false;
        self.push(Effect::ShowVideo(self.media.video()));
        self.send_current_video();
    }

    /// Puts the video that should be sent now on every sender, and tells both the page and the
    /// others.
    pub(super) fn send_current_video(&mut self) {
        let video = self.media.video();
        for peer in self.generations() {
            self.push(Effect::SendVideo { peer, video });
        }
        self.announce_media();
    }

    pub(super) fn announce_media(&mut self) {
        let state = self.media.state();
        self.push(Effect::LocalMedia(state));
        // A channel not open yet announces the state when it opens.
        for peer in self.open_channels() {
            self.push(Effect::ToPeer { peer, message: PeerMessage::MediaState(state) });
        }
    }
}
