//! `brindle-lab`: Brindle clusters in network namespaces.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use brindle_lab::{Cluster, ClusterSpec, Datastore, Encap, INTERRUPTED};
use clap::{Parser, Subcommand, ValueEnum};

/// Build Brindle clusters out of network namespaces on this machine (root required).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a cluster (nodes on one bridge, one brindle-node each on a shared embedded
    /// datastore, an IP pool, pods wired by the brindle CNI plugin), print each node's routes
    /// and a pod-to-pod ping matrix, then tear it all down (also on Ctrl-C or failure).
    /// Exits 0 only when every pod reaches every other pod.
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
        nodes: u16,
        /// Pods on each node.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=20))]
        pods_per_node: u16,
        /// Encapsulation of the IP pool.
        #[arg(long, value_enum, default_value = "vxlan")]
        encap: EncapArg,
        /// Datastore: `embedded` (one SQLite file) or `etcd` (a real etcd server in the
        /// fabric namespace; needs Debian's etcd-server).
        #[arg(long, value_enum, default_value = "embedded")]
        datastore: DatastoreArg,
        /// Dual stack: add the IPv6 pool fd00:10:244::/48 (same encapsulation), give the
        /// nodes IPv6 addresses, and ping every pod over IPv6 as well.
        #[arg(long)]
        ipv6: bool,
    },
    /// Answer every TCP connection on PORT with TEXT and a newline, then close it; runs until
    /// killed. The scenario tests run it inside pod namespaces to check that traffic (a port
    /// mapping, say) arrives.
    Serve {
        /// TCP port to listen on, on every address.
        #[arg(long)]
        port: u16,
        /// What to answer.
        #[arg(long, default_value = "hello")]
        reply: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DatastoreArg {
    /// SQLite in one file shared by every node's agent.
    Embedded,
    /// A real etcd server.
    Etcd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EncapArg {
    /// vxlanMode: Always.
    Vxlan,
    /// vxlanMode: CrossSubnet (all lab nodes share one subnet, so traffic is direct).
    CrossSubnet,
    /// ipipMode: Always, through tunl0 (needs the kernel's ipip module).
    Ipip,
    /// ipipMode: CrossSubnet.
    IpipCrossSubnet,
    /// No encapsulation: routes via the node IPs.
    Never,
}

/// Prints a ping matrix (row pings column); returns how many pairs failed.
fn print_matrix(
    title: &str,
    pods: &[brindle_lab::Pod],
    matrix: &std::collections::BTreeMap<(String, String), bool>,
) -> usize {
    println!("\n{title} (row pings column; ok = reached):");
    let width = pods.iter().map(|p| p.name.len()).max().unwrap_or(4) + 2;
    print!("{:width$}", "");
    for to in pods {
        print!("{:>width$}", to.name);
    }
    println!();
    for from in pods {
        print!("{:width$}", from.name);
        for to in pods {
            let cell = match matrix.get(&(from.name.clone(), to.name.clone())) {
                _ if from.name == to.name => "-",
                Some(true) => "ok",
                Some(false) => "FAIL",
                None => "n/a",
            };
            print!("{cell:>width$}");
        }
        println!();
    }
    matrix.values().filter(|ok| !**ok).count()
}

fn demo(
    nodes: u16,
    pods_per_node: u16,
    encap: EncapArg,
    datastore: DatastoreArg,
    ipv6: bool,
) -> Result<bool> {
    let spec = ClusterSpec {
        datastore: match datastore {
            DatastoreArg::Embedded => Datastore::Embedded,
            DatastoreArg::Etcd => Datastore::Etcd,
        },
        nodes: nodes.into(),
        pods_per_node: pods_per_node.into(),
        encap: match encap {
            EncapArg::Vxlan => Encap::VxlanAlways,
            EncapArg::CrossSubnet => Encap::VxlanCrossSubnet,
            EncapArg::Ipip => Encap::IpipAlways,
            EncapArg::IpipCrossSubnet => Encap::IpipCrossSubnet,
            EncapArg::Never => Encap::Never,
        },
        pool_cidr_v6: ipv6.then(|| "fd00:10:244::/48".to_string()),
        ..ClusterSpec::default()
    };
    let encap = spec.encap;
    let cluster = Cluster::build(spec)?;
    println!("[5/5] waiting for routes, then pinging every pod from every pod");
    cluster.wait_converged(Duration::from_secs(30))?;
    for (i, node) in cluster.nodes.iter().enumerate() {
        println!(
            "\n{} ({}) routes programmed by Brindle:",
            node.name, node.ip
        );
        for line in cluster.routes(i)?.lines() {
            println!("  {line}");
        }
        if let Some(dev) = encap.tunnel_device() {
            println!("  device {dev}: {}", cluster.link_summary(i, dev)?);
        }
    }
    let tunnel = encap.tunnel_device().unwrap_or("vxlan.brindle");
    let before: Vec<u64> = (0..cluster.nodes.len())
        .map(|i| cluster.tx_packets(i, tunnel).unwrap_or(0))
        .collect();
    let matrix = cluster.ping_matrix()?;
    let mut failed = print_matrix("ping matrix", &cluster.pods, &matrix);
    let mut pairs = matrix.len();
    if ipv6 {
        for pod in &cluster.pods {
            println!(
                "  {:<10} {}",
                pod.name,
                pod.ip6.as_deref().unwrap_or("(no IPv6 address)")
            );
        }
        let matrix6 = cluster.ping6_matrix()?;
        failed += print_matrix("IPv6 ping matrix (ping -6)", &cluster.pods, &matrix6);
        pairs += matrix6.len();
        if matrix6.is_empty() {
            failed += 1;
        }
    }
    println!("\n{tunnel} packets sent during the pings:");
    for (i, node) in cluster.nodes.iter().enumerate() {
        let sent = cluster
            .tx_packets(i, tunnel)
            .unwrap_or(0)
            .saturating_sub(before[i]);
        println!("  {:<8} {sent}", node.name);
        // Every node's pods ping remote pods: with Always, all of that goes through the tunnel.
        if sent == 0 && encap.always() && cluster.nodes.len() > 1 {
            println!("  FAIL: {} sent nothing through {tunnel}", node.name);
            failed += 1;
        }
    }
    println!(
        "\n{} of {} pod pairs reachable; tearing down",
        pairs.saturating_sub(failed),
        pairs
    );
    Ok(failed == 0)
}

fn serve(port: u16, reply: &str) -> Result<bool> {
    let listener = std::net::TcpListener::bind(("::", port))
        .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", port)))
        .with_context(|| format!("listening on port {port}"))?;
    for conn in listener.incoming() {
        match conn {
            Ok(mut conn) => {
                let _ = writeln!(conn, "{reply}");
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = ctrlc::set_handler(|| {
        eprintln!("\ninterrupted; tearing down");
        INTERRUPTED.store(true, Ordering::Relaxed);
    }) {
        eprintln!("warning: cannot catch Ctrl-C: {e}");
    }
    let result = match cli.command {
        Command::Demo {
            nodes,
            pods_per_node,
            encap,
            datastore,
            ipv6,
        } => demo(nodes, pods_per_node, encap, datastore, ipv6),
        Command::Serve { port, reply } => serve(port, &reply),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some pods could not reach each other");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
