//! The signaling WebSocket: decodes the server's messages into engine events and sends ours.

use futures_channel::mpsc::UnboundedSender;
use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use super::engine::Event;
use crate::{protocol::Message, room::RoomId};

pub struct Socket {
    ws: WebSocket,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    /// Opens `/ws/{room}` on the page's own host.
    pub fn open(room: &RoomId, events: UnboundedSender<Event>) -> Result<Self, JsValue> {
        let location = web_sys::window().ok_or("no window")?.location();
        let scheme = if location.protocol()? == "https:" { "wss" } else { "ws" };
        let ws = WebSocket::new(&format!("{scheme}://{}/ws/{room}", location.host()?))?;
        let on_message = {
            let events = events.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let Some(text) = event.data().as_string() else { return };
                match serde_json::from_str::<Message>(&text) {
                    Ok(message) => {
                        let _ = events.unbounded_send(Event::Server(message));
                    }
                    // A newer server may send types this client does not know yet.
                    Err(error) => leptos::logging::warn!("ignoring signaling message {text}: {error}"),
                }
            })
        };
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            let _ = events.unbounded_send(Event::SocketClosed { code: event.code() });
        });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Self { ws, _on_message: on_message, _on_close: on_close })
    }

    pub fn send(&self, message: &Message) {
        if let Err(error) = self.ws.send_with_str(&message.to_json()) {
            leptos::logging::warn!("could not send {message:?}: {error:?}");
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code(1000);
    }
}
