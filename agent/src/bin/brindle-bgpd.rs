//! `brindle-bgpd`: Brindle's BGP speaker on its own, from a YAML file.

use std::path::PathBuf;
use std::process::ExitCode;

use brindle_agent::bgpd::{self, BgpdOptions};
use brindle_agent::telemetry;
use clap::Parser;

/// Brindle's BGP speaker on its own: a route reflector outside the cluster, a test peer, the
/// benchmark subject.
///
/// Peers with the routers of the configuration file, announces its `originate` prefixes and,
/// with `install_routes: true`, programs the best routes it learns into the kernel (protocol
/// 98, the only routes it ever touches). Status is served on a Unix socket and read with
/// `brindlectl bgp peers`, `brindlectl bgp routes` and `brindlectl node status --socket`;
/// with `metrics_listen` in the file, Prometheus metrics (`brindle_bgp_*`) on `GET /metrics`. SIGHUP re-reads the file and applies
/// the difference; SIGTERM sends Cease to every peer and removes the installed routes.
/// The file's keys are described in docs/bgp.md.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The YAML configuration file.
    #[arg(long, short = 'c')]
    config: PathBuf,

    /// Path of the status socket (HTTP over a Unix socket, mode 0600).
    #[arg(long, env = "BRINDLE_BGPD_SOCKET", default_value = brindle_agent::api::DEFAULT_BGPD_SOCKET)]
    status_socket: PathBuf,

    /// Log format: `text` or `json`.
    #[arg(long, value_enum, default_value = "text")]
    log_format: telemetry::LogFormat,

    /// Log filter (tracing's EnvFilter syntax), e.g. `info,brindle_bgp=debug`.
    #[arg(long, env = "BRINDLE_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = telemetry::init(args.log_format, &args.log) {
        eprintln!("brindle-bgpd: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = bgpd::run(BgpdOptions {
        config: args.config,
        status_socket: args.status_socket,
    })
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, causes included, without a backtrace: this is what the user sees.
            eprintln!("brindle-bgpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
