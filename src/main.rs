//! The server binary: parses flags, sets up logging, and serves the app (see `duo --help`).

#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    use clap::Parser;
    use duo::server::{self, Config};
    use leptos::config::get_configuration;
    use tracing_subscriber::EnvFilter;

    let config = Config::parse().checked().unwrap_or_else(|error| error.exit());
    let filter = match EnvFilter::try_new(&config.log_level) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("error: bad --log-level {:?}: {error}", config.log_level);
            return std::process::ExitCode::from(2);
        }
    };
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).init();

    // cargo-leptos passes where the built site is through LEPTOS_* variables.
    let mut leptos_options = match get_configuration(None) {
        Ok(conf) => conf.leptos_options,
        Err(error) => {
            tracing::error!("bad LEPTOS_* settings: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    leptos_options.site_addr = config.addr;
    server::use_hashed_names(&mut leptos_options);
    let metrics = match server::install_metrics() {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!("cannot set up metrics: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match server::serve(config, leptos_options, metrics).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("server failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "ssr"))]
fn main() {
    // The browser build has no binary; its entry point is `duo::hydrate`.
}
