//! `brindle-install-cni`: installs the CNI plugin and its conflist on the host.

use std::path::PathBuf;
use std::process::ExitCode;

use brindle_agent::cni_install::{self, InstallConfig};
use clap::Parser;

/// Install Brindle's CNI plugin binary and conflist on this host.
///
/// Run by the brindle-node DaemonSet's init container with the host's /opt/cni/bin and
/// /etc/cni/net.d mounted under /host. Copies each --bin into --bin-dir (mode 0755) and writes
/// the conflist into --conf-dir, atomically: each through a temporary file renamed over the
/// target, so the container runtime never sees a partial file. Files that already have the same content and
/// mode are left untouched: running it again changes nothing. The conflist is validated first
/// (JSON, a name, a non-empty plugins list), so a bad ConfigMap changes nothing on the host.
/// Placeholders `__KUBERNETES_NODE_NAME__` and `__CNI_MTU__` are replaced from the variables of
/// the same names. The conflist's mode is 0600 when it holds credentials (a kubeconfig, token,
/// password, secret or key field), 0644 otherwise. Prints one line per file.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Plugin binaries to install (repeat the flag, or separate with commas).
    #[arg(
        long = "bin",
        env = "BRINDLE_CNI_BINARIES",
        value_delimiter = ',',
        default_value = "/usr/local/bin/brindle"
    )]
    binaries: Vec<PathBuf>,

    /// Where the host's CNI plugins live (the host's /opt/cni/bin, mounted).
    #[arg(long, env = "CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    bin_dir: PathBuf,

    /// Where the host's CNI configuration lives (the host's /etc/cni/net.d, mounted).
    #[arg(long, env = "CNI_NET_DIR", default_value = "/host/etc/cni/net.d")]
    conf_dir: PathBuf,

    /// File name of the conflist.
    #[arg(long, env = "CNI_CONF_NAME", default_value = "10-brindle.conflist")]
    conf_name: String,

    /// The conflist text (the DaemonSet takes it from the brindle-config ConfigMap).
    #[arg(
        long,
        env = "CNI_NETWORK_CONFIG",
        conflicts_with = "network_config_file"
    )]
    network_config: Option<String>,

    /// A file holding the conflist (a ConfigMap mounted as a volume).
    #[arg(long, env = "CNI_NETWORK_CONFIG_FILE")]
    network_config_file: Option<PathBuf>,

    /// Replaces `__KUBERNETES_NODE_NAME__` in the conflist.
    #[arg(long, env = "KUBERNETES_NODE_NAME")]
    node_name: Option<String>,

    /// Replaces `__CNI_MTU__` in the conflist (0: the agent picks).
    #[arg(long, env = "CNI_MTU", default_value_t = 0)]
    mtu: u32,

    /// The conflist's mode in octal (`600`, `644`); default: 600 with credentials, else 644.
    #[arg(long, value_parser = parse_mode)]
    conf_mode: Option<u32>,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 644"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let network_config = match (&args.network_config, &args.network_config_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("brindle-install-cni: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        (None, None) => {
            eprintln!(
                "brindle-install-cni: no network configuration: set CNI_NETWORK_CONFIG or \
                 --network-config-file"
            );
            return ExitCode::from(2);
        }
    };
    let mut substitutions = vec![("__CNI_MTU__".to_string(), args.mtu.to_string())];
    if let Some(node) = &args.node_name {
        substitutions.push(("__KUBERNETES_NODE_NAME__".to_string(), node.clone()));
    }
    let config = InstallConfig {
        binaries: args.binaries,
        bin_dir: args.bin_dir,
        conf_dir: args.conf_dir,
        conf_name: args.conf_name,
        network_config,
        substitutions,
        conf_mode: args.conf_mode,
    };
    match cni_install::install(&config) {
        Ok(outcomes) => {
            for o in outcomes {
                let what = if o.changed { "installed" } else { "unchanged" };
                println!("{what} {} (mode {:o})", o.path.display(), o.mode);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("brindle-install-cni: {e}");
            ExitCode::FAILURE
        }
    }
}
