//! The `patchbay` command line: `serve`, `sim` and `demo`. The work lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use patchbay::config::{LogFormat, Settings};
use patchbay::{app, sim, telemetry};

#[derive(Parser)]
#[command(
    name = "patchbay",
    version,
    about = "Set Genesys Cloud participant attributes on live conversations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// A TOML file layered over config/default.toml (environment variables still win).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the Genesys Cloud simulator on its own.
    Sim {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
    },
    /// Run the simulator and the gateway in one process and send a few sample events.
    Demo,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { config } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("patchbay: {e}");
                    std::process::exit(2);
                }
            };
            telemetry::init(settings.log.format, "info");
            let listener = tokio::net::TcpListener::bind(settings.server.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} (server.listen)",
                        settings.server.listen
                    )
                })?;
            tracing::info!(
                listen = %listener.local_addr()?,
                api = %settings.genesys.api_base(),
                "patchbay is serving"
            );
            let state = app::AppState::new(settings)?;
            app::serve(listener, app::router(state), app::shutdown_signal()).await?;
        }
        Command::Sim { listen } => {
            telemetry::init(LogFormat::Pretty, "info");
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let simulator = sim::Simulator::new();
            println!(
                "Genesys Cloud simulator on http://{}",
                listener.local_addr()?
            );
            println!(
                "  client id {}, secret {}",
                sim::DEFAULT_CLIENT_ID,
                sim::DEFAULT_CLIENT_SECRET
            );
            println!(
                "  live conversation {} (customer {})",
                sim::SEED_ACTIVE_CALL,
                sim::SEED_ACTIVE_CALL_CUSTOMER
            );
            axum::serve(listener, simulator.router())
                .with_graceful_shutdown(app::shutdown_signal())
                .await?;
        }
        Command::Demo => {
            telemetry::init(LogFormat::Pretty, "warn");
            let ok = patchbay::demo::run(&mut std::io::stdout()).await?;
            if !ok {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
