//! Full resync: dump what the kernel holds, compare it with what is desired, write the
//! difference (Felix's route table, without the incremental half).
//!
//! Ownership is exact, never guessed: routes are ours if and only if their protocol is
//! [`RTPROT_BRINDLE`]; neighbours and FDB entries are ours if they are PERMANENT and sit on
//! [`VXLAN_DEVICE`]. Every write that fails is recorded in the report and simply attempted again
//! by the next pass, which sees the same difference; one failure never stops the others.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use futures::StreamExt;
use ipnet::{IpNet, Ipv4Net};

use super::kernel::WRITES_IN_FLIGHT as IN_FLIGHT;
use super::kernel::{Kernel, KernelRoute};
use super::{
    ApplyReport, DataplaneError, DesiredState, FdbEntry, IpipDevice, Mac, Neighbor, VxlanDevice,
    IPIP_DEVICE, RTPROT_BRINDLE, VXLAN_DEVICE,
};

/// Routes Brindle installed outside [`reconcile`] (a pod's host route, written by the CNI path)
/// that the desired state may not know yet: destination -> device. They are left alone even if
/// not desired, for a grace period the caller manages.
pub(crate) type ProtectedRoutes = BTreeMap<IpNet, String>;

/// Brings the kernel to `desired`. Fails only if the route table cannot be read at all.
pub(crate) async fn reconcile<K: Kernel>(
    kernel: &K,
    desired: &DesiredState,
    protected: &ProtectedRoutes,
) -> Result<ApplyReport, DataplaneError> {
    let mut report = ApplyReport::default();
    // The device first: neighbours, FDB entries and tunnel routes all hang off it.
    let mut stale_addresses = Vec::new();
    let vxlan_ready = reconcile_vxlan(
        kernel,
        desired.vxlan.as_ref(),
        &mut stale_addresses,
        &mut report,
    )
    .await;
    // The entries the tunnel routes need are written before the routes, and the ones no route
    // needs any more are removed only after the routes moved away from them: a packet routed
    // into the tunnel in between would wait for an ARP answer that never comes and be dropped
    // (a pool going from VXLAN to Never lost a ping that way).
    let stale_neighbors =
        reconcile_neighbors(kernel, &desired.neighbors, vxlan_ready, &mut report).await;
    let stale_fdb = reconcile_fdb(kernel, &desired.fdb, vxlan_ready, &mut report).await;
    let mut stale_ipip_addresses = Vec::new();
    reconcile_ipip(
        kernel,
        desired.ipip.as_ref(),
        &mut stale_ipip_addresses,
        &mut report,
    )
    .await;
    let routes = reconcile_routes(kernel, &desired.routes, protected, &mut report).await;
    for result in pipelined(
        stale_neighbors,
        |n| async move { kernel.del_neighbor(&n).await },
    )
    .await
    {
        match result {
            Ok(()) => report.neighbors_changed += 1,
            Err(e) => report.error(e),
        }
    }
    for result in pipelined(stale_fdb, |e| async move { kernel.del_fdb(&e).await }).await {
        match result {
            Ok(()) => report.fdb_changed += 1,
            Err(err) => report.error(err),
        }
    }
    let stale_addresses = stale_addresses
        .into_iter()
        .map(|a| (VXLAN_DEVICE, a))
        .chain(stale_ipip_addresses.into_iter().map(|a| (IPIP_DEVICE, a)));
    for (device, addr) in stale_addresses {
        if let Err(e) = kernel.del_address(device, IpNet::V4(addr)).await {
            report.error(e);
        }
    }
    routes?;
    Ok(report)
}

impl ApplyReport {
    fn error(&mut self, e: impl std::fmt::Display) {
        let message = e.to_string();
        tracing::warn!(error = %message, "dataplane write failed; retried on the next pass");
        self.errors.push(message);
    }
}

/// Ensures the VXLAN device is as `want` says (or absent). Returns whether it exists now;
/// puts the addresses it should no longer have in `stale_addresses`.
async fn reconcile_vxlan<K: Kernel>(
    kernel: &K,
    want: Option<&VxlanDevice>,
    stale_addresses: &mut Vec<Ipv4Net>,
    report: &mut ApplyReport,
) -> bool {
    let current = match kernel.link(VXLAN_DEVICE).await {
        Ok(current) => current,
        Err(e) => {
            report.error(e);
            return false;
        }
    };
    let Some(want) = want else {
        if current.is_some() {
            tracing::info!(
                device = VXLAN_DEVICE,
                "removing VXLAN device: no longer wanted"
            );
            if let Err(e) = kernel.delete_link(VXLAN_DEVICE).await {
                report.error(e);
            }
        }
        return false;
    };

    let mut current = current;
    if let Some(link) = &current {
        if !link.is_vxlan_device(want) {
            // VNI, port, local address, parent and MAC are fixed at creation.
            tracing::info!(
                device = VXLAN_DEVICE,
                "recreating VXLAN device: parameters differ"
            );
            if let Err(e) = kernel.delete_link(VXLAN_DEVICE).await {
                report.error(e);
                return true;
            }
            current = None;
        }
    }
    match current {
        None => {
            tracing::info!(device = VXLAN_DEVICE, parent = %want.parent, "creating VXLAN device");
            if let Err(e) = kernel.create_vxlan(VXLAN_DEVICE, want).await {
                report.error(e);
                return false;
            }
        }
        Some(link) if link.mtu != want.mtu || !link.up => {
            if let Err(e) = kernel.set_link_mtu_up(VXLAN_DEVICE, want.mtu).await {
                report.error(e);
            }
        }
        Some(_) => {}
    }

    // Exactly one IPv4 address, the tunnel address as a /32, or none. The new one is added
    // here; the others are returned, to be removed after the routes: removing a device's last
    // IPv4 address makes the kernel flush every route through it, so a tunnel route still in
    // use would be gone until the pass rewrites it (a pool going from VXLAN to Never lost a
    // ping that way).
    let tunnel = want.tunnel_addr.map(Ipv4Net::from);
    match kernel.addresses_v4(VXLAN_DEVICE).await {
        Ok(addrs) => {
            if let Some(tunnel) = tunnel.filter(|t| !addrs.contains(t)) {
                if let Err(e) = kernel.add_address(VXLAN_DEVICE, IpNet::V4(tunnel)).await {
                    report.error(e);
                }
            }
            stale_addresses.extend(addrs.into_iter().filter(|a| Some(*a) != tunnel));
        }
        Err(e) => report.error(e),
    }
    true
}

/// Brings the kernel's fallback IPIP device up with `want`'s MTU and exactly one IPv4 address,
/// the tunnel address as a /32 (or none); the addresses to remove go to `stale_addresses`, for
/// after the routes (see [`reconcile_vxlan`]). The device comes with the `ipip` module; without it
/// the pass reports an error (and the tunnel routes fail on the missing device), retried later.
/// Without IPIP (`want` is `None`) the device's IPv4 addresses are removed, as Felix's
/// `cleanUpIPIPAddrs` does: a released tunnel address may be a pod's next.
async fn reconcile_ipip<K: Kernel>(
    kernel: &K,
    want: Option<&IpipDevice>,
    stale_addresses: &mut Vec<Ipv4Net>,
    report: &mut ApplyReport,
) {
    let link = match kernel.link(IPIP_DEVICE).await {
        Ok(Some(link)) => link,
        Ok(None) if want.is_none() => return,
        Ok(None) => {
            return report.error(format!(
                "{IPIP_DEVICE} does not exist: an IPIP pool needs the kernel's ipip module \
                 (modprobe ipip)"
            ))
        }
        Err(e) => return report.error(e),
    };
    let Some(want) = want else {
        match kernel.addresses_v4(IPIP_DEVICE).await {
            Ok(addrs) => {
                for addr in &addrs {
                    tracing::info!(device = IPIP_DEVICE, %addr, "removing address: no IPIP pool");
                }
                stale_addresses.extend(addrs);
            }
            Err(e) => report.error(e),
        }
        return;
    };
    if link.mtu != want.mtu || !link.up {
        if let Err(e) = kernel.set_link_mtu_up(IPIP_DEVICE, want.mtu).await {
            report.error(e);
        }
    }
    let tunnel = want.tunnel_addr.map(Ipv4Net::from);
    match kernel.addresses_v4(IPIP_DEVICE).await {
        Ok(addrs) => {
            if let Some(tunnel) = tunnel.filter(|t| !addrs.contains(t)) {
                if let Err(e) = kernel.add_address(IPIP_DEVICE, IpNet::V4(tunnel)).await {
                    report.error(e);
                }
            }
            stale_addresses.extend(addrs.into_iter().filter(|a| Some(*a) != tunnel));
        }
        Err(e) => report.error(e),
    }
}

/// Splits desired entries into those on the VXLAN device and reports the others: only the
/// VXLAN device's entries are Brindle's to manage.
fn on_vxlan_device<'a, T: std::fmt::Debug + 'a>(
    entries: impl Iterator<Item = &'a T>,
    dev_of: impl Fn(&T) -> &str,
    what: &str,
    report: &mut ApplyReport,
) -> Vec<&'a T> {
    let mut out = Vec::new();
    for entry in entries {
        if dev_of(entry) == VXLAN_DEVICE {
            out.push(entry);
        } else {
            report.error(format!(
                "{what} {entry:?}: only entries on {VXLAN_DEVICE} are managed"
            ));
        }
    }
    out
}

/// Writes the missing and changed neighbour entries; returns the stale ones, for the caller to
/// remove once the routes no longer use them.
async fn reconcile_neighbors<K: Kernel>(
    kernel: &K,
    desired: &BTreeSet<Neighbor>,
    vxlan_ready: bool,
    report: &mut ApplyReport,
) -> Vec<Neighbor> {
    let desired = on_vxlan_device(desired.iter(), |n| &n.dev, "neighbour", report);
    if !vxlan_ready {
        if !desired.is_empty() {
            report.error(format!(
                "{} neighbour entries pending: {VXLAN_DEVICE} does not exist",
                desired.len()
            ));
        }
        return Vec::new();
    }
    let actual = match kernel.neighbors(VXLAN_DEVICE).await {
        Ok(actual) => actual,
        Err(e) => {
            report.error(e);
            return Vec::new();
        }
    };
    let want: BTreeMap<IpAddr, Mac> = desired.iter().map(|n| (n.ip, n.mac)).collect();
    let have: BTreeMap<IpAddr, Mac> = actual.iter().map(|n| (n.ip, n.mac)).collect();

    // Owned items: a future borrowing its item is not `Send` through `buffer_unordered`.
    let stale: Vec<Neighbor> = actual
        .iter()
        .filter(|n| !want.contains_key(&n.ip))
        .cloned()
        .collect();
    // A changed MAC is replaced in place.
    let changed = desired
        .iter()
        .filter(|n| have.get(&n.ip) != Some(&n.mac))
        .map(|n| (*n).clone())
        .collect::<Vec<_>>();
    for result in pipelined(changed, |n| async move { kernel.set_neighbor(&n).await }).await {
        match result {
            Ok(()) => report.neighbors_changed += 1,
            Err(e) => report.error(e),
        }
    }
    stale
}

/// Adds the missing FDB entries; returns the stale ones, for the caller to remove once the
/// routes no longer use them.
async fn reconcile_fdb<K: Kernel>(
    kernel: &K,
    desired: &BTreeSet<FdbEntry>,
    vxlan_ready: bool,
    report: &mut ApplyReport,
) -> Vec<FdbEntry> {
    let desired: BTreeSet<&FdbEntry> =
        on_vxlan_device(desired.iter(), |e| &e.dev, "fdb entry", report)
            .into_iter()
            .collect();
    if !vxlan_ready {
        if !desired.is_empty() {
            report.error(format!(
                "{} fdb entries pending: {VXLAN_DEVICE} does not exist",
                desired.len()
            ));
        }
        return Vec::new();
    }
    let actual = match kernel.fdb(VXLAN_DEVICE).await {
        Ok(actual) => actual,
        Err(e) => {
            report.error(e);
            return Vec::new();
        }
    };
    let have: BTreeSet<&FdbEntry> = actual.iter().collect();
    // Add first: a VTEP whose node IP changed keeps a destination throughout.
    let add: Vec<FdbEntry> = desired.difference(&have).map(|e| (*e).clone()).collect();
    for result in pipelined(add, |e| async move { kernel.add_fdb(&e).await }).await {
        match result {
            Ok(()) => report.fdb_changed += 1,
            Err(err) => report.error(err),
        }
    }
    have.difference(&desired).map(|e| (*e).clone()).collect()
}

pub(crate) async fn reconcile_routes<K: Kernel>(
    kernel: &K,
    desired: &BTreeMap<IpNet, super::RouteTarget>,
    protected: &ProtectedRoutes,
    report: &mut ApplyReport,
) -> Result<(), DataplaneError> {
    let all = kernel.routes().await?;
    let mut ours: BTreeMap<IpNet, Vec<&KernelRoute>> = BTreeMap::new();
    let mut foreign: BTreeSet<IpNet> = BTreeSet::new();
    for route in &all {
        if route.protocol == RTPROT_BRINDLE {
            ours.entry(route.dst).or_default().push(route);
        } else {
            foreign.insert(route.dst);
        }
    }

    // Stale routes go first, so that a route moving between prefixes never has both.
    let stale = ours
        .iter()
        .filter(|(dst, _)| !desired.contains_key(dst))
        .flat_map(|(dst, routes)| routes.iter().map(move |route| (dst, *route)))
        .filter(|(dst, route)| {
            protected
                .get(dst)
                .is_none_or(|dev| route.dev.as_ref() != Some(dev))
        })
        .map(|(_, route)| route.clone())
        .collect::<Vec<_>>();
    for result in pipelined(stale, |route| async move { kernel.del_route(&route).await }).await {
        match result {
            Ok(()) => report.routes_removed += 1,
            Err(e) => report.error(e),
        }
    }

    // Per destination: its duplicates or wrong routes deleted, then the desired one written,
    // in that order; destinations in parallel.
    let mut plans = Vec::new();
    for (dst, target) in desired {
        let mine = ours.get(dst).map(Vec::as_slice).unwrap_or_default();
        let (matching, others): (Vec<&KernelRoute>, Vec<&KernelRoute>) = mine
            .iter()
            .partition(|r| r.target().as_ref() == Some(target));
        if let Some(keep) = matching.first() {
            // Duplicates (another metric or TOS) of a correct route are stale.
            let deletes: Vec<KernelRoute> = others
                .iter()
                .chain(matching.iter().skip(1))
                .filter(|route| *route != keep)
                .map(|route| (*route).clone())
                .collect();
            if !deletes.is_empty() {
                plans.push(RoutePlan {
                    dst: *dst,
                    deletes,
                    add: None,
                });
            }
            continue;
        }
        // Replacing in place is safe only if no foreign route shares the destination: the
        // kernel would otherwise overwrite whichever route holds the key.
        let replace = !others.is_empty() && !foreign.contains(dst);
        let deletes = if replace { &others[1..] } else { &others[..] };
        plans.push(RoutePlan {
            dst: *dst,
            deletes: deletes.iter().map(|route| (*route).clone()).collect(),
            add: Some((target.clone(), replace)),
        });
    }
    let done = pipelined(plans, |plan| async move {
        let mut deleted = Vec::with_capacity(plan.deletes.len());
        for route in &plan.deletes {
            deleted.push(kernel.del_route(route).await);
        }
        let added = match plan.add {
            Some((target, replace)) => Some(kernel.add_route(plan.dst, &target, replace).await),
            None => None,
        };
        (plan.dst, deleted, added)
    })
    .await;
    for (dst, deleted, added) in done {
        for result in deleted {
            match result {
                Ok(()) => report.routes_removed += 1,
                Err(e) => report.error(e),
            }
        }
        match added {
            None => {}
            Some(Ok(())) => report.routes_added += 1,
            Some(Err(e)) if foreign.contains(&dst) => report.error(format!(
                "{e} (a route to {dst} not installed by Brindle exists; it is left alone)"
            )),
            Some(Err(e)) => report.error(e),
        }
    }
    Ok(())
}

/// What one destination needs: routes to delete, then the route to write (with `replace`).
struct RoutePlan {
    dst: IpNet,
    deletes: Vec<KernelRoute>,
    add: Option<(super::RouteTarget, bool)>,
}

/// Runs `write` for every item with up to [`IN_FLIGHT`] netlink requests in flight (one
/// awaited at a time took 9 s for 10,000 routes; `ip -batch` 0.35 s). The results come in
/// completion order.
async fn pipelined<I, F, Fut>(items: I, write: F) -> Vec<Fut::Output>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future,
{
    futures::stream::iter(items)
        .map(write)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::fake::FakeKernel;
    use super::super::{vtep_mac, RouteTarget};
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn vxlan() -> VxlanDevice {
        VxlanDevice {
            local_ip: Ipv4Addr::new(192, 168, 1, 10),
            parent: "eth0".into(),
            mac: vtep_mac("node-a"),
            tunnel_addr: Some(Ipv4Addr::new(10, 244, 0, 0)),
            mtu: 1450,
        }
    }

    fn via_tunnel(gw: &str) -> RouteTarget {
        RouteTarget::ViaOnlink {
            gw: ip(gw),
            dev: VXLAN_DEVICE.into(),
        }
    }

    fn desired() -> DesiredState {
        let mut d = DesiredState {
            vxlan: Some(vxlan()),
            ..Default::default()
        };
        d.routes
            .insert(net("10.244.0.0/26"), RouteTarget::Blackhole);
        d.routes
            .insert(net("10.244.1.0/26"), via_tunnel("10.244.1.0"));
        d.neighbors.insert(Neighbor {
            dev: VXLAN_DEVICE.into(),
            ip: ip("10.244.1.0"),
            mac: vtep_mac("node-b"),
        });
        d.fdb.insert(FdbEntry {
            dev: VXLAN_DEVICE.into(),
            mac: vtep_mac("node-b"),
            dst: ip("192.168.1.11"),
        });
        d
    }

    async fn apply(k: &FakeKernel, d: &DesiredState) -> ApplyReport {
        reconcile(k, d, &ProtectedRoutes::new())
            .await
            .expect("route dump works in the fake")
    }

    #[tokio::test]
    async fn creates_everything_then_is_idle() {
        let k = FakeKernel::with_links(&["eth0"]);
        let d = desired();
        let r = apply(&k, &d).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(
            (r.routes_added, r.neighbors_changed, r.fdb_changed),
            (2, 1, 1)
        );
        let dev = k.link_state(VXLAN_DEVICE).expect("vxlan created");
        assert!(dev.is_vxlan_device(&vxlan()) && dev.up && dev.mtu == 1450);
        assert_eq!(k.addresses(VXLAN_DEVICE), vec![net("10.244.0.0/32")]);
        assert_eq!(k.our_routes(), d.routes);

        let again = apply(&k, &d).await;
        assert_eq!(
            again,
            ApplyReport::default(),
            "a second pass writes nothing"
        );
        // Device, address, two routes, neighbour, FDB entry: nothing more.
        assert_eq!(k.writes(), 6);
    }

    #[tokio::test]
    async fn stale_route_removed_foreign_untouched() {
        let k = FakeKernel::with_links(&["eth0"]);
        let foreign = KernelRoute::from_target(net("10.99.0.0/16"), 4, &RouteTarget::Blackhole);
        k.insert_route(foreign.clone());
        // A foreign route to a destination Brindle also wants: not replaced.
        let foreign_same = KernelRoute::from_target(
            net("10.244.0.0/26"),
            4,
            &RouteTarget::Device { dev: "eth0".into() },
        );
        k.insert_route(foreign_same.clone());
        let stale = KernelRoute::from_target(
            net("10.244.7.0/26"),
            RTPROT_BRINDLE,
            &via_tunnel("10.244.7.0"),
        );
        k.insert_route(stale);

        let r = apply(&k, &desired()).await;
        assert_eq!(r.routes_removed, 1);
        assert!(k.has_route(&foreign));
        assert!(k.has_route(&foreign_same));
        assert!(!k.our_routes().contains_key(&net("10.244.7.0/26")));
        // The blackhole collides with the foreign route: reported, not forced.
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(
            r.errors[0].contains("not installed by Brindle"),
            "{:?}",
            r.errors
        );
    }

    #[tokio::test]
    async fn via_routes_single_and_multipath_converge() {
        let k = FakeKernel::with_links(&["eth0"]);
        let mut d = DesiredState::default();
        let single = RouteTarget::via([ip("192.0.2.1")]).expect("a gateway");
        let ecmp = RouteTarget::via([ip("192.0.2.2"), ip("192.0.2.1")]).expect("gateways");
        d.routes.insert(net("10.50.0.0/24"), single);
        d.routes.insert(net("10.51.0.0/24"), ecmp.clone());
        let r = apply(&k, &d).await;
        assert_eq!((r.routes_added, r.errors.len()), (2, 0), "{r:?}");
        assert_eq!(k.our_routes(), d.routes);
        assert_eq!(apply(&k, &d).await, ApplyReport::default());

        // The group shrinks: replaced in place, not added next to the old one.
        d.routes.insert(
            net("10.51.0.0/24"),
            RouteTarget::via([ip("192.0.2.2")]).expect("a gateway"),
        );
        let r = apply(&k, &d).await;
        assert_eq!((r.routes_added, r.routes_removed), (1, 0), "{r:?}");
        assert_eq!(k.our_routes(), d.routes);
        // A multipath route with an onlink next hop is not a shape we write: not a Via.
        let mut odd = KernelRoute::from_target(net("10.52.0.0/24"), RTPROT_BRINDLE, &ecmp);
        odd.nexthops.clear();
        assert_eq!(odd.target(), None);
    }

    #[tokio::test]
    async fn changed_route_is_replaced() {
        let k = FakeKernel::with_links(&["eth0"]);
        let d = desired();
        apply(&k, &d).await;
        let mut d2 = d.clone();
        d2.routes.insert(
            net("10.244.1.0/26"),
            RouteTarget::ViaOnlink {
                gw: ip("192.168.1.11"),
                dev: "eth0".into(),
            },
        );
        let r = apply(&k, &d2).await;
        assert_eq!((r.routes_added, r.routes_removed), (1, 0));
        assert_eq!(k.our_routes(), d2.routes);
    }

    #[tokio::test]
    async fn failed_write_is_reported_and_retried() {
        let k = FakeKernel::with_links(&["eth0"]);
        k.fail("add route", "10.244.1.0/26");
        let d = desired();
        let r = apply(&k, &d).await;
        assert_eq!(r.routes_added, 1, "the other route still went in");
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].contains("10.244.1.0/26"));
        assert!(!k.our_routes().contains_key(&net("10.244.1.0/26")));

        k.heal();
        let r = apply(&k, &d).await;
        assert!(r.errors.is_empty());
        assert_eq!(r.routes_added, 1);
        assert_eq!(k.our_routes(), d.routes);
    }

    #[tokio::test]
    async fn missing_device_is_an_error_not_a_crash() {
        let k = FakeKernel::with_links(&["eth0"]);
        let mut d = DesiredState::default();
        d.routes.insert(
            net("10.244.0.5/32"),
            RouteTarget::Device { dev: "brd0".into() },
        );
        d.routes
            .insert(net("10.244.0.0/26"), RouteTarget::Blackhole);
        let r = apply(&k, &d).await;
        assert_eq!(r.routes_added, 1);
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].contains("brd0"), "{:?}", r.errors);

        k.add_link("brd0");
        let r = apply(&k, &d).await;
        assert_eq!((r.routes_added, r.errors.len()), (1, 0));
    }

    #[tokio::test]
    async fn neighbor_and_fdb_diff() {
        let k = FakeKernel::with_links(&["eth0"]);
        let d = desired();
        apply(&k, &d).await;
        // Someone's extra permanent entries on our device, and node-b moving.
        k.insert_neighbor(Neighbor {
            dev: VXLAN_DEVICE.into(),
            ip: ip("10.244.9.0"),
            mac: vtep_mac("node-z"),
        });
        let mut d2 = d.clone();
        d2.fdb.clear();
        d2.fdb.insert(FdbEntry {
            dev: VXLAN_DEVICE.into(),
            mac: vtep_mac("node-b"),
            dst: ip("192.168.1.12"),
        });
        d2.neighbors.clear();
        d2.neighbors.insert(Neighbor {
            dev: VXLAN_DEVICE.into(),
            ip: ip("10.244.1.0"),
            mac: vtep_mac("node-b2"),
        });
        let r = apply(&k, &d2).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        // One stale neighbour removed, one MAC replaced; one FDB entry added, one removed.
        assert_eq!((r.neighbors_changed, r.fdb_changed), (2, 2));
        assert_eq!(k.neighbor_set(), d2.neighbors);
        assert_eq!(k.fdb_set(), d2.fdb);
    }

    #[tokio::test]
    async fn vxlan_recreated_when_parameters_differ_and_removed_when_unwanted() {
        let k = FakeKernel::with_links(&["eth0", "eth1"]);
        let mut d = desired();
        apply(&k, &d).await;
        let first = k.link_state(VXLAN_DEVICE).expect("created").index;

        d.vxlan = Some(VxlanDevice {
            mtu: 1400,
            ..vxlan()
        });
        apply(&k, &d).await;
        let same = k.link_state(VXLAN_DEVICE).expect("kept");
        assert_eq!(
            (same.index, same.mtu),
            (first, 1400),
            "MTU changes in place"
        );

        d.vxlan = Some(VxlanDevice {
            parent: "eth1".into(),
            local_ip: Ipv4Addr::new(192, 168, 2, 10),
            ..vxlan()
        });
        apply(&k, &d).await;
        let new = k.link_state(VXLAN_DEVICE).expect("recreated");
        assert_ne!(new.index, first);

        let r = apply(&k, &DesiredState::default()).await;
        assert!(k.link_state(VXLAN_DEVICE).is_none());
        // The tunnel route went with the device, as in the kernel; the blackhole is removed.
        assert_eq!(r.routes_removed, 1);
        assert!(k.our_routes().is_empty());
    }

    #[tokio::test]
    async fn entries_without_device_are_pending() {
        let k = FakeKernel::with_links(&["eth0"]);
        let mut d = desired();
        d.vxlan = None;
        let r = apply(&k, &d).await;
        // Two "pending" errors and one for the tunnel route's missing device.
        assert_eq!(r.errors.len(), 3, "{:?}", r.errors);
        assert_eq!(r.routes_added, 1);
    }

    fn ipip_desired(tunnel: Option<&str>) -> DesiredState {
        let mut d = DesiredState {
            ipip: Some(IpipDevice {
                tunnel_addr: tunnel.map(|t| t.parse().expect("test address")),
                mtu: 1480,
            }),
            ..Default::default()
        };
        d.routes.insert(
            net("10.244.1.0/26"),
            RouteTarget::ViaOnlink {
                gw: ip("192.168.1.11"),
                dev: IPIP_DEVICE.into(),
            },
        );
        d
    }

    #[tokio::test]
    async fn ipip_device_gets_mtu_address_and_tunnel_routes() {
        let k = FakeKernel::with_links(&["eth0", IPIP_DEVICE]);
        let d = ipip_desired(Some("10.244.0.1"));
        let r = apply(&k, &d).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let tunl = k.link_state(IPIP_DEVICE).expect("tunl0 kept");
        assert!(tunl.up && tunl.mtu == 1480, "{tunl:?}");
        assert_eq!(k.addresses(IPIP_DEVICE), vec![net("10.244.0.1/32")]);
        assert_eq!(k.our_routes(), d.routes);
        assert_eq!(apply(&k, &d).await, ApplyReport::default(), "idle");

        // A new tunnel address replaces the old one; MTU changes in place.
        let mut d2 = ipip_desired(Some("10.244.0.2"));
        if let Some(ipip) = d2.ipip.as_mut() {
            ipip.mtu = 1400;
        }
        let r = apply(&k, &d2).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(k.addresses(IPIP_DEVICE), vec![net("10.244.0.2/32")]);
        assert_eq!(k.link_state(IPIP_DEVICE).expect("tunl0").mtu, 1400);

        // No IPIP wanted: the routes and the address go; the device is the kernel's and stays.
        let r = apply(&k, &DesiredState::default()).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.routes_removed, 1);
        assert!(k.link_state(IPIP_DEVICE).is_some());
        assert!(k.addresses(IPIP_DEVICE).is_empty());
        let writes = k.writes();
        assert_eq!(
            apply(&k, &DesiredState::default()).await,
            ApplyReport::default()
        );
        assert_eq!(k.writes(), writes, "idle without IPIP");
    }

    #[tokio::test]
    async fn ipip_without_the_module_is_a_clear_error() {
        let k = FakeKernel::with_links(&["eth0"]);
        let r = apply(&k, &ipip_desired(Some("10.244.0.1"))).await;
        assert!(
            r.errors.iter().any(|e| e.contains("ipip module")),
            "{:?}",
            r.errors
        );
        // The module loads later: the next pass converges.
        k.add_link(IPIP_DEVICE);
        let r = apply(&k, &ipip_desired(Some("10.244.0.1"))).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.routes_added, 1);
    }

    #[tokio::test]
    async fn protected_pod_route_survives_until_desired() {
        let k = FakeKernel::with_links(&["eth0", "brd1"]);
        let pod = KernelRoute::from_target(
            net("10.244.0.5/32"),
            RTPROT_BRINDLE,
            &RouteTarget::Device { dev: "brd1".into() },
        );
        k.insert_route(pod.clone());
        let mut protected = ProtectedRoutes::new();
        protected.insert(net("10.244.0.5/32"), "brd1".into());
        let r = reconcile(&k, &DesiredState::default(), &protected)
            .await
            .expect("dump");
        assert_eq!(r.routes_removed, 0);
        assert!(k.has_route(&pod));
        let r = apply(&k, &DesiredState::default()).await;
        assert_eq!(r.routes_removed, 1);
    }
}
