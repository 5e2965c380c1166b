//! The control bar at the bottom: the microphone and the camera (before Start too, where they
//! choose how the call starts), then in a call the screen, the chat, the people, the rest, and
//! Hang up; and the keyboard shortcuts.

use leptos::{ev, prelude::*, wasm_bindgen::JsCast};

use super::{link::Actions, CallState, Panel};
use crate::{
    app::icons::{markup, Icon},
    call::{CallCommand, CallStatus},
};

pub(super) fn bar(state: CallState, actions: Actions) -> impl IntoView {
    let local = state.local;
    let inactive = move || !state.active();
    // Nothing to mute, turn off or share instead until the camera and microphone are on; before
    // Start, while the camera shows, Mute and Camera off choose how the call starts.
    let unready = move || inactive() || state.status.with(|s| *s == CallStatus::StartingMedia);
    let untoggleable = move || unready() && !state.previewing.get();
    let muted = move || !local.get().audio;
    let camera_off = move || !local.get().video;
    view! {
        <div class="bar" role="group" aria-label="Call controls">
            <button class="control toggle" title="Mute the microphone (M)" aria-pressed=move || muted().to_string()
                on:click=move |_| actions.toggle_microphone(state) disabled=untoggleable
                inner_html=markup(&[Icon::Microphone, Icon::MicrophoneOff], Some("Mute"))></button>
            <button class="control toggle" title="Turn the camera off (V)"
                aria-pressed=move || camera_off().to_string()
                on:click=move |_| actions.toggle_camera(state) disabled=move || untoggleable() || local.get().screen
                inner_html=markup(&[Icon::Camera, Icon::CameraOff], Some("Camera off"))></button>
            // In the page from the start, shown in a call: cheaper in the wasm than adding them.
            <div class="in-call-only" hidden=inactive>
                <button class="control" title="Share your screen instead of the camera"
                    aria-pressed=move || local.get().screen.to_string()
                    on:click=move |_| actions.command(CallCommand::ShareScreen(!local.get_untracked().screen))
                    disabled=unready inner_html=markup(&[Icon::Screen], Some("Share screen"))></button>
                {panel_button(state, Panel::Chat)}
                {panel_button(state, Panel::People)}
                {panel_button(state, Panel::More)}
                <button class="control danger" title="Leave the call" on:click=move |_| actions.command(CallCommand::HangUp)
                    inner_html=markup(&[Icon::HangUp], Some("Hang up"))></button>
            </div>
        </div>
    }
}

/// Opens `panel`, or closes it when open; the chat's shows how many lines came while it was shut.
fn panel_button(state: CallState, panel: Panel) -> impl IntoView {
    let open = move || state.panel.get() == Some(panel);
    let unread = move || Some(state.unread()).filter(|n| *n > 0);
    view! {
        <button class="control" id=panel.button_id() title=panel.title()
            aria-expanded=move || open().to_string() aria-controls="panel"
            on:click=move |_| state.panel.update(|shown| *shown = if *shown == Some(panel) { None } else { Some(panel) })>
            <span class="face" inner_html=markup(&[panel.icon()], Some(panel.label()))></span>
            // Only the chat's has one; its words are there only while it counts something, so that
            // an empty badge adds nothing to the button's text.
            {(panel == Panel::Chat).then(|| view! {
                <span class="badge" hidden=move || unread().is_none()>
                    <span class="visually-hidden">" "</span>{unread}
                    <span class="visually-hidden">{move || unread().map(|_| " unread")}</span>
                </span>
            })}
        </button>
    }
}

/// M and V toggle the microphone and the camera anywhere on the page but in a text field or a
/// list; Escape closes the open panel.
pub(super) fn use_shortcuts(state: CallState, actions: Actions) {
    let keys = window_event_listener(ev::keydown, move |event| {
        if event.key() == "Escape" && state.panel.get_untracked().is_some() {
            state.panel.set(None);
            return;
        }
        let typing = event
            .target()
            .and_then(|target| target.dyn_into::<leptos::web_sys::Element>().ok())
            .is_some_and(|element| matches!(element.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
        if typing
            || event.ctrl_key()
            || event.meta_key()
            || event.alt_key()
            || !(state.previewing.get_untracked()
                || state.status.with_untracked(|s| s.is_active() && *s != CallStatus::StartingMedia))
        {
            return;
        }
        match event.key().as_str() {
            "m" | "M" => actions.toggle_microphone(state),
            "v" | "V" => actions.toggle_camera(state),
            _ => {}
        }
    });
    on_cleanup(move || keys.remove());
}

/// The shortcuts, as the More panel lists them.
pub(super) const SHORTCUTS: [(&str, &str); 3] =
    [("M", "Mute or unmute the microphone"), ("V", "Turn the camera off or on"), ("Escape", "Close the open panel")];
