//! Pod networking on behalf of the CNI plugin: allocate, wire, record; and the reverse.
//!
//! ADD: the IPAM handle `<network>.<containerID>` gets an IPv4 address, an IPv6 address or one
//! of each (see [`crate::pod_defaults`]; the same ones again on a repeated ADD) while the veth
//! pair is created and its host side configured, both at once; then the pod's side is wired
//! while the WorkloadEndpoint is written, and the pod is registered as a local endpoint (so the
//! route programmer keeps its host route). A failure at any step undoes the earlier ones, so a
//! failed ADD leaks neither an address nor an interface.
//!
//! DEL removes the host routes, releases the addresses and deletes the WorkloadEndpoint; the
//! veth pair is deleted in the background (the kernel's part of that takes 10-30 ms and nothing
//! waits for it, see dataplane/reaper.rs). It succeeds when things are already gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use brindle_ipam::store::{Store, StoreError, StoreExt};
use brindle_ipam::{AssignRequest, Ipam};
use ipnet::IpNet;
use tracing::{debug, info, warn};

use crate::api::{codes, ApiError, CniAddRequest, CniAddResponse, CniDelRequest, PodRoute};
use crate::controller::Shared;
use crate::dataplane::{
    host_veth_name, host_veth_name_for_container, PodSpec, PodWirer, PodWiring,
};
use crate::kube_pod;
use crate::model::{AllowedUse, IpPoolSpec, Object, WorkloadEndpointSpec};
use crate::pod_defaults::{pod_defaults, MtuConfig, PodDefaults};
use crate::routes::LocalEndpoint;

/// The WorkloadEndpoint annotation recording the CNI network name (half of the IPAM handle).
pub(crate) const NETWORK_ANNOTATION: &str = "brindle.dev/network";

/// The allocation attribute recording the CNI network name.
pub(crate) const NETWORK_ATTR: &str = "network";

/// Everything a pod request needs.
pub struct PodNetwork {
    pub node: String,
    pub store: Arc<dyn Store>,
    pub ipam: Arc<Ipam>,
    pub wirer: PodWirer,
    pub shared: Arc<Shared>,
    /// How the pods' MTU is found when the conflist sets none (the controller's copy in
    /// [`Shared::pod_defaults`] is used once it has one).
    pub mtu: MtuConfig,
    /// The Kubernetes API, when the datastore is `kubernetes`: pods' labels are read from their
    /// Pod and their addresses written to it as annotations (see [`crate::kube_pod`]).
    pub kube: Option<kube::Client>,
}

fn err(code: u32, msg: impl Into<String>, details: impl ToString) -> ApiError {
    ApiError {
        code,
        msg: msg.into(),
        details: details.to_string(),
    }
}

fn store_err(what: &str, e: StoreError) -> ApiError {
    let code = if matches!(e, StoreError::Unavailable(_)) {
        codes::TRY_AGAIN
    } else {
        codes::INTERNAL
    };
    err(code, format!("datastore: {what}"), e)
}

/// Calico's segment escaping for endpoint names: `-` becomes `--`.
fn escape(s: &str) -> String {
    s.replace('-', "--")
}

/// The WorkloadEndpoint name: `<node>-k8s-<namespace>-<pod>-<if>` or `<node>-cni-<id>-<if>`.
pub fn endpoint_name(
    node: &str,
    namespace: Option<&str>,
    pod: Option<&str>,
    container_id: &str,
    ifname: &str,
) -> String {
    match (namespace, pod) {
        (Some(ns), Some(pod)) => format!(
            "{}-k8s-{}-{}-{}",
            escape(node),
            escape(ns),
            escape(pod),
            escape(ifname)
        ),
        _ => format!(
            "{}-cni-{}-{}",
            escape(node),
            escape(container_id),
            escape(ifname)
        ),
    }
}

pub(crate) fn host_ifname(
    namespace: Option<&str>,
    pod: Option<&str>,
    container_id: &str,
) -> String {
    match (namespace, pod) {
        (Some(ns), Some(pod)) => host_veth_name(ns, pod),
        _ => host_veth_name_for_container(container_id),
    }
}

pub(crate) fn handle_id(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}

fn validate_ids(container_id: &str, ifname: &str) -> Result<(), ApiError> {
    if container_id.is_empty()
        || !container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(err(
            codes::INVALID_ENV,
            "invalid CNI_CONTAINERID",
            format!("{container_id:?}: must be non-empty ASCII letters, digits, '-', '_' or '.'"),
        ));
    }
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ', ':']) {
        return Err(err(
            codes::INVALID_ENV,
            "invalid CNI_IFNAME",
            format!("{ifname:?}: must be a Linux interface name of 1 to 15 characters"),
        ));
    }
    Ok(())
}

/// How many addresses of each family an ADD asks IPAM for: the conflist's `assign_ipv4` /
/// `assign_ipv6` where set, the pools otherwise. With neither family available from the pools,
/// IPv4 is asked for, so that IPAM's "no pool" error reaches the user.
fn families(req: &CniAddRequest, defaults: &PodDefaults) -> Result<(usize, usize), ApiError> {
    let v4 = req.assign_ipv4.unwrap_or(defaults.ipv4);
    let v6 = req.assign_ipv6.unwrap_or(defaults.ipv6);
    match (v4, v6) {
        (false, false) if req.assign_ipv4 == Some(false) && req.assign_ipv6 == Some(false) => {
            Err(err(
                codes::INVALID_CONFIG,
                "assign_ipv4 and assign_ipv6 are both false",
                "the pod would get no address",
            ))
        }
        (false, false) if req.assign_ipv4 == Some(false) => Ok((0, 1)),
        (false, false) => Ok((1, 0)),
        (v4, v6) => Ok((usize::from(v4), usize::from(v6))),
    }
}

/// The routes the CNI result lists: a default route per family the pod has.
fn result_routes(ips: &[IpNet]) -> Vec<PodRoute> {
    let mut routes = Vec::new();
    if ips.iter().any(|ip| ip.addr().is_ipv4()) {
        routes.push(PodRoute {
            dst: "0.0.0.0/0".to_string(),
            gw: Some(crate::dataplane::POD_GATEWAY_V4.to_string()),
        });
    }
    if ips.iter().any(|ip| ip.addr().is_ipv6()) {
        routes.push(PodRoute {
            dst: "::/0".to_string(),
            gw: Some(crate::dataplane::POD_GATEWAY_V6.to_string()),
        });
    }
    routes
}

impl PodNetwork {
    /// The pools' defaults: the controller's, or computed from the datastore while the
    /// controller has not loaded it yet (the first pods after the agent starts).
    async fn defaults(&self) -> Result<PodDefaults, ApiError> {
        if let Some(d) = self.shared.pod_defaults() {
            return Ok(d);
        }
        let (pools, _) = self
            .store
            .list_objs::<IpPoolSpec>()
            .await
            .map_err(|e| store_err("listing IP pools", e))?;
        Ok(pod_defaults(pools.iter().map(|p| &p.spec), &self.mtu))
    }

    pub async fn add(&self, req: &CniAddRequest) -> Result<CniAddResponse, ApiError> {
        validate_ids(&req.container_id, &req.ifname)?;
        let ns = req.pod_namespace.as_deref();
        let pod = req.pod_name.as_deref();
        let handle = handle_id(&req.network, &req.container_id);
        let host_if = host_ifname(ns, pod, &req.container_id);
        if let Some(resp) = self.already_added(req).await {
            return Ok(resp);
        }
        let mut attrs: BTreeMap<String, String> = [
            ("node".to_string(), self.node.clone()),
            // CNI GC finds the network's allocations by it; the handle alone is ambiguous when
            // network names contain dots.
            (NETWORK_ATTR.to_string(), req.network.clone()),
        ]
        .into();
        if let (Some(ns), Some(pod)) = (ns, pod) {
            attrs.insert("namespace".to_string(), ns.to_string());
            attrs.insert("pod".to_string(), pod.to_string());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        attrs.insert("timestamp".to_string(), now.to_string());
        let defaults = self.defaults().await?;
        let (num, num_v6) = families(req, &defaults)?;
        let mut spec = PodSpec {
            netns: req.netns.clone(),
            ifname: req.ifname.clone(),
            host_ifname: host_if.clone(),
            ips: Vec::new(),
            mtu: req.mtu.filter(|m| *m > 0).unwrap_or(defaults.mtu),
        };

        // The address and the veth pair do not depend on each other: both at once.
        let assign = async {
            self.ipam
                .auto_assign(&AssignRequest {
                    handle_id: handle.clone(),
                    node: self.node.clone(),
                    num,
                    num_v6,
                    attrs,
                    use_: AllowedUse::Workload,
                    pools: None,
                    ..AssignRequest::default()
                })
                .await
                .map_err(|e| {
                    let code = if e.is_capacity() {
                        codes::NO_ADDRESS
                    } else {
                        codes::INTERNAL
                    };
                    err(code, "no address could be allocated", e)
                })
        };
        let (assigned, pair) = tokio::join!(assign, self.wirer.create_pair(&spec));
        let name = endpoint_name(&self.node, ns, pod, &req.container_id, &req.ifname);
        let result = match (assigned, pair) {
            (Ok(ips), Ok(pair)) => {
                spec.ips = ips
                    .iter()
                    .filter_map(|ip| IpNet::new(ip.addr(), ip.max_prefix_len()).ok())
                    .collect();
                self.wire_and_record(req, &handle, &name, &spec, pair).await
            }
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(wiring_err(e)),
        };
        match result {
            Ok(resp) => {
                info!(container = %req.container_id, pod = ?pod, ips = ?spec.ips, host_if = %host_if, "pod added");
                Ok(resp)
            }
            Err(e) => {
                warn!(container = %req.container_id, error = %e.msg, details = %e.details, "pod add failed; undoing");
                self.shared.endpoints_mut().remove(&handle);
                if let Err(te) = self.wirer.teardown(&host_if).await {
                    warn!(error = %te, host_if = %host_if, "undo: removing the veth failed");
                }
                if let Err(re) = self.ipam.release_by_handle(&handle).await {
                    warn!(error = %re, handle = %handle, "undo: releasing the address failed");
                }
                if let Err(de) =
                    delete_endpoint(self.store.as_ref(), &name, &req.container_id).await
                {
                    warn!(error = %de, endpoint = %name, "undo: deleting the workload endpoint failed");
                }
                Err(e)
            }
        }
    }

    /// After the address and the veth pair exist: the pod's side wired and the
    /// WorkloadEndpoint written, both at once.
    async fn wire_and_record(
        &self,
        req: &CniAddRequest,
        handle: &str,
        name: &str,
        spec: &PodSpec,
        pair: PodWiring,
    ) -> Result<CniAddResponse, ApiError> {
        let orchestrator = if req.pod_name.is_some() { "k8s" } else { "cni" };
        let wep = WorkloadEndpointSpec {
            orchestrator: orchestrator.to_string(),
            node: self.node.clone(),
            namespace: req.pod_namespace.clone().unwrap_or_default(),
            pod: req.pod_name.clone().unwrap_or_default(),
            endpoint: req.ifname.clone(),
            container_id: req.container_id.clone(),
            ip_networks: spec.ips.iter().map(ToString::to_string).collect(),
            interface_name: spec.host_ifname.clone(),
            mac: pair.container_mac.clone(),
        };
        // The Pod's labels are read while the pod's side is wired.
        let record = async {
            let labels = self.endpoint_labels(req, orchestrator).await;
            write_endpoint(self.store.as_ref(), name, wep, labels, &req.network).await
        };
        let (wired, recorded) = tokio::join!(self.wirer.finish(spec, &pair), record);
        wired.map_err(wiring_err)?;
        recorded.map_err(|e| store_err("recording the workload endpoint", e))?;
        // Known to the route programmer only once wired: it never races the wiring for the
        // host route (which is the wirer's, and protected for a while, see dataplane/pod.rs).
        self.shared.endpoints_mut().insert(
            handle.to_string(),
            LocalEndpoint {
                ips: spec.ips.clone(),
                host_ifname: spec.host_ifname.clone(),
            },
        );
        self.shared.kick.notify_one();
        self.annotate_pod(req, &spec.ips);

        Ok(CniAddResponse {
            host_interface: spec.host_ifname.clone(),
            container_interface: req.ifname.clone(),
            container_mac: pair.container_mac,
            mtu: spec.mtu,
            ips: spec.ips.iter().map(ToString::to_string).collect(),
            routes: result_routes(&spec.ips),
        })
    }

    /// The WorkloadEndpoint's labels: for a Kubernetes pod, its namespace and, when the
    /// datastore is `kubernetes`, the Pod's labels. A slow or failing API server costs at most
    /// [`kube_pod::POD_API_TIMEOUT`] and a warning, never the ADD: what is known is recorded.
    async fn endpoint_labels(
        &self,
        req: &CniAddRequest,
        orchestrator: &str,
    ) -> BTreeMap<String, String> {
        let (Some(ns), Some(pod)) = (req.pod_namespace.as_deref(), req.pod_name.as_deref()) else {
            return BTreeMap::new();
        };
        let pod_labels = match &self.kube {
            Some(client) => {
                match kube_pod::pod_labels(client, ns, pod, kube_pod::POD_API_TIMEOUT).await {
                    Ok(labels) => labels,
                    Err(e) => {
                        warn!(error = %e, "pod labels unknown; recording the endpoint without them");
                        BTreeMap::new()
                    }
                }
            }
            None => BTreeMap::new(),
        };
        kube_pod::endpoint_labels(pod_labels, ns, orchestrator)
    }

    /// Writes the pod's addresses to its Pod in the background (the ADD does not wait: the
    /// annotations are informational, as Calico's are), when the datastore is `kubernetes`.
    fn annotate_pod(&self, req: &CniAddRequest, ips: &[IpNet]) {
        let (Some(client), Some(ns), Some(pod)) = (
            self.kube.clone(),
            req.pod_namespace.clone(),
            req.pod_name.clone(),
        ) else {
            return;
        };
        let ips = ips.to_vec();
        tokio::spawn(async move {
            match kube_pod::annotate_pod_ips(&client, &ns, &pod, &ips, kube_pod::POD_API_TIMEOUT)
                .await
            {
                Ok(()) => debug!(namespace = %ns, %pod, ?ips, "pod annotated with its addresses"),
                Err(e) => warn!(error = %e, "annotating the pod with its addresses failed"),
            }
        });
    }

    /// A repeated ADD for the same container and interface (CNI spec: ADD is idempotent): the
    /// recorded answer when the pod's endpoint exists and its wiring still checks out; `None`
    /// (do the whole ADD) otherwise. Costs nothing for a new pod: it is not in `endpoints`.
    async fn already_added(&self, req: &CniAddRequest) -> Option<CniAddResponse> {
        let handle = handle_id(&req.network, &req.container_id);
        if !self.shared.endpoints().contains_key(&handle) {
            return None;
        }
        match self.check(req).await {
            Ok(resp) => {
                info!(container = %req.container_id, "repeated ADD: the pod is wired as recorded; returning the same result");
                Some(resp)
            }
            Err(e) => {
                info!(container = %req.container_id, differences = %e.msg, "repeated ADD: the pod's wiring differs; wiring it again");
                None
            }
        }
    }

    pub async fn del(&self, req: &CniDelRequest) -> Result<(), ApiError> {
        validate_ids(&req.container_id, &req.ifname)?;
        let ns = req.pod_namespace.as_deref();
        let pod = req.pod_name.as_deref();
        let handle = handle_id(&req.network, &req.container_id);
        let host_if = host_ifname(ns, pod, &req.container_id);
        let name = endpoint_name(&self.node, ns, pod, &req.container_id, &req.ifname);

        // A DEL for an older sandbox of the same pod must not remove the current one's endpoint.
        let endpoint = self
            .store
            .get_obj::<WorkloadEndpointSpec>(&name)
            .await
            .map_err(|e| store_err("reading the workload endpoint", e))?;
        let current = endpoint
            .as_ref()
            .is_none_or(|ep| ep.spec.container_id == req.container_id);

        let local = self.shared.endpoints_mut().remove(&handle);
        if current {
            // The host routes go now, the veth pair in the background (pod.rs, reaper.rs).
            let ips: Vec<IpNet> = match (local, &endpoint) {
                (Some(local), _) => local.ips,
                (None, Some(ep)) => ep
                    .spec
                    .ip_networks
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                (None, None) => Vec::new(),
            };
            self.wirer
                .release(&host_if, &ips)
                .await
                .map_err(|e| err(codes::INTERNAL, "removing the pod's interface failed", e))?;
        }
        self.ipam
            .release_by_handle(&handle)
            .await
            .map_err(|e| err(codes::TRY_AGAIN, "releasing the pod's address failed", e))?;
        if let Some(ep) = endpoint.filter(|_| current) {
            match self.store.delete_obj(&ep).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(store_err("deleting the workload endpoint", e)),
            }
        }
        self.shared.kick.notify_one();
        info!(container = %req.container_id, pod = ?pod, "pod deleted");
        Ok(())
    }

    /// CNI CHECK: the pod's endpoint must exist with this container ID and its wiring must be as
    /// recorded. Returns the recorded answer (what ADD returned) so the plugin can compare it
    /// with `prevResult`; the error's message lists every difference.
    pub async fn check(&self, req: &CniAddRequest) -> Result<CniAddResponse, ApiError> {
        validate_ids(&req.container_id, &req.ifname)?;
        let name = endpoint_name(
            &self.node,
            req.pod_namespace.as_deref(),
            req.pod_name.as_deref(),
            &req.container_id,
            &req.ifname,
        );
        let Some(ep) = self
            .store
            .get_obj::<WorkloadEndpointSpec>(&name)
            .await
            .map_err(|e| store_err("reading the workload endpoint", e))?
        else {
            return Err(err(
                codes::UNKNOWN_CONTAINER,
                "no workload endpoint for this container",
                name,
            ));
        };
        if ep.spec.container_id != req.container_id {
            return Err(err(
                codes::UNKNOWN_CONTAINER,
                format!(
                    "workload endpoint {name} belongs to container {}, not {}",
                    ep.spec.container_id, req.container_id
                ),
                "",
            ));
        }
        let ips: Vec<IpNet> = ep
            .spec
            .ip_networks
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let mtu = match req.mtu.filter(|m| *m > 0) {
            Some(mtu) => mtu,
            None => self.defaults().await?.mtu,
        };
        self.wirer
            .check(&PodSpec {
                netns: req.netns.clone(),
                ifname: req.ifname.clone(),
                host_ifname: ep.spec.interface_name.clone(),
                ips: ips.clone(),
                mtu,
            })
            .await
            .map_err(|e| {
                let code = match e {
                    crate::dataplane::DataplaneError::Netns { .. } => codes::UNKNOWN_CONTAINER,
                    _ => codes::INTERNAL,
                };
                // The differences go into the message: runtimes show `msg` and drop `details`.
                err(
                    code,
                    format!("the pod's network differs from what was set up: {e}"),
                    "",
                )
            })?;
        Ok(CniAddResponse {
            host_interface: ep.spec.interface_name.clone(),
            container_interface: req.ifname.clone(),
            container_mac: ep.spec.mac.clone(),
            mtu,
            ips: ips.iter().map(ToString::to_string).collect(),
            routes: result_routes(&ips),
        })
    }

    /// Loads this node's endpoints from the datastore, so their host routes are kept across an
    /// agent restart.
    pub async fn load_endpoints(&self) -> Result<usize, StoreError> {
        let (eps, _) = self.store.list_objs::<WorkloadEndpointSpec>().await?;
        let mut endpoints = self.shared.endpoints_mut();
        for ep in eps.into_iter().filter(|ep| ep.spec.node == self.node) {
            let network = ep.metadata.annotations.get(NETWORK_ANNOTATION).cloned();
            let key = match network {
                Some(net) => handle_id(&net, &ep.spec.container_id),
                None => ep.metadata.name.clone(),
            };
            endpoints.insert(
                key,
                LocalEndpoint {
                    ips: ep
                        .spec
                        .ip_networks
                        .iter()
                        .filter_map(|s| s.parse().ok())
                        .collect(),
                    host_ifname: ep.spec.interface_name.clone(),
                },
            );
        }
        Ok(endpoints.len())
    }
}

fn wiring_err(e: crate::dataplane::DataplaneError) -> ApiError {
    let code = match e {
        crate::dataplane::DataplaneError::Netns { .. } => codes::UNKNOWN_CONTAINER,
        _ => codes::INTERNAL,
    };
    // The cause goes into the message: it is what the runtime's event shows.
    err(code, format!("wiring the pod failed: {e}"), "")
}

/// Deletes the endpoint record `name` if it belongs to `container_id` (a failed ADD must not
/// remove the record of another sandbox of the same pod).
async fn delete_endpoint(
    store: &dyn Store,
    name: &str,
    container_id: &str,
) -> Result<(), StoreError> {
    match store.get_obj::<WorkloadEndpointSpec>(name).await? {
        Some(ep) if ep.spec.container_id == container_id => match store.delete_obj(&ep).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        },
        _ => Ok(()),
    }
}

/// Creates or replaces the endpoint record.
async fn write_endpoint(
    store: &dyn Store,
    name: &str,
    spec: WorkloadEndpointSpec,
    labels: BTreeMap<String, String>,
    network: &str,
) -> Result<(), StoreError> {
    for _ in 0..100 {
        let existing = store.get_obj::<WorkloadEndpointSpec>(name).await?;
        let exists = existing.is_some();
        let mut ep = existing.unwrap_or_else(|| Object::new(name, spec.clone()));
        ep.spec = spec.clone();
        ep.metadata.labels = labels.clone();
        ep.metadata
            .annotations
            .insert(NETWORK_ANNOTATION.to_string(), network.to_string());
        let result = if exists {
            store.update_obj(&ep).await.map(|_| ())
        } else {
            store.create_obj(&ep).await.map(|_| ())
        };
        match result {
            Err(e) if e.is_conflict() => continue,
            other => return other,
        }
    }
    Err(StoreError::Unavailable(format!(
        "WorkloadEndpoint {name}: too many concurrent modifications"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_escape_dashes_like_calico() {
        assert_eq!(
            endpoint_name("node1", Some("default"), Some("pod-1"), "abc", "eth0"),
            "node1-k8s-default-pod--1-eth0"
        );
        assert_eq!(
            endpoint_name("node-1", None, None, "abc123", "eth0"),
            "node--1-cni-abc123-eth0"
        );
    }

    fn add_request(v4: Option<bool>, v6: Option<bool>) -> CniAddRequest {
        CniAddRequest {
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            network: "net".into(),
            pod_namespace: None,
            pod_name: None,
            mtu: None,
            assign_ipv4: v4,
            assign_ipv6: v6,
        }
    }

    #[test]
    fn families_come_from_the_pools_unless_the_conflist_says() {
        let pools = |ipv4, ipv6| PodDefaults {
            ipv4,
            ipv6,
            mtu: 1450,
        };
        let dual = pools(true, true);
        let v4_only = pools(true, false);
        let none = pools(false, false);
        let ok = |req, d| families(&req, &d).expect("families");
        assert_eq!(ok(add_request(None, None), dual), (1, 1));
        assert_eq!(ok(add_request(None, None), v4_only), (1, 0));
        assert_eq!(ok(add_request(None, Some(false)), dual), (1, 0));
        assert_eq!(ok(add_request(Some(false), None), dual), (0, 1));
        // Asked for explicitly: asked of IPAM even without a pool, which then says why not.
        assert_eq!(ok(add_request(None, Some(true)), v4_only), (1, 1));
        assert_eq!(ok(add_request(None, None), none), (1, 0));
        assert_eq!(ok(add_request(Some(false), None), none), (0, 1));
        let e = families(&add_request(Some(false), Some(false)), &dual).expect_err("no family");
        assert_eq!(e.code, codes::INVALID_CONFIG);
    }

    #[test]
    fn the_result_has_a_default_route_per_family() {
        let v4: IpNet = "10.244.0.5/32".parse().expect("ip");
        let v6: IpNet = "fd00::5/128".parse().expect("ip");
        let routes = result_routes(&[v4, v6]);
        assert_eq!(
            routes,
            vec![
                PodRoute {
                    dst: "0.0.0.0/0".into(),
                    gw: Some("169.254.1.1".into())
                },
                PodRoute {
                    dst: "::/0".into(),
                    gw: Some("fe80::ecee:eeff:feee:eeee".into())
                }
            ]
        );
        assert_eq!(result_routes(&[v6]).len(), 1);
    }

    #[test]
    fn container_ids_and_ifnames_are_validated() {
        assert!(validate_ids("abc-123_x.y", "eth0").is_ok());
        assert_eq!(
            validate_ids("", "eth0").expect_err("empty").code,
            codes::INVALID_ENV
        );
        assert!(validate_ids("a/b", "eth0").is_err());
        assert!(validate_ids("abc", "averyveryverylongname").is_err());
        assert!(validate_ids("abc", "").is_err());
    }
}
