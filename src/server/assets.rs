//! The front end's files under `/pkg`: the wasm, the JavaScript that loads it and the CSS.
//!
//! A release build (`cargo leptos build --release --precompress`, see the Makefile) names each
//! file by a hash of its content (`duo.<hash>.wasm`) and writes a brotli and a gzip copy beside
//! it. They are served compressed as the browser accepts, and cached for a year: a new release
//! has new names, so no browser ever mixes one release's page with another's code. The pages
//! themselves are never cached (see [`crate::server::headers::for_page`]).

use std::{
    io,
    path::{Path, PathBuf},
    time::Instant,
};

use axum::{
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use leptos::config::LeptosOptions;
use tower_http::{services::ServeDir, set_header::SetResponseHeaderLayer};

use crate::server::limits::LogThrottle;

/// Where cargo-leptos writes the hashed names (Cargo.toml's `hash-file-name` points it into the
/// site folder, so that a deployment is still the binary and the site folder).
const HASH_FILE: &str = "hash.txt";

/// Uses the site's hashed file names when the build made them. Leptos looks for the hash file
/// beside the executable; an absolute path points it at the site folder instead.
pub fn use_hashed_names(options: &mut LeptosOptions) {
    let hash_file = Path::new(options.site_root.as_ref()).join(HASH_FILE);
    options.hash_files = hash_file.is_file();
    if let Ok(absolute) = std::path::absolute(&hash_file) {
        options.hash_file = absolute.to_string_lossy().as_ref().into();
    }
}

/// `Cache-Control` of a successful `/pkg` response.
pub(crate) fn cache_control(hashed_names: bool) -> &'static str {
    if hashed_names {
        "public, max-age=31536000, immutable"
    } else {
        // Unhashed names (a development build) keep their name across builds: ask each time.
        "no-cache"
    }
}

/// Serves `site_root/pkg_dir`: precompressed copies chosen by `Accept-Encoding`, the right
/// `Content-Type` (`application/wasm` lets the browser compile while it downloads).
pub(crate) fn service(options: &LeptosOptions) -> Router {
    let files = Files::new(Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref()));
    let cache = HeaderValue::from_static(cache_control(options.hash_files));
    Router::new()
        .fallback(move |request: Request| files.clone().serve(request))
        // Only what exists is cached: a 404 during a deploy must not stick for a year.
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, move |response: &Response| {
            response.status().is_success().then(|| cache.clone())
        }))
        // The same URL has several encodings: caches must key on Accept-Encoding.
        .layer(SetResponseHeaderLayer::appending(header::VARY, HeaderValue::from_static("accept-encoding")))
}

/// The files of a folder, as `ServeDir` serves them (precompressed copies chosen by
/// `Accept-Encoding`), except for what a request's name makes the file system refuse.
#[derive(Clone)]
pub(crate) struct Files(ServeDir);

/// Errors reading a file that exists, logged a few a second at most: any client can ask for it
/// again.
static READ_ERROR_LOG: LogThrottle = LogThrottle::new();

impl Files {
    pub(crate) fn new(dir: PathBuf) -> Self {
        // No index pages: a folder's name is not found, rather than a redirect to `name/`.
        Self(ServeDir::new(dir).precompressed_br().precompressed_gzip().append_index_html_on_directories(false))
    }

    /// The file `request` names. `ServeDir` answers every file-system error but "not found" and
    /// "permission denied" with a 500 and an ERROR line, so a name longer than the file system
    /// takes (ENAMETOOLONG), or one with a NUL byte in a `HEAD` request, would be a server
    /// error; such a name is no file's, so it is not found.
    pub(crate) async fn serve(mut self, request: Request) -> Response {
        match self.0.try_call(request).await {
            Ok(response) => response.into_response(),
            Err(error) if matches!(error.kind(), io::ErrorKind::InvalidFilename | io::ErrorKind::InvalidInput) => {
                StatusCode::NOT_FOUND.into_response()
            }
            Err(error) => {
                if let Some(left_out) = READ_ERROR_LOG.allow(Instant::now()) {
                    tracing::error!(similar_left_out = left_out, "cannot read a file to serve: {error}");
                }
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hashed_names_are_cached_for_good() {
        assert!(cache_control(true).contains("immutable") && cache_control(true).contains("max-age=31536000"));
        assert_eq!(cache_control(false), "no-cache");
    }

    #[test]
    fn a_site_with_a_hash_file_is_served_by_its_hashed_names() {
        let site = std::env::temp_dir().join(format!("duo-assets-{}", std::process::id()));
        std::fs::create_dir_all(&site).unwrap();
        let mut options =
            LeptosOptions::builder().output_name("duo").site_root(site.to_string_lossy().as_ref()).build();
        use_hashed_names(&mut options);
        assert!(!options.hash_files);
        std::fs::write(site.join(HASH_FILE), "js: abc\nwasm: def\ncss: ghi\n").unwrap();
        use_hashed_names(&mut options);
        assert!(options.hash_files);
        assert!(Path::new(options.hash_file.as_ref()).is_absolute());
        std::fs::remove_dir_all(&site).unwrap();
    }
}
