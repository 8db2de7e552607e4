//! `static-ceiling`: the benchmarks' ceiling. A bare axum server on every
//! core that answers each request with the same bytes (a file's, served as
//! JSON), so its throughput is what HTTP alone costs on this machine for a
//! body of that size. `bench/run` compares Strata's cached list GET to it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::Router;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "static-ceiling", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18090")]
    listen: SocketAddr,
    /// The body every answer carries.
    #[arg(long)]
    body_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let body = Bytes::from(
        std::fs::read(&cli.body_file)
            .with_context(|| format!("reading {}", cli.body_file.display()))?,
    );
    let app = Router::new().fallback(move || {
        let body = body.clone();
        async move { ([(CONTENT_TYPE, "application/json")], body) }
    });
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    axum::serve(listener, app).await?;
    Ok(())
}
