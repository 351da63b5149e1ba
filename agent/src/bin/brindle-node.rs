//! `brindle-node`: the Brindle agent, one per node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use brindle_agent::bgp_routing::{self, RoutingConfig, RoutingMode};
use brindle_agent::controller::{self, ControllerConfig, Redetect, Shared};
use brindle_agent::dataplane::{enable_ip_forwarding, Dataplane};
use brindle_agent::default_pools::{self, DefaultPoolsConfig};
use brindle_agent::metrics::Metrics;
use brindle_agent::pod_defaults::{MtuConfig, IPIP_OVERHEAD, VXLAN_OVERHEAD};
use brindle_agent::pods::PodNetwork;
use brindle_agent::routes::LocalNode;
use brindle_agent::server::{self, ApiState};
use brindle_agent::{datastore, datastore_health, kube_node, node, telemetry};
use brindle_ipam::Ipam;
use clap::Parser;
use ipnet::{Ipv4Net, Ipv6Net};
use tracing::{info, warn};

/// The Brindle node agent.
///
/// Registers this node in the datastore, serves the CNI plugin on a Unix socket (allocating pod
/// addresses from block IPAM and wiring pods), and programs the kernel: the VXLAN device, a route
/// per remote block, neighbour and FDB entries per remote node, a blackhole per local block. It
/// leaves its routes in place when it stops, so pods keep their connectivity across restarts.
#[derive(Parser, Debug)]
#[command(version, about, long_about, after_long_help = default_pools::ENV_HELP)]
struct Args {
    /// This node's name in the datastore. Defaults to the host name.
    #[arg(long, env = "NODENAME")]
    node_name: Option<String>,

    /// Where cluster state lives: `embedded:/path/file.db` (SQLite, shared by the processes of
    /// one host), `etcd://host:port[,host:port...][?prefix=/brindle]`, or `kubernetes`
    /// (custom resources brindle.dev/v1 through the API server: the in-cluster service account
    /// or KUBECONFIG; `kubernetes:/path/to/kubeconfig` names a file). See docs/datastore.md.
    #[arg(
        long,
        env = "BRINDLE_DATASTORE",
        default_value = "embedded:/var/lib/brindle/store.db"
    )]
    datastore: String,

    /// The node's IPv4 address with its prefix length (`10.0.0.5/24`), or `autodetect` to
    /// choose one by --ip-autodetection-method (again whenever interface addresses change).
    #[arg(long, env = "IP", default_value = "autodetect")]
    node_ip: String,

    /// How `--node-ip autodetect` chooses (Calico's IP_AUTODETECTION_METHOD, also read under
    /// that name): `first-found` (the default: the first global address on an interface that is
    /// not virtual: docker*, veth*, cali*, vxlan*, ... are skipped), `interface=REGEX[,REGEX]`,
    /// `skip-interface=REGEX[,REGEX]`, `cidr=CIDR[,CIDR]`, `can-reach=DEST` (the address of the
    /// route to DEST), or `kubernetes-internal-ip` (the first IPv4 InternalIP of this node's
    /// Kubernetes Node, with the prefix of the local interface holding it, followed by a watch of
    /// the Node; needs `--datastore kubernetes`). A warning names the candidates when several interfaces qualify.
    #[arg(long, env = "BRINDLE_IP_AUTODETECTION_METHOD")]
    ip_autodetection_method: Option<String>,

    /// The node's IPv6 address with its prefix length (`fd00::5/64`), `autodetect` to take the
    /// first global IPv6 address of the interface holding the IPv4 node address, or `none`.
    /// Other nodes route this node's IPv6 pod blocks to it when their pool is not encapsulated.
    #[arg(long, env = "IP6", default_value = "autodetect")]
    node_ip6: String,

    /// Path of the API socket the CNI plugin talks to.
    #[arg(long, env = "BRINDLE_SOCKET", default_value = brindle_agent::api::DEFAULT_SOCKET)]
    socket: PathBuf,

    /// Address of the health server (`/liveness`, `/readiness`); `off` disables it.
    #[arg(long, env = "BRINDLE_HEALTH_LISTEN", default_value = "0.0.0.0:9099")]
    health_listen: String,

    /// Address of the Prometheus metrics server (`GET /metrics`, names prefixed `brindle_`);
    /// `off` disables it.
    #[arg(long, env = "BRINDLE_METRICS_LISTEN", default_value = "0.0.0.0:9091")]
    metrics_listen: String,

    /// MTU of pod interfaces and of the VXLAN and IPIP devices. Default: the uplink's MTU minus the
    /// overhead of the encapsulation the IP pools use (VXLAN 50, IPIP 20, none 0) for pods, and
    /// minus 50 for the VXLAN device, 20 for tunl0. A conflist's `mtu` still wins for its pods.
    #[arg(long, env = "BRINDLE_MTU")]
    mtu: Option<u32>,

    /// Full dataplane resync period, in seconds, even when nothing changed.
    #[arg(long, default_value_t = 30)]
    resync_interval: u64,

    /// Seconds between IPAM garbage-collection passes over this node's allocations.
    #[arg(long, default_value_t = 60)]
    ipam_gc_interval: u64,

    /// Seconds an address must stay allocated with no pod or tunnel using it before the GC
    /// releases it (seen leaked on two passes this far apart).
    #[arg(long, default_value_t = 900)]
    ipam_leak_grace: u64,

    /// Seconds a block of this node must stay empty before it is released.
    #[arg(long, default_value_t = 300)]
    empty_block_grace: u64,

    /// How routes to other nodes' pods are found. `static`: computed from the datastore (block
    /// affinities and Node addresses), no BGP. `bgp`: the embedded BGP speaker peers as the
    /// datastore says (node-to-node mesh, route reflectors, BGPPeer resources), originates this
    /// node's blocks, and the routes it learns are installed with the pool's encapsulation. See
    /// docs/routing.md.
    #[arg(long, env = "BRINDLE_ROUTING", value_enum, default_value = "static")]
    routing: RoutingMode,

    /// BGP hold time proposed to every peer, in seconds (`--routing bgp`).
    #[arg(long, env = "BRINDLE_BGP_HOLD_TIME", default_value_t = 90)]
    bgp_hold_time: u16,

    /// BGP graceful-restart time announced to peers, in seconds; a BGPPeer's
    /// `maxRestartTime` overrides it for its sessions (`--routing bgp`).
    #[arg(long, env = "BRINDLE_BGP_RESTART_TIME", default_value_t = 120)]
    bgp_restart_time: u16,

    /// Directory of BGP password secrets, laid out as a mounted Kubernetes Secret volume: a
    /// BGPPeer's `password.secretKeyRef {name, key}` is the file `<dir>/<name>/<key>`.
    #[arg(
        long,
        env = "BRINDLE_BGP_SECRETS_DIR",
        default_value = "/etc/brindle/secrets"
    )]
    bgp_secrets_dir: PathBuf,

    /// Log format: `text` or `json`.
    #[arg(long, env = "BRINDLE_LOG_FORMAT", default_value = "text")]
    log_format: telemetry::LogFormat,

    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `brindle_agent=debug`.
    #[arg(long, env = "BRINDLE_LOG", default_value = "info")]
    log: String,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, &args.log)?;
    let node_name = args.node_name.clone().unwrap_or_else(host_name);
    let given_ip =
        match args.node_ip.as_str() {
            "autodetect" | "" => None,
            s => Some(s.parse::<Ipv4Net>().with_context(|| {
                format!("--node-ip {s:?}: expected `a.b.c.d/len` or `autodetect`")
            })?),
        };

    let given_ip6 = match args.node_ip6.as_str() {
        "autodetect" | "" => Some(None),
        "none" => None,
        s => Some(Some(s.parse::<Ipv6Net>().with_context(|| {
            format!("--node-ip6 {s:?}: expected `x:y::z/len`, `autodetect` or `none`")
        })?)),
    };

    let method_arg = args
        .ip_autodetection_method
        .clone()
        .or_else(|| std::env::var("IP_AUTODETECTION_METHOD").ok())
        .unwrap_or_else(|| "first-found".to_string());
    let kubernetes_internal_ip = method_arg.trim() == kube_node::KUBERNETES_INTERNAL_IP;
    let method: node::AutodetectMethod = if kubernetes_internal_ip {
        node::AutodetectMethod::FirstFound
    } else {
        method_arg.parse().context("--ip-autodetection-method")?
    };
    let kube_config = datastore::kubernetes::KubernetesConfig::from_spec(&args.datastore);
    if kubernetes_internal_ip && kube_config.is_none() {
        return Err(kube_node::KubeNodeError::NotKubernetes.into());
    }
    let default_pools =
        DefaultPoolsConfig::from_process_env().context("the default IP pool variables")?;

    let store = datastore::open(&args.datastore)
        .await
        .with_context(|| format!("opening datastore {}", args.datastore))?;
    // Pods' labels and IP annotations (kube_pod.rs) go through the datastore's API server.
    let pod_api = match &kube_config {
        Some(config) => Some(datastore::kubernetes::client(config).await?.0),
        None => None,
    };
    let dataplane = Dataplane::connect()
        .await
        .context("connecting to netlink")?;
    enable_ip_forwarding().context("enabling IPv4 forwarding")?;
    let created = default_pools.ensure(&store).await?;
    if !created.is_empty() {
        info!(pools = ?created, "default IP pools created");
    }
    // kubernetes-internal-ip: the Node's InternalIP now, then followed by a watch of the Node.
    let mut internal_ip = None;
    let given_ip = match (given_ip, kubernetes_internal_ip) {
        (None, true) => {
            let config = kube_config.ok_or(kube_node::KubeNodeError::NotKubernetes)?;
            let (client, _) = datastore::kubernetes::client(&config).await?;
            let ip = kube_node::internal_ipv4(&client, &node_name).await?;
            let addrs = dataplane
                .addresses()
                .await
                .context("listing local addresses")?;
            let net = kube_node::with_local_prefix(&node_name, ip, &addrs)?;
            info!(address = %net, "node address from the Kubernetes Node's InternalIP");
            let (tx, rx) = tokio::sync::watch::channel(Some(ip));
            tokio::spawn(kube_node::follow_internal_ipv4(
                client,
                node_name.clone(),
                tx,
            ));
            internal_ip = Some(rx);
            Some(net)
        }
        (given, _) => given,
    };

    let (address, uplink) = node::detect_address(&dataplane, given_ip, &method).await?;
    let uplink_mtu = dataplane
        .link_mtu(&uplink)
        .await
        .with_context(|| format!("reading the MTU of {uplink}"))?;
    let vxlan_mtu = args
        .mtu
        .unwrap_or(uplink_mtu.saturating_sub(VXLAN_OVERHEAD));
    let ipip_mtu = args.mtu.unwrap_or(uplink_mtu.saturating_sub(IPIP_OVERHEAD));
    let pod_mtu = MtuConfig {
        uplink_mtu,
        configured: args.mtu,
        // Brindle's underlay is the node's IPv4 address.
        underlay_v6: false,
    };
    let address_v6 = match given_ip6 {
        Some(given) => node::detect_address_v6(&dataplane, given, &uplink).await?,
        None => None,
    };
    node::register(&store, &node_name, address, address_v6)
        .await
        .context("registering the Node")?;
    info!(node = %node_name, %address, address_v6 = ?address_v6, %uplink, uplink_mtu, "node registered");

    let ipam = Arc::new(Ipam::new(store.clone()));
    let shared = Arc::new(Shared::default());
    shared.beat();
    let pods = PodNetwork {
        node: node_name.clone(),
        store: store.clone(),
        ipam: ipam.clone(),
        wirer: dataplane.pod_wirer(),
        shared: shared.clone(),
        mtu: pod_mtu,
        kube: pod_api,
    };
    let restored = pods
        .load_endpoints()
        .await
        .context("loading this node's workload endpoints")?;
    info!(endpoints = restored, "local endpoints loaded");

    let listener = server::bind_api(&args.socket)
        .with_context(|| format!("binding the API socket {}", args.socket.display()))?;
    let api = Arc::new(ApiState {
        pods,
        shared: shared.clone(),
        node_ip: address.to_string(),
    });
    tokio::spawn(server::serve_api(listener, api));

    if args.health_listen != "off" {
        let addr: SocketAddr = args
            .health_listen
            .parse()
            .with_context(|| format!("--health-listen {:?}", args.health_listen))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the health server on {addr}"))?;
        tokio::spawn(server::serve_health(listener, shared.clone()));
    }

    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::new(registry.clone()).context("registering the metrics")?);
    // The speaker's per-peer series (`--routing bgp`), refreshed from its status every 5 s;
    // the speaker may be restarted, so it is looked up each time.
    let bgp_metrics = Arc::new(
        brindle_agent::bgp_metrics::BgpMetrics::new(&registry)
            .context("registering the BGP metrics")?,
    );
    {
        let (shared, bgp_metrics) = (shared.clone(), bgp_metrics.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let peers = match shared.speaker() {
                    Some(speaker) => speaker.peers().await.unwrap_or_default(),
                    None => Vec::new(),
                };
                bgp_metrics.update(&peers);
            }
        });
    }
    if args.metrics_listen != "off" {
        let addr: SocketAddr = args
            .metrics_listen
            .parse()
            .with_context(|| format!("--metrics-listen {:?}", args.metrics_listen))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics server on {addr}"))?;
        tokio::spawn(brindle_agent::metrics::serve(listener, metrics.clone()));
    }

    tokio::spawn(brindle_agent::ipam_gc::run(
        brindle_agent::ipam_gc::GcConfig {
            node: node_name.clone(),
            interval: Duration::from_secs(args.ipam_gc_interval.max(1)),
            leak_grace: Duration::from_secs(args.ipam_leak_grace),
            empty_block_grace: Duration::from_secs(args.empty_block_grace),
        },
        store.clone(),
        ipam.clone(),
        shared.clone(),
    ));

    let config = ControllerConfig {
        local: LocalNode {
            name: node_name,
            address,
            uplink,
            vxlan_mtu,
            ipip_mtu,
        },
        resync_interval: Duration::from_secs(args.resync_interval.max(1)),
        pod_mtu,
        metrics,
        autodetect: match internal_ip {
            Some(rx) => Some(Redetect::KubernetesInternalIp(rx)),
            None => given_ip.is_none().then_some(Redetect::Interfaces(method)),
        },
    };
    tokio::spawn(datastore_health::run(
        store.clone(),
        shared.clone(),
        datastore_health::PROBE_INTERVAL,
    ));
    if args.routing == RoutingMode::Bgp {
        // Before the controller's first pass: in BGP mode no route to another node comes from
        // the datastore, only what the speaker learns.
        shared.update_learned(|_| {});
        shared
            .bgp_initial_tables_pending
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let routing = RoutingConfig {
            node: config.local.name.clone(),
            hold_time: args.bgp_hold_time,
            graceful_restart_time: args.bgp_restart_time,
            secrets_dir: args.bgp_secrets_dir.clone(),
        };
        info!("routing: BGP");
        tokio::spawn(bgp_routing::run(routing, store.clone(), shared.clone()));
    }
    let controller = tokio::spawn(controller::run(config, store, ipam, dataplane, shared));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted; stopping"),
        _ = term.recv() => info!("terminated; stopping"),
        r = controller => warn!(result = ?r, "controller ended"),
    }
    // Kernel state stays: pods keep their routes while the agent is away.
    let _ = std::fs::remove_file(&args.socket);
    info!("stopped; routes left in place");
    Ok(())
}
