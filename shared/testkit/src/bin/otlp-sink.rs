//! An OTLP/gRPC trace receiver that counts what it is sent and keeps nothing:
//! the collector the gateway benchmark exports to. Prints `listening <addr>`,
//! then, on SIGTERM or SIGINT, `received <spans> spans in <exports> exports`.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .map_err(std::io::Error::other)?;
    let sink = suite_testkit::OtlpReceiver::start_counting(addr).await?;
    println!("listening {}", sink.addr());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("received {} spans in {} exports", sink.span_count(), sink.export_calls());
    sink.stop().await;
    Ok(())
}
