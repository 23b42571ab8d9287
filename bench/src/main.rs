//! `patchbay-bench`: the benchmark. The work lives in `harness`; the product is the `patchbay` crate,
//! whose binary it runs as the simulator and the gateway.

mod harness;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "patchbay-bench",
    about = "Measure Patchbay against the floor set by its own upstream calls"
)]
struct Cli {
    /// Every scenario in under a minute (CI smoke); the full run takes a few minutes.
    #[arg(long)]
    quick: bool,
    /// Seconds per closed-loop and open-loop scenario.
    #[arg(long)]
    duration: Option<u64>,
    /// Concurrent clients in the closed loop and the burst.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per second in the open loop.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Latency the simulator adds in the open loop, in ms.
    #[arg(long, default_value_t = 20)]
    upstream_latency_ms: u64,
    /// `delivery.linger_ms` of the gateway in the contact-center scenarios (default: its default).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Only the contact-center scenarios (e) and (f).
    #[arg(long)]
    contact_center: bool,
    /// Where bench.json and latency.png go (default: target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let me = std::env::current_exe()?;
    let binary = me.with_file_name("patchbay");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release`",
        binary.display()
    );
    let out_dir = cli.out.unwrap_or_else(|| harness::default_out_dir(&binary));
    let mut options = harness::BenchOptions::new(cli.quick, binary, out_dir);
    if let Some(d) = cli.duration {
        options.duration = std::time::Duration::from_secs(d);
    }
    options.concurrency = cli.concurrency;
    options.rate = cli.rate;
    options.upstream_latency_ms = cli.upstream_latency_ms;
    options.linger_ms = cli.linger_ms;
    options.contact_center_only = cli.contact_center;
    let clean = harness::run(&options, &mut std::io::stdout()).await?;
    if !clean {
        eprintln!("patchbay-bench: some events failed or updates were lost");
        std::process::exit(1);
    }
    Ok(())
}
