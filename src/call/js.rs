//! Moving the protocol's serde types in and out of JavaScript objects, through JSON text:
//! the protocol types already define the exact shapes the browser APIs use.

use serde::{de::DeserializeOwned, Serialize};
use wasm_bindgen::{JsCast, JsValue};

pub fn to_js<T: Serialize, J: JsCast>(value: &T) -> J {
    let text = serde_json::to_string(value).expect("protocol types serialize");
    js_sys::JSON::parse(&text).expect("serde_json writes valid JSON").unchecked_into()
}

pub fn from_js<T: DeserializeOwned>(value: &JsValue) -> Result<T, JsValue> {
    let text: String = js_sys::JSON::stringify(value)?.into();
    serde_json::from_str(&text).map_err(|e| JsValue::from_str(&e.to_string()))
}

/// A string property of a JavaScript object (a DOMException's `name`, say), if it has one.
pub fn string_field(value: &JsValue, name: &str) -> Option<String> {
    js_sys::Reflect::get(value, &name.into()).ok().and_then(|v| v.as_string())
}

/// A readable reason from a DOMException or other thrown value.
pub fn describe(error: &JsValue) -> String {
    match (string_field(error, "name"), string_field(error, "message")) {
        (Some(name), Some(message)) if !message.is_empty() => format!("{name}: {message}"),
        (Some(name), _) => name,
        _ => error.as_string().unwrap_or_else(|| format!("{error:?}")),
    }
}

/// A `performance.mark("duo:{step}")`: where call setup spends its time shows in the browser's
/// performance tools, and `end2end/bench/call-setup.mjs` reads them.
pub fn mark(step: &str) {
    if let Some(performance) = web_sys::window().and_then(|window| window.performance()) {
        let _ = performance.mark(&format!("duo:{step}"));
    }
}
