//! The control bar's icons, drawn inline: no icon font or image to fetch, and they take the
//! text colour, so both themes and every button state colour them.

use leptos::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Icon {
    Microphone,
    MicrophoneOff,
    Camera,
    CameraOff,
    Screen,
    Chat,
    People,
    More,
    HangUp,
    Close,
    FullScreen,
    PictureInPicture,
}

macro_rules! microphone {
    () => {
        r#"<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3"/>"#
    };
}
macro_rules! camera {
    () => {
        r#"<rect x="2.5" y="6" width="13" height="12" rx="2"/><path d="M15.5 10.5l6-3.5v10l-6-3.5z"/>"#
    };
}
/// Struck through: off.
macro_rules! slash {
    () => {
        r#"<path d="M3 3l18 18"/>"#
    };
}

impl Icon {
    /// The drawing, on a 24×24 grid, in strokes of the current colour: fixed text, never
    /// anything a person typed.
    fn shapes(self) -> &'static str {
        match self {
            Icon::Microphone => microphone!(),
            Icon::MicrophoneOff => concat!(microphone!(), slash!()),
            Icon::Camera => camera!(),
            Icon::CameraOff => concat!(camera!(), slash!()),
            Icon::Screen => {
                r#"<rect x="2.5" y="4" width="19" height="13" rx="2"/><path d="M8 21h8M12 17v4M12 14V8M9 11l3-3 3 3"/>"#
            }
            Icon::Chat => r#"<path d="M4 5h16v11H10l-6 4z"/>"#,
            Icon::People => concat!(
                r#"<circle cx="9" cy="8" r="3.5"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0"/>"#,
                r#"<circle cx="17" cy="9" r="2.5"/><path d="M17 14.5a4.5 4.5 0 0 1 4.5 5.5"/>"#
            ),
            Icon::More => {
                r#"<circle cx="5" cy="12" r="1.2"/><circle cx="12" cy="12" r="1.2"/><circle cx="19" cy="12" r="1.2"/>"#
            }
            Icon::HangUp => r#"<path d="M2.5 14.5c5.5-5 13.5-5 19 0l-2.5 3-3.5-1.5v-3c-2.5-.8-4.5-.8-7 0v3L5 17.5z"/>"#,
            Icon::Close => r#"<path d="M6 6l12 12M18 6L6 18"/>"#,
            Icon::FullScreen => r#"<path d="M4 9V4h5M20 9V4h-5M4 15v5h5M20 15v5h-5"/>"#,
            Icon::PictureInPicture => {
                r#"<rect x="2.5" y="5" width="19" height="14" rx="2"/><rect x="12" y="12" width="6" height="4"/>"#
            }
        }
    }
}

/// `icon`, hidden from screen readers: the button around it carries the name. Drawn once, with
/// nothing reactive in it (a control whose icon changes has both, and the stylesheet shows one).
pub(crate) fn icon(icon: Icon) -> impl IntoView {
    view! { <span class="icons" inner_html=markup(&[icon], None)></span> }
}

/// The markup of `icons`, then of a visible `label`: the whole content of a control that
/// changes nothing in it, as one string rather than elements (smaller in the wasm).
pub(crate) fn markup(icons: &[Icon], label: Option<&str>) -> String {
    let mut html = String::new();
    for icon in icons {
        html.push_str(r#"<svg class="icon" viewBox="0 0 24 24" aria-hidden="true" focusable="false" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">"#);
        html.push_str(icon.shapes());
        html.push_str("</svg>");
    }
    if let Some(label) = label {
        html.push_str(r#"<span class="label">"#);
        html.push_str(label);
        html.push_str("</span>");
    }
    html
}
