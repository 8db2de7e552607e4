//! The `strata` binary: parses the command line, sets up logging, runs.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's allocator: a cached read allocates and frees
/// a few dozen small blocks, and glibc's malloc and free were 13 % of the
/// server's CPU samples under `wrk`; with mimalloc a cached list GET costs
/// about 10 % less CPU (bench/RESULTS.md). The price is memory: about
/// 25 MiB more at rest, and the 19 MiB argon2 buffers of logins are kept a
/// while before they go back to the kernel (RSS stayed bounded at 74 MiB
/// through storms of 40 concurrent logins).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the Tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

async fn run() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = strata::cli::Cli::parse();
    match strata::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
