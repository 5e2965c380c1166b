//! This side's media: camera and microphone tracks, the preview, screen sharing and device
//! switching. Which track is sent and shown is the machine's decision; changing it never
//! renegotiates: the engine swaps tracks on the existing senders (`replaceTrack`).

use futures_util::future::{FutureExt, LocalBoxFuture, Shared};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{
    AnalyserNode, AudioContext, AudioContextState, MediaDeviceInfo, MediaDeviceKind, MediaStream,
    MediaStreamConstraints, MediaStreamTrack, MediaStreamTrackState, PermissionState, PermissionStatus,
};

use super::{js::describe, machine::Video, peer::Outgoing, stats::meter_level, Device, MediaChoice};

pub struct LocalMedia {
    /// What the local view shows: the microphone and the video sent.
    preview: MediaStream,
    pub audio: Option<MediaStreamTrack>,
    pub camera: Option<MediaStreamTrack>,
    pub screen: Option<MediaStreamTrack>,
}

impl LocalMedia {
    /// Nothing yet: the camera and microphone join `preview` once the browser grants them, so
    /// the call can join and negotiate meanwhile.
    pub fn new() -> Result<Self, JsValue> {
        let preview = MediaStream::new()?;
        Ok(Self { preview, audio: None, camera: None, screen: None })
    }

    /// The preview stream itself (as [`super::peer::Peer::remote_stream`]): the view follows
    /// what is sent, and no copy of the camera's track keeps the camera on after the call.
    pub fn preview(&self) -> MediaStream {
        Clone::clone(&self.preview)
    }

    /// Asks the browser for what `choice` names (`None` for nothing at all).
    pub async fn request(choice: MediaChoice) -> Result<Option<MediaStream>, JsValue> {
        if choice == MediaChoice::Nothing {
            return Ok(None);
        }
        user_media(true, choice == MediaChoice::CameraAndMicrophone, None).await.map(Some)
    }

    /// Takes the tracks the browser granted.
    pub fn adopt(&mut self, stream: Option<&MediaStream>) {
        if let Some(stream) = stream {
            self.audio = first_track(&stream.get_audio_tracks());
            self.camera = first_track(&stream.get_video_tracks());
        }
    }

    pub fn track(&self, video: Video) -> Option<&MediaStreamTrack> {
        match video {
            Video::None => None,
            Video::Camera => self.camera.as_ref(),
            Video::Screen => self.screen.as_ref(),
        }
    }

    /// What a new connection sends: the microphone if `audio`, and `video`.
    pub fn outgoing(&self, audio: bool, video: Video) -> Outgoing<'_> {
        Outgoing { audio: self.audio.as_ref().filter(|_| audio), video: self.track(video), stream: &self.preview }
    }

    /// Mute is the track sending silence: the sender keeps its track, nothing renegotiates.
    pub fn enable_audio(&self, on: bool) {
        if let Some(audio) = &self.audio {
            audio.set_enabled(on);
        }
    }

    /// Shows the microphone and `video` in the preview. Tracks already there stay: taking a
    /// track out and back makes the view start over.
    pub fn show(&self, video: Video) {
        let wanted: Vec<&MediaStreamTrack> = self.audio.iter().chain(self.track(video)).collect();
        for track in self.preview.get_tracks().iter() {
            let track: MediaStreamTrack = track.unchecked_into();
            if !wanted.contains(&&track) {
                self.preview.remove_track(&track);
            }
        }
        // The browser ignores a track the stream already has.
        for track in wanted {
            self.preview.add_track(track);
        }
    }

    pub fn start_screen(&mut self, track: MediaStreamTrack) {
        self.stop_screen();
        self.screen = Some(track);
    }

    pub fn stop_screen(&mut self) {
        if let Some(screen) = self.screen.take() {
            screen.stop();
        }
    }

    /// Opens `device` and makes it this side's camera or microphone.
    pub async fn use_device(&mut self, device: &Device) -> Result<(), JsValue> {
        let track = open_device(device).await?;
        self.replace(track, device.is_camera);
        Ok(())
    }

    /// Makes `track` this side's camera or microphone, and turns the one before off. Returns
    /// the one before.
    pub fn replace(&mut self, track: MediaStreamTrack, is_camera: bool) -> Option<MediaStreamTrack> {
        let slot = if is_camera { &mut self.camera } else { &mut self.audio };
        let old = slot.replace(track)?;
        old.stop();
        Some(old)
    }

    pub fn stop(&mut self) {
        self.stop_screen();
        for track in self.audio.take().into_iter().chain(self.camera.take()) {
            track.stop();
        }
    }
}

/// Opens `device` alone.
pub async fn open_device(device: &Device) -> Result<MediaStreamTrack, JsValue> {
    let stream = user_media(!device.is_camera, device.is_camera, Some(&device.id)).await?;
    let tracks = if device.is_camera { stream.get_video_tracks() } else { stream.get_audio_tracks() };
    first_track(&tracks).ok_or_else(|| "the device gave no track".into())
}

/// How loud a microphone is now, for the join screen's meter: Web Audio's analyser on its track.
pub struct Level {
    track: MediaStreamTrack,
    context: AudioContext,
    analyser: AnalyserNode,
    samples: Vec<f32>,
}

impl Level {
    pub fn of(track: &MediaStreamTrack) -> Result<Self, JsValue> {
        let context = AudioContext::new()?;
        let stream = MediaStream::new()?;
        stream.add_track(track);
        let analyser = context.create_analyser()?;
        // About 85 ms at 48 kHz: a meter read ten times a second misses no sound.
        analyser.set_fft_size(4096);
        context.create_media_stream_source(&stream)?.connect_with_audio_node(&analyser)?;
        Ok(Self { track: Clone::clone(track), context, analyser, samples: vec![0.0; 4096] })
    }

    /// Whether this reads `track`.
    pub fn hears(&self, track: &MediaStreamTrack) -> bool {
        self.track == *track
    }

    /// The level now, from 0 to 1; `None` while the browser does not run the audio (until the
    /// person has used the page, or at all without a sound device): no reading, not silence.
    pub fn read(&mut self) -> Option<f64> {
        match self.context.state() {
            AudioContextState::Running => {}
            AudioContextState::Suspended => {
                // Browsers hold audio back until the person has used the page: once they have,
                // this starts it.
                if let Ok(resumed) = self.context.resume() {
                    spawn_local(async move {
                        let _ = JsFuture::from(resumed).await;
                    });
                }
                return None;
            }
            _ => return None,
        }
        self.analyser.get_float_time_domain_data(&mut self.samples);
        Some(meter_level(&self.samples))
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        if let Ok(closed) = self.context.close() {
            spawn_local(async move {
                let _ = JsFuture::from(closed).await;
            });
        }
    }
}

/// The camera and microphone asked for when the page opens, because this site may already use
/// both (a remembered permission, so no prompt appears): the person sees themselves before
/// joining, as in a waiting room, and Start does not wait for the camera, the slowest step of
/// joining. Clones share the one request.
#[derive(Clone)]
pub struct EarlyMedia(Shared<LocalBoxFuture<'static, Result<MediaStream, JsValue>>>);

impl EarlyMedia {
    /// Whether the browser already lets this site use the camera and the microphone.
    pub async fn allowed() -> bool {
        permitted("camera").await && permitted("microphone").await
    }

    /// Turns the camera and microphone on, as Start would.
    pub fn request() -> Self {
        let request = user_media(true, true, None);
        Self(request.boxed_local().shared())
    }

    /// The stream for the call, if it was granted and every track still works: a camera
    /// unplugged, or a permission taken back, while the person waited ends its track.
    pub async fn live_stream(self) -> Option<MediaStream> {
        let stream = self.0.await.ok()?;
        let live = stream
            .get_tracks()
            .iter()
            .all(|track| track.unchecked_into::<MediaStreamTrack>().ready_state() == MediaStreamTrackState::Live);
        if !live {
            stop_all(&stream);
        }
        live.then_some(stream)
    }

    /// The stream to show, once granted (a refusal is only logged: Start asks again).
    pub async fn shown(self) -> Option<MediaStream> {
        self.0.await.map_err(|error| leptos::logging::warn!("no camera before Start: {}", describe(&error))).ok()
    }

    /// Turns the camera and microphone off once granted: this request will not be used.
    pub fn discard(self) {
        spawn_local(async move {
            if let Ok(stream) = self.0.await {
                stop_all(&stream);
            }
        });
    }
}

/// Whether the permission `name` is granted; `false` where a browser cannot say.
async fn permitted(name: &str) -> bool {
    let Some(permissions) = web_sys::window().and_then(|window| window.navigator().permissions().ok()) else {
        return false;
    };
    let Ok(query) = permissions.query(object(&[("name", name.into())]).unchecked_ref()) else {
        return false;
    };
    let status = JsFuture::from(query).await.ok().and_then(|status| status.dyn_into::<PermissionStatus>().ok());
    status.is_some_and(|status| status.state() == PermissionState::Granted)
}

/// Stops every track of `stream`, which turns the camera and microphone off.
pub fn stop_all(stream: &MediaStream) {
    for track in stream.get_tracks().iter() {
        track.unchecked_into::<MediaStreamTrack>().stop();
    }
}

fn first_track(tracks: &js_sys::Array) -> Option<MediaStreamTrack> {
    tracks.get(0).dyn_into().ok()
}

/// Asks at once (not when first awaited).
fn user_media(
    audio: bool,
    video: bool,
    device: Option<&str>,
) -> impl std::future::Future<Output = Result<MediaStream, JsValue>> + 'static {
    let request = user_media_promise(audio, video, device).map(JsFuture::from);
    async move { Ok(request?.await?.unchecked_into()) }
}

fn user_media_promise(audio: bool, video: bool, device: Option<&str>) -> Result<js_sys::Promise, JsValue> {
    let devices = web_sys::window().ok_or("no window")?.navigator().media_devices()?;
    let constraints = MediaStreamConstraints::new();
    let exact = |id: &str| object(&[("deviceId", object(&[("exact", id.into())]))]);
    let audio_constraint = match (audio, device) {
        (false, _) => JsValue::FALSE,
        (true, Some(id)) => exact(id),
        (true, None) => JsValue::TRUE,
    };
    let video_constraint = match (video, device) {
        (false, _) => JsValue::FALSE,
        (true, Some(id)) => exact(id),
        (true, None) => object(&[("width", ideal(1280)), ("height", ideal(720))]),
    };
    constraints.set_audio(&audio_constraint);
    constraints.set_video(&video_constraint);
    devices.get_user_media_with_constraints(&constraints)
}

/// A JavaScript object of these properties: constraints built directly, not through JSON.
fn object(properties: &[(&str, JsValue)]) -> JsValue {
    let object = js_sys::Object::new();
    for (name, value) in properties {
        let _ = js_sys::Reflect::set(&object, &(*name).into(), value);
    }
    object.into()
}

fn ideal(value: u32) -> JsValue {
    object(&[("ideal", value.into())])
}

/// Asks the browser for a screen, window or tab to share.
pub async fn screen_track() -> Result<MediaStreamTrack, JsValue> {
    let devices = web_sys::window().ok_or("no window")?.navigator().media_devices()?;
    let constraints = web_sys::DisplayMediaStreamConstraints::new();
    constraints.set_video(&object(&[("width", ideal(1920)), ("height", ideal(1080)), ("frameRate", ideal(15))]));
    let stream: MediaStream =
        JsFuture::from(devices.get_display_media_with_constraints(&constraints)?).await?.unchecked_into();
    first_track(&stream.get_video_tracks()).ok_or_else(|| "nothing to share".into())
}

/// The cameras and microphones; labels are known once the page has been allowed to use them.
pub async fn devices() -> Result<Vec<Device>, JsValue> {
    let media = web_sys::window().ok_or("no window")?.navigator().media_devices()?;
    let list: js_sys::Array = JsFuture::from(media.enumerate_devices()?).await?.unchecked_into();
    Ok(list
        .iter()
        .filter_map(|d| d.dyn_into::<MediaDeviceInfo>().ok())
        .filter_map(|d| {
            let is_camera = match d.kind() {
                MediaDeviceKind::Videoinput => true,
                MediaDeviceKind::Audioinput => false,
                _ => return None,
            };
            Some(Device { id: d.device_id(), label: d.label(), is_camera })
        })
        .collect())
}
