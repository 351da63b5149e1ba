//! `crdgen`: prints the CustomResourceDefinitions of every Brindle kind.

use std::io::Write;
use std::process::ExitCode;

use brindle_agent::datastore::kubernetes::crd;
use clap::Parser;

/// Print the CustomResourceDefinitions (brindle.dev/v1, cluster-scoped) that the `kubernetes`
/// datastore needs, generated from Brindle's resource types, as one YAML stream on stdout.
/// manifests/crds.yaml is its output:
/// `cargo run -p brindle-agent --bin crdgen > manifests/crds.yaml`, then
/// `kubectl apply -f manifests/crds.yaml`.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    let yaml = match crd::all_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::io::stdout().lock().write_all(yaml.as_bytes()) {
        eprintln!("crdgen: writing stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
