//! `brindle`, the CNI plugin: a thin client of the agent's Unix socket.
//!
//! The plugin never touches netlink or the datastore. It reads what the runtime passes (the
//! `CNI_*` environment and the network configuration on stdin), asks `brindle-node` over
//! `/var/run/brindle/agent.sock` to allocate an address and wire the pod, and prints the CNI
//! result. stdout carries only the result or a CNI error object; logs go to stderr.
//!
//! ```text
//! main.rs     read env and stdin, run, print, exit
//! cmd.rs      the verbs: ADD, DEL, CHECK, VERSION
//! config.rs   network configuration, CNI_* variables, CNI_ARGS
//! client.rs   the agent over its socket (HTTP/1.1 + JSON)
//! http.rs     request encoding and an incremental, total response parser
//! result.rs   result and error objects per CNI version
//! version.rs  supported CNI versions
//! error.rs    typed errors and their CNI codes
//! log.rs      stderr logging
//! ```

mod client;
mod cmd;
mod config;
mod error;
mod http;
mod log;
mod result;
#[cfg(test)]
mod testutil;
mod version;

use std::io::{Read, Write};
use std::process::ExitCode;

use client::Client;
use config::{RuntimeEnv, MAX_STDIN};
use error::CniError;
use log::{LogLevel, Logger};

fn main() -> ExitCode {
    // Failures only, until the configuration says otherwise.
    let mut log = Logger::new(LogLevel::Error);
    let outcome = match RuntimeEnv::from_lookup(|var| std::env::var_os(var)) {
        Ok(env) => cmd::execute(
            &env,
            read_stdin,
            |conf| Client::new(&conf.agent_socket, conf.agent_timeout),
            &mut log,
        ),
        Err(e) => cmd::Outcome {
            version: version::CURRENT,
            result: Err(e),
        },
    };
    match outcome.result {
        Ok(out) => {
            if let Some(out) = out {
                if print(&out).is_err() {
                    // The runtime cannot have the result; failing lets it clean up and retry.
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let api = e.to_api_error();
            if api.details.is_empty() {
                log.error(&api.msg, &[("code", &api.code)]);
            } else {
                log.error(&api.msg, &[("code", &api.code), ("details", &api.details)]);
            }
            let _ = print(&result::render_error(outcome.version, &api));
            ExitCode::FAILURE
        }
    }
}

fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Reads the network configuration, refusing more than [`MAX_STDIN`] bytes.
fn read_stdin() -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::Stdin {
            reason: e.to_string(),
        })?;
    if buf.len() > MAX_STDIN {
        return Err(CniError::Decode {
            reason: format!("the network configuration is larger than {MAX_STDIN} bytes"),
        });
    }
    Ok(buf)
}
