//! Logging set-up: `tracing` with `RUST_LOG` filtering, pretty for people or JSON for containers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Targets held at `info` whatever `RUST_LOG` says: the WebSocket library traces its handshake's
/// request line, which carries a notification channel's id, a secret that opens its socket.
const QUIET: &[&str] = &["tungstenite=info", "tokio_tungstenite=info"];

/// Installs the global subscriber. `RUST_LOG` wins over `default_filter`, but not over [`QUIET`].
pub fn init(format: LogFormat, default_filter: &str) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    for directive in QUIET {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    // Colours only for a person at a terminal who has not asked for none (https://no-color.org): a
    // file, a pipe or a container's log gets plain text.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr);
    let _ = match format {
        // The current span only: requests and jobs are never nested, and a list of every span in
        // scope would repeat its fields.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
