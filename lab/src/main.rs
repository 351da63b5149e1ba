//! `brindle-lab`: Brindle clusters in network namespaces.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use brindle_lab::{Cluster, ClusterSpec, Datastore, Encap, Routing, INTERRUPTED};
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
        /// Encapsulation of the IP pool. Default: `vxlan` with `--mode static`, `never` with
        /// the BGP modes.
        #[arg(long, value_enum)]
        encap: Option<EncapArg>,
        /// How nodes route: `static` (from the datastore), `bgp` (brindle-node's BGP speaker in
        /// a node-to-node mesh), or `bgp-racks` (two racks, each behind a BIRD 2 ToR router
        /// with its own AS, nodes peering over eBGP with their ToR only; needs Debian's bird2).
        /// The BGP modes print each node's BGP peers, and bgp-racks the ToRs' routes.
        #[arg(long, value_enum, default_value = "static")]
        mode: ModeArg,
        /// Datastore: `embedded` (one SQLite file) or `etcd` (a real etcd server in the
        /// fabric namespace; needs Debian's etcd-server).
        #[arg(long, value_enum, default_value = "embedded")]
        datastore: DatastoreArg,
        /// Dual stack: add the IPv6 pool fd00:10:244::/48 (same encapsulation), give the
        /// nodes IPv6 addresses, and ping every pod over IPv6 as well.
        #[arg(long)]
        ipv6: bool,
        /// L2 segments: 2 puts the first half of the nodes on 10.99.0.0/24 and the others on
        /// 10.99.1.0/24, routed by the fabric namespace (with `--encap never` the fabric gets a
        /// static route to every node's blocks, as flannel's host-gw). IPv4 only.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=2))]
        segments: u16,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Routes from the datastore.
    Static,
    /// The node-to-node BGP mesh.
    Bgp,
    /// Two racks behind BIRD ToRs (eBGP).
    BgpRacks,
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
    /// vxlanMode: CrossSubnet (direct within a segment, VXLAN between segments).
    CrossSubnet,
    /// ipipMode: Always, through tunl0 (needs the kernel's ipip module).
    Ipip,
    /// ipipMode: CrossSubnet.
    IpipCrossSubnet,
    /// No encapsulation: routes via the node IPs within a segment, via the router between.
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

#[allow(clippy::too_many_arguments)]
fn demo(
    nodes: u16,
    pods_per_node: u16,
    encap: Option<EncapArg>,
    mode: ModeArg,
    datastore: DatastoreArg,
    ipv6: bool,
    segments: u16,
) -> Result<bool> {
    if ipv6 && segments > 1 {
        anyhow::bail!("--ipv6 works on one segment only (the fabric routes IPv4 only)");
    }
    if ipv6 && mode != ModeArg::Static {
        anyhow::bail!("--ipv6 works with --mode static only (BGP mode routes IPv4)");
    }
    let racks = mode == ModeArg::BgpRacks;
    if racks && !brindle_lab::bgp::bird_available() {
        anyhow::bail!("--mode bgp-racks needs BIRD 2 (apt-get install bird2)");
    }
    if racks && nodes < 2 {
        anyhow::bail!("--mode bgp-racks needs at least 2 nodes (one per rack)");
    }
    let encap = encap.unwrap_or(if mode == ModeArg::Static {
        EncapArg::Vxlan
    } else {
        EncapArg::Never
    });
    let spec = ClusterSpec {
        routing: match mode {
            ModeArg::Static => Routing::Static,
            ModeArg::Bgp => Routing::Bgp,
            ModeArg::BgpRacks => Routing::BgpRacks,
        },
        segments: if racks { 2 } else { segments.into() },
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
    let never = spec.encap == Encap::Never;
    let cluster = Cluster::build(spec)?;
    if mode != ModeArg::Static {
        println!("      waiting for the BGP sessions");
        for i in 0..cluster.nodes.len() {
            let peers = if racks { 1 } else { cluster.nodes.len() - 1 };
            cluster.wait_established(i, peers, Duration::from_secs(60))?;
        }
    }
    if never && segments > 1 && mode == ModeArg::Static {
        println!("      static routes to every node's blocks on the fabric router (host-gw)");
        cluster.route_blocks_via_router()?;
    }
    println!("[5/5] waiting for routes, then pinging every pod from every pod");
    if racks {
        // A node reaches its own rack's blocks through the ToR's default route.
        cluster.wait_racks_converged(Duration::from_secs(30))?;
    } else {
        cluster.wait_converged(Duration::from_secs(30))?;
    }
    if mode != ModeArg::Static {
        for (i, node) in cluster.nodes.iter().enumerate() {
            println!("\n{} BGP peers:", node.name);
            for p in cluster.bgp_peers(i)?.as_array().into_iter().flatten() {
                println!(
                    "  {:<15} AS {:<6} {:<12} received {} advertised {}",
                    p["address"].as_str().unwrap_or_default(),
                    p["asn"],
                    p["state"].as_str().unwrap_or_default(),
                    p["received"],
                    p["advertised"]
                );
            }
        }
        for tor in &cluster.tors {
            println!(
                "\nToR of rack {} (BIRD, AS {}): birdc show route",
                tor.rack,
                brindle_lab::bgp::tor_asn(tor.rack)
            );
            for line in tor.birdc(&["show", "route"])?.lines() {
                println!("  {line}");
            }
        }
    }
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
            mode,
            datastore,
            ipv6,
            segments,
        } => demo(nodes, pods_per_node, encap, mode, datastore, ipv6, segments),
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
