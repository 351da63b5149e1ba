//! `brindlectl`: manage Brindle resources and look at a node.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use brindle_agent::ctl::{self, Kind, Output};
use brindle_agent::{datastore, server};
use clap::{Parser, Subcommand};

/// Manage Brindle's resources (IP pools, nodes, workload endpoints, IPAM blocks) and look at
/// the agent of this node.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Where cluster state lives, as for brindle-node: `embedded:/path/file.db`,
    /// `etcd://host:port[,host:port...][?prefix=/brindle]` or `kubernetes[:/path/to/kubeconfig]`.
    #[arg(
        long,
        global = true,
        env = "BRINDLE_DATASTORE",
        default_value = "embedded:/var/lib/brindle/store.db"
    )]
    datastore: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or update the resources of a YAML file (one or many documents; `-` for stdin):
    /// IPPool, BGPPeer, BGPConfiguration, IPAMConfig, Node (labels, BGP AS, route-reflector cluster ID). Every document is checked first; if any
    /// is invalid nothing is written. Calico's `crd.projectcalico.org/v1` and
    /// `projectcalico.org/v3` documents of these kinds are accepted and converted.
    Apply {
        /// The file to apply.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// List resources of a kind as a table (`-o wide` adds columns), YAML or JSON: ippools,
    /// bgppeers, bgpconfigurations, ipamconfigs, nodes, workloadendpoints, ipamblocks,
    /// blockaffinities, ipamhandles.
    Get {
        /// The kind (plural or singular, as kubectl takes them).
        kind: String,
        /// Only this resource.
        name: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete a resource by kind and name, or those of a file (IPPool, BGPPeer,
    /// BGPConfiguration, IPAMConfig). An IP pool with allocated addresses is refused.
    Delete {
        /// The kind, when deleting by name.
        kind: Option<String>,
        /// The name, when deleting by name.
        name: Option<String>,
        /// Delete the resources named in this file instead.
        #[arg(short = 'f', long = "filename")]
        file: Option<PathBuf>,
    },
    /// IP address management: utilisation, consistency checks.
    #[command(subcommand)]
    Ipam(IpamCommand),
    /// This node: whether the agent runs, and its BGP sessions (as `calicoctl node status`).
    #[command(subcommand)]
    Node(NodeCommand),
    /// BGP status of brindle-bgpd (or, later, brindle-node) over its Unix socket.
    #[command(subcommand)]
    Bgp(BgpCommand),
    /// Show what the agent on this node reports (over its Unix socket).
    Status {
        /// The agent's socket.
        #[arg(long, env = "BRINDLE_SOCKET", default_value = brindle_agent::api::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Output format: table or json.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Whether the agent runs, and its BGP sessions per address family (calicoctl's table).
    ///
    /// Prints "Brindle process is running." (or "... not running."), then per address family
    /// a table of the BGP peers: PEER ADDRESS, PEER TYPE (node-to-node mesh, global, node
    /// specific), STATE (BIRD's: up, or start while the session is being brought up), SINCE
    /// (last change: HH:MM:SS if within 20 hours, else the date; UTC) and INFO (Established,
    /// or the BGP state and why the session is not up: connection refused, bad peer AS,
    /// hold timer expired, a NOTIFICATION received, authentication failure with TCP MD5...).
    /// Exits 1 when nothing answers on the socket. Works against brindle-bgpd with its
    /// `--socket`.
    Status {
        /// The agent's socket, or brindle-bgpd's status socket.
        #[arg(long, env = "BRINDLE_SOCKET", default_value = brindle_agent::api::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: BgpOutput,
    },
}

#[derive(Subcommand, Debug)]
enum BgpCommand {
    /// The BGP neighbours: PEER ADDRESS, ASN, STATE, SINCE (how long in that state), INFO
    /// (why a session is not Established: "connection refused", "hold timer expired", a
    /// NOTIFICATION received...), and per address FAMILY the prefixes RECEIVED, ACCEPTED
    /// (usable: no AS loop, reachable next hop) and ADVERTISED, a row per family.
    Peers {
        /// The speaker's status socket.
        #[arg(long, env = "BRINDLE_BGPD_SOCKET", default_value = brindle_agent::api::DEFAULT_BGPD_SOCKET)]
        socket: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: BgpOutput,
    },
    /// Every candidate route of the BGP RIB: the best (`*`, with all its equal-cost next hops)
    /// first for each prefix, then the others with the reason they lost.
    Routes {
        /// The speaker's status socket.
        #[arg(long, env = "BRINDLE_BGPD_SOCKET", default_value = brindle_agent::api::DEFAULT_BGPD_SOCKET)]
        socket: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: BgpOutput,
    },
}

/// Output formats of `bgp peers|routes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BgpOutput {
    Table,
    Json,
}

/// GETs `path` on a BGP status socket and decodes the JSON answer.
fn bgp_get<T: serde::de::DeserializeOwned>(
    socket: &std::path::Path,
    path: &str,
) -> Result<T, String> {
    let (code, body) = server::get_over_socket(socket, path).map_err(|e| {
        format!(
            "BGP speaker not reachable at {}: {e} (is brindle-bgpd running? see --socket)",
            socket.display()
        )
    })?;
    if code != 200 {
        return Err(format!(
            "BGP speaker answered {code}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("BGP speaker answered malformed JSON: {e}"))
}

#[derive(Subcommand, Debug)]
enum IpamCommand {
    /// Utilisation of each IP pool (and block), borrowed addresses, or one address.
    Show {
        /// One row per block as well as per pool.
        #[arg(long)]
        show_blocks: bool,
        /// Addresses a node allocated from another node's block.
        #[arg(long, conflicts_with = "show_blocks")]
        show_borrowed: bool,
        /// Who holds this address.
        #[arg(long, conflicts_with_all = ["show_blocks", "show_borrowed"])]
        ip: Option<std::net::IpAddr>,
    },
    /// Look for inconsistencies: addresses allocated but unused (leaks), addresses used but not
    /// allocated, handles without addresses, blocks of deleted nodes, malformed blocks. Prints
    /// its progress; exits 1 when it finds problems.
    Check {
        /// List every problem address as it is found.
        #[arg(long)]
        show_problem_ips: bool,
        /// Write the findings as JSON, for `ipam release --from-report`.
        #[arg(short, long = "output")]
        output: Option<PathBuf>,
    },
    /// Release the leaked addresses of an `ipam check -o` report. Only what a fresh check still
    /// finds leaked, with the same handle and sequence number, is released.
    Release {
        /// The report written by `ipam check -o`.
        #[arg(long)]
        from_report: PathBuf,
    },
}

fn read_source(path: &PathBuf) -> Result<(String, String), String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        return Ok(("stdin".to_string(), text));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path.display().to_string(), text))
}

async fn run(cli: Cli) -> Result<String, String> {
    let open = || async {
        datastore::open(&cli.datastore)
            .await
            .map_err(|e| format!("datastore {}: {e}", cli.datastore))
    };
    match &cli.command {
        Command::Apply { file } => {
            let (name, text) = read_source(file)?;
            let docs = ctl::parse_documents(&name, &text).map_err(|e| e.to_string())?;
            for warning in ctl::warnings(&docs) {
                eprintln!("warning: {warning}");
            }
            let store = open().await?;
            let lines = ctl::apply(store.as_ref(), &docs)
                .await
                .map_err(|e| e.to_string())?;
            Ok(lines.join("\n") + "\n")
        }
        Command::Get { kind, name, output } => {
            let kind = Kind::parse(kind).map_err(|e| e.to_string())?;
            let store = open().await?;
            ctl::get(store.as_ref(), kind, name.as_deref(), *output)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Delete { kind, name, file } => {
            let targets: Vec<(Kind, String)> = match (kind, name, file) {
                (None, None, Some(file)) => {
                    let (src, text) = read_source(file)?;
                    ctl::parse_documents(&src, &text)
                        .map_err(|e| e.to_string())?
                        .iter()
                        .map(|d| {
                            let (kind, name) = d.key();
                            Kind::parse(kind).map(|k| (k, name.to_string()))
                        })
                        .collect::<Result<_, _>>()
                        .map_err(|e| e.to_string())?
                }
                (Some(kind), Some(name), None) => {
                    vec![(Kind::parse(kind).map_err(|e| e.to_string())?, name.clone())]
                }
                _ => return Err("usage: brindlectl delete KIND NAME | delete -f FILE".into()),
            };
            let store = open().await?;
            let mut out = String::new();
            for (kind, name) in targets {
                out += &ctl::delete(store.as_ref(), kind, &name)
                    .await
                    .map_err(|e| e.to_string())?;
                out.push('\n');
            }
            Ok(out)
        }
        Command::Ipam(IpamCommand::Show {
            show_blocks,
            show_borrowed,
            ip,
        }) => {
            let store = open().await?;
            let snap = brindle_agent::ipam_tools::Snapshot::load(store.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            Ok(match (ip, show_borrowed) {
                (Some(ip), _) => brindle_agent::ipam_tools::show_ip(&snap, *ip),
                (None, true) => brindle_agent::ipam_tools::show_borrowed(&snap),
                (None, false) => brindle_agent::ipam_tools::show(&snap, *show_blocks),
            })
        }
        Command::Ipam(IpamCommand::Check {
            show_problem_ips,
            output,
        }) => {
            let store = open().await?;
            let mut stdout = std::io::stdout();
            let report =
                brindle_agent::ipam_tools::check(store.as_ref(), &mut stdout, *show_problem_ips)
                    .await
                    .map_err(|e| e.to_string())?;
            if let Some(path) = output {
                let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
                std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
                println!("Report written to {}.", path.display());
            }
            if report.problems() > 0 {
                return Err(format!("{} problems found", report.problems()));
            }
            Ok(String::new())
        }
        Command::Ipam(IpamCommand::Release { from_report }) => {
            let (src, text) = read_source(from_report)?;
            let report: brindle_agent::ipam_tools::CheckReport = serde_json::from_str(&text)
                .map_err(|e| format!("{src}: not a check report: {e}"))?;
            let store = open().await?;
            let ipam = brindle_ipam::Ipam::new(store.clone());
            let outcome =
                brindle_agent::ipam_tools::release_from_report(store.as_ref(), &ipam, &report)
                    .await?;
            let mut out = String::new();
            for ip in &outcome.released {
                out += &format!("released {ip}\n");
            }
            for why in &outcome.skipped {
                out += &format!("skipped {why}\n");
            }
            out += &format!(
                "{} released, {} skipped\n",
                outcome.released.len(),
                outcome.skipped.len()
            );
            Ok(out)
        }
        Command::Node(NodeCommand::Status { socket, output }) => {
            use brindle_agent::node_status::{self, NodeStatus};
            let status = node_status::fetch(socket)?;
            let now = std::time::SystemTime::now();
            let text = match output {
                BgpOutput::Json => {
                    serde_json::to_string_pretty(&node_status::json(&status, now))
                        .unwrap_or_default()
                        + "\n"
                }
                BgpOutput::Table => node_status::render(&status, now),
            };
            if let NodeStatus::NotRunning { reason } = &status {
                print!("{text}");
                return Err(format!(
                    "nothing answers at {reason} (is brindle-node running? see --socket)"
                ));
            }
            Ok(text)
        }
        Command::Bgp(BgpCommand::Peers { socket, output }) => {
            let peers: Vec<brindle_agent::api::BgpPeer> =
                bgp_get(socket, brindle_agent::api::PATH_BGP_PEERS)?;
            Ok(match output {
                BgpOutput::Json => serde_json::to_string_pretty(&peers).unwrap_or_default() + "\n",
                BgpOutput::Table => {
                    brindle_agent::bgp_status::peers_table(&peers, std::time::SystemTime::now())
                }
            })
        }
        Command::Bgp(BgpCommand::Routes { socket, output }) => {
            let routes: Vec<brindle_agent::api::BgpRoute> =
                bgp_get(socket, brindle_agent::api::PATH_BGP_ROUTES)?;
            Ok(match output {
                BgpOutput::Json => serde_json::to_string_pretty(&routes).unwrap_or_default() + "\n",
                BgpOutput::Table => brindle_agent::bgp_status::routes_table(&routes),
            })
        }
        Command::Status { socket, output } => {
            let (code, body) = server::get_over_socket(socket, brindle_agent::api::PATH_STATUS)
                .map_err(|e| {
                    format!(
                        "agent not reachable at {}: {e} (is brindle-node running?)",
                        socket.display()
                    )
                })?;
            if code != 200 {
                return Err(format!(
                    "agent answered {code}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            let status: brindle_agent::api::AgentStatus = serde_json::from_slice(&body)
                .map_err(|e| format!("agent answered malformed status: {e}"))?;
            Ok(match output {
                Output::Json | Output::Yaml => {
                    serde_json::to_string_pretty(&status).unwrap_or_default() + "\n"
                }
                _ => ctl::table(
                    &[
                        "NODE",
                        "ADDRESS",
                        "READY",
                        "LOCAL PODS",
                        "REMOTE NODES",
                        "VERSION",
                    ],
                    &[vec![
                        status.node_name,
                        status.node_ip,
                        status.ready.to_string(),
                        status.local_pods.to_string(),
                        status.remote_nodes.to_string(),
                        status.version,
                    ]],
                ),
            })
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
