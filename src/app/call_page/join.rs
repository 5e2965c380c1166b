//! Beside the preview before Start: who is already in the call, this side's name, where the
//! call stands, the camera to allow, and Start (or, without a camera, the other ways in). In a
//! call only the status line and the notices stay, over the stage.

use leptos::prelude::*;

use super::{
    link::Actions,
    panels::{device_picker, name_field},
    CallState,
};
use crate::{
    app::use_hydrated,
    call::{CallStatus, MediaChoice},
};

pub(super) fn side(state: CallState, actions: Actions) -> impl IntoView {
    let hydrated = use_hydrated();
    let unavailable = Memo::new(move |_| state.status.with(|s| matches!(s, CallStatus::MediaUnavailable(_))));
    // In a call, the join screen's parts are hidden rather than taken out: cheaper in the wasm.
    // (The name field is taken out: in a call it is in the More panel.)
    let in_call = move || state.active();
    view! {
        <div class="side">
            <div class="join-only" hidden=in_call>
                <h2>"Ready to join?"</h2>
                <p class="present">{move || state.present.get().map(|names| who_is_here(&names))}</p>
            </div>
            {move || (!in_call()).then(|| name_field(state, actions))}
            {device_picker(state, actions, false)}
            // In whole percent: a float attribute would bring its own formatting code into the wasm.
            <meter class="level" aria-label="Microphone level" min="0" max="100"
                value=move || state.level.get().map_or(0, |level| (level * 100.0).round() as u8)
                hidden=move || state.level.get().is_none()></meter>
            <p class="status" role="status">{move || state.status.with(CallStatus::text)}</p>
            <p class="notice" aria-live="polite">{move || state.notice.get()}</p>
            <p class="notice" aria-live="polite">
                {move || state.slow.get().then_some("Your connection is slow: showing smaller video.")}
            </p>
            <div class="join-only" hidden=move || in_call() || !state.camera_ask.get()>
                <p class="ask">"To see yourself before you join, allow this page to use your camera and microphone. \
                    Your browser asks you once; no one sees or hears you until you press Start."</p>
                <button on:click=move |_| actions.ask_for_camera()>"Allow camera and microphone"</button>
            </div>
            <div class="join-buttons" hidden=in_call>
                <button class="primary" on:click=move |_| actions.start(MediaChoice::CameraAndMicrophone)
                    disabled=move || !hydrated.get() || state.blocked()>"Start"</button>
                <span class="join-only" hidden=move || !unavailable.get()>
                    <button on:click=move |_| actions.start(MediaChoice::MicrophoneOnly)>"Join with audio only"</button>
                    <button on:click=move |_| actions.start(MediaChoice::Nothing)>"Watch and listen only"</button>
                </span>
            </div>
        </div>
    }
}

/// Who the join screen says is in the call: the names given, and a count of those without one.
fn who_is_here(present: &[Option<String>]) -> String {
    let mut named: Vec<&str> = present.iter().flatten().map(String::as_str).collect();
    let unnamed = present.len() - named.len();
    let others = match unnamed {
        0 => None,
        1 if named.is_empty() => Some("One person".to_owned()),
        1 => Some("one other person".to_owned()),
        n if named.is_empty() => Some(format!("{n} people")),
        n => Some(format!("{n} other people")),
    };
    let last = match others.as_deref() {
        Some(others) => others,
        None => match named.pop() {
            Some(last) => last,
            None => return "No one else is here yet.".into(),
        },
    };
    let verb = if present.len() == 1 { "is" } else { "are" };
    match named.as_slice() {
        [] => format!("{last} {verb} in this call."),
        names => format!("{} and {last} {verb} in this call.", names.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::who_is_here;

    #[test]
    fn the_join_screen_names_who_is_there_and_counts_the_unnamed() {
        let names = |list: &[Option<&str>]| list.iter().map(|name| name.map(str::to_owned)).collect::<Vec<_>>();
        for (present, said) in [
            (names(&[]), "No one else is here yet."),
            (names(&[Some("Ada")]), "Ada is in this call."),
            (names(&[Some("Ada"), Some("Bob")]), "Ada and Bob are in this call."),
            (names(&[Some("Ada"), Some("Bob"), Some("Cy")]), "Ada, Bob and Cy are in this call."),
            (names(&[None]), "One person is in this call."),
            (names(&[None, None]), "2 people are in this call."),
            (names(&[Some("Ada"), None]), "Ada and one other person are in this call."),
            (names(&[None, Some("Ada"), None]), "Ada and 2 other people are in this call."),
        ] {
            assert_eq!(who_is_here(&present), said, "{present:?}");
        }
    }
}
