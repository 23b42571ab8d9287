//! The `patchbay` command line: `serve`, `sim` and `demo`. The work lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use patchbay::config::{LogFormat, Settings};
use patchbay::{app, sim, telemetry, Application};

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

/// What `serve --help` adds: where settings come from, and the keys a real org needs.
const SERVE_HELP: &str = "\
Settings, each layer over the one before:
  1. config/default.toml, compiled in: every key, commented
  2. the file given with --config
  3. environment variables PATCHBAY__<SECTION>__<KEY>, e.g.
       PATCHBAY__GENESYS__CLIENT_SECRET sets genesys.client_secret
       PATCHBAY__GENESYS__RETRY__MAX_ATTEMPTS sets genesys.retry.max_attempts
     lists are comma-separated: PATCHBAY__AUTH__API_KEYS=key1,key2

Required:
  genesys.client_id, genesys.client_secret   an OAuth client with the client-credentials grant
  genesys.region                             e.g. mypurecloud.ie (default mypurecloud.com)
  auth.api_keys                              the callers' keys, or auth.allow_anonymous = true

Every problem is reported at once, naming its key or variable; the exit status is then 2.
RUST_LOG filters the logs (default info).";

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    #[command(after_long_help = SERVE_HELP, after_help = SERVE_HELP)]
    Serve {
        /// A TOML file layered over config/default.toml (environment variables still win).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the Genesys Cloud simulator on its own.
    Sim {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
        /// Also hold this many live calls, each with a customer and an agent, with numbered ids
        /// (call 00000000-0000-4000-8000-<i>, customer and agent 00000000-0000-4000-9000-<2i>
        /// and <2i+1>); the banner lists them.
        #[arg(long, default_value_t = 0)]
        calls: usize,
        /// Latency added before every answer, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// API calls each token may make in a minute, as Genesys enforces it (429 beyond); 0 for none.
        #[arg(long, default_value_t = 0)]
        rate_limit: u32,
        /// How long a new conversation takes to show in the analytics details query, in milliseconds.
        #[arg(long, default_value_t = 0)]
        analytics_lag_ms: u64,
        /// Details queries each token may make in a minute, a limit of the query's own on top of
        /// `--rate-limit` (429 beyond); 0 for none.
        #[arg(long, default_value_t = 0)]
        analytics_rate_limit: u32,
    },
    /// Run the simulator and the gateway in one process and send a few sample events.
    Demo,
    /// Check a configuration against the org it names: the region and client, each capability the
    /// configuration uses (one harmless call each), the token's standing, and the routes and keys.
    /// Exits 1 when something the configuration uses will not work.
    Doctor {
        /// The same configuration file the gateway uses.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Queue dead jobs again (works beside a running gateway: it shares the store).
    Replay {
        /// The same configuration file the gateway uses.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Replay every dead job.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        all: bool,
        /// Replay one dead job.
        #[arg(long)]
        id: Option<String>,
    },
}

/// The exit status of every failure to start (a bad setting or route, a store that does not
/// open, a port that cannot be bound): one, whatever the cause, with one message style.
const CANNOT_START: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(e) => {
            // `{:#}`: the cause chain on one line, as every start-up failure is shown.
            eprintln!("patchbay: {e:#}");
            ExitCode::from(CANNOT_START)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            let traces = telemetry::init_with(settings.log.format, "info", &settings.telemetry)?;
            let flush = std::time::Duration::from_millis(settings.server.shutdown_timeout_ms) / 5;
            // Stores open first, then both listeners bind: a process that cannot do either must
            // not say it serves.
            let application = Application::build(settings).await?;
            let state = application.state();
            if state.admin_keys.is_unset() {
                tracing::warn!(
                    "no admin key is configured: the dead-letter endpoints answer 401 until auth.admin_keys is set, and /console is not served"
                );
            }
            let console = patchbay::console::enabled(state).then(|| {
                patchbay::console::url(application.admin_address().unwrap_or(application.address()))
            });
            // Its own target, so a log filtered to warnings can still say where it serves.
            tracing::info!(
                target: "patchbay::serving",
                listen = %application.address(),
                admin = application.admin_address().map(|a| a.to_string()).unwrap_or_default(),
                console = console.unwrap_or_default(),
                api = %state.settings.genesys.api_base(),
                "patchbay is serving"
            );
            application.run_until(app::shutdown_signal()).await?;
            // Spans still queued go out now, in a bounded time: a collector that is away costs
            // the exit a fifth of the shutdown budget at most.
            let _ = tokio::task::spawn_blocking(move || traces.shutdown(flush)).await;
            tracing::info!("stopped");
        }
        Command::Sim {
            listen,
            calls,
            latency_ms,
            rate_limit,
            analytics_lag_ms,
            analytics_rate_limit,
        } => {
            telemetry::init(LogFormat::Pretty, "info");
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let simulator = sim::Simulator::new();
            let control = simulator.control();
            control.add_live_calls(calls);
            control.set_latency(std::time::Duration::from_millis(latency_ms));
            control.set_rate_limit((rate_limit > 0).then_some(rate_limit));
            control.set_analytics_lag(std::time::Duration::from_millis(analytics_lag_ms));
            control.set_analytics_rate_limit(
                (analytics_rate_limit > 0).then_some(analytics_rate_limit),
            );
            // A live call to find by its caller's number, whatever the date.
            control.add_caller_call();
            println!(
                "Genesys Cloud simulator on http://{}",
                listener.local_addr()?
            );
            println!(
                "  client id {}, secret {}",
                sim::DEFAULT_CLIENT_ID,
                sim::DEFAULT_CLIENT_SECRET
            );
            println!("Conversations it holds (ids, then each participant's purpose and id):");
            print!("{}", simulator.describe());
            axum::serve(sim::without_nagle(listener), simulator.router())
                .with_graceful_shutdown(app::shutdown_signal())
                .await?;
        }
        Command::Replay { config, all, id } => {
            // Only the store's settings: replaying needs neither Genesys nor an inbound key.
            let settings = Settings::load_for_store(config.as_deref())?;
            telemetry::init(settings.log.format, "warn");
            let queue = patchbay::startup::open_queue(&settings, None)?;
            if all {
                let n = queue.replay_all().await?;
                println!("{n} dead job(s) queued again");
            } else if let Some(id) = id {
                if queue.replay(&id).await? {
                    println!("job {id} queued again");
                } else {
                    eprintln!("patchbay: job {id} is not dead (or does not exist)");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Doctor { config } => {
            telemetry::init(LogFormat::Pretty, "error");
            let settings = Settings::load(config.as_deref())?;
            if !patchbay::doctor::run(&settings, &mut std::io::stdout()).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Demo => {
            telemetry::init(LogFormat::Pretty, "warn");
            let ok = patchbay::demo::run(&mut std::io::stdout()).await?;
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
