//! An in-memory [`Kernel`] for unit tests of reconciliation. It keeps the kernel's rules that
//! reconciliation depends on: one route per (destination, TOS, metric) unless replaced, routes,
//! neighbours and FDB entries vanish with their device, writes to missing devices fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net};

use super::kernel::{Kernel, KernelRoute, LinkState, VxlanParams};
use super::{DataplaneError, FdbEntry, Neighbor, RouteTarget, VxlanDevice, RTPROT_BRINDLE};

#[derive(Default)]
struct State {
    links: BTreeMap<String, LinkState>,
    next_index: u32,
    addrs: BTreeMap<String, Vec<IpNet>>,
    routes: Vec<KernelRoute>,
    neighbors: BTreeSet<Neighbor>,
    fdb: BTreeSet<FdbEntry>,
    /// (op, object) pairs whose writes fail until [`FakeKernel::heal`].
    failing: BTreeSet<(String, String)>,
    writes: usize,
}

impl State {
    fn add_link(&mut self, name: &str, mut link: LinkState) {
        self.next_index += 1;
        link.index = self.next_index;
        self.links.insert(name.to_string(), link);
    }

    fn require(&self, dev: &str) -> Result<(), DataplaneError> {
        if self.links.contains_key(dev) {
            Ok(())
        } else {
            Err(DataplaneError::NoSuchInterface(dev.to_string()))
        }
    }

    /// Fails an injected write; counts the others.
    fn write(&mut self, op: &'static str, object: String) -> Result<(), DataplaneError> {
        if self.failing.contains(&(op.to_string(), object.clone())) {
            return Err(DataplaneError::Netlink {
                op,
                object,
                reason: "injected failure".into(),
            });
        }
        self.writes += 1;
        Ok(())
    }
}

pub(crate) struct FakeKernel(Mutex<State>);

impl FakeKernel {
    /// A kernel with these plain links (up, MTU 1500).
    pub fn with_links(names: &[&str]) -> Self {
        let k = FakeKernel(Mutex::new(State::default()));
        for name in names {
            k.add_link(name);
        }
        k
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in another test thread cannot leave this state half-written in a way that
        // matters to the test that observes it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_link(&self, name: &str) {
        let link = LinkState {
            mtu: 1500,
            up: true,
            ..Default::default()
        };
        self.state().add_link(name, link);
    }

    pub fn link_state(&self, name: &str) -> Option<LinkState> {
        self.state().links.get(name).cloned()
    }

    pub fn addresses(&self, dev: &str) -> Vec<IpNet> {
        self.state().addrs.get(dev).cloned().unwrap_or_default()
    }

    /// Brindle's routes, as targets.
    pub fn our_routes(&self) -> BTreeMap<IpNet, RouteTarget> {
        self.state()
            .routes
            .iter()
            .filter(|r| r.protocol == RTPROT_BRINDLE)
            .filter_map(|r| Some((r.dst, r.target()?)))
            .collect()
    }

    pub fn insert_route(&self, route: KernelRoute) {
        self.state().routes.push(route);
    }

    pub fn has_route(&self, route: &KernelRoute) -> bool {
        self.state().routes.contains(route)
    }

    pub fn insert_neighbor(&self, n: Neighbor) {
        self.state().neighbors.insert(n);
    }

    pub fn neighbor_set(&self) -> BTreeSet<Neighbor> {
        self.state().neighbors.clone()
    }

    pub fn fdb_set(&self) -> BTreeSet<FdbEntry> {
        self.state().fdb.clone()
    }

    /// Makes writes of `op` on `object` fail (op and object as in [`DataplaneError::Netlink`]).
    pub fn fail(&self, op: &str, object: &str) {
        self.state()
            .failing
            .insert((op.to_string(), object.to_string()));
    }

    pub fn heal(&self) {
        self.state().failing.clear();
    }

    /// Successful writes so far.
    pub fn writes(&self) -> usize {
        self.state().writes
    }
}

fn same_key(a: &KernelRoute, b: &KernelRoute) -> bool {
    a.dst == b.dst && a.tos == b.tos && a.metric == b.metric
}

#[async_trait]
impl Kernel for FakeKernel {
    async fn link(&self, name: &str) -> Result<Option<LinkState>, DataplaneError> {
        Ok(self.link_state(name))
    }

    async fn create_vxlan(&self, name: &str, dev: &VxlanDevice) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.require(&dev.parent)?;
        if s.links.contains_key(name) {
            return Err(DataplaneError::Netlink {
                op: "create vxlan",
                object: name.into(),
                reason: "File exists".into(),
            });
        }
        s.write("create vxlan", name.into())?;
        let link = LinkState {
            index: 0,
            mac: Some(dev.mac),
            mtu: dev.mtu,
            up: true,
            vxlan: Some(VxlanParams {
                vni: Some(super::VXLAN_VNI),
                port: Some(super::VXLAN_PORT),
                local: Some(dev.local_ip),
                parent: Some(dev.parent.clone()),
                learning: Some(false),
            }),
        };
        s.add_link(name, link);
        Ok(())
    }

    async fn delete_link(&self, name: &str) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.require(name)?;
        s.write("delete link", name.into())?;
        s.links.remove(name);
        s.addrs.remove(name);
        s.routes.retain(|r| r.dev.as_deref() != Some(name));
        s.neighbors.retain(|n| n.dev != name);
        s.fdb.retain(|e| e.dev != name);
        Ok(())
    }

    async fn set_link_mtu_up(&self, name: &str, mtu: u32) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.require(name)?;
        s.write("set link", name.into())?;
        if let Some(link) = s.links.get_mut(name) {
            link.mtu = mtu;
            link.up = true;
        }
        Ok(())
    }

    async fn addresses_v4(&self, dev: &str) -> Result<Vec<Ipv4Net>, DataplaneError> {
        let s = self.state();
        s.require(dev)?;
        Ok(s.addrs
            .get(dev)
            .into_iter()
            .flatten()
            .filter_map(|a| match a {
                IpNet::V4(a) => Some(*a),
                IpNet::V6(_) => None,
            })
            .collect())
    }

    async fn add_address(&self, dev: &str, addr: IpNet) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.require(dev)?;
        s.write("add address", format!("{addr} dev {dev}"))?;
        let addrs = s.addrs.entry(dev.to_string()).or_default();
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
        Ok(())
    }

    async fn del_address(&self, dev: &str, addr: IpNet) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.require(dev)?;
        s.write("delete address", format!("{addr} dev {dev}"))?;
        if let Some(addrs) = s.addrs.get_mut(dev) {
            addrs.retain(|a| *a != addr);
        }
        Ok(())
    }

    async fn routes(&self) -> Result<Vec<KernelRoute>, DataplaneError> {
        Ok(self.state().routes.clone())
    }

    async fn add_route(
        &self,
        dst: IpNet,
        target: &RouteTarget,
        replace: bool,
    ) -> Result<(), DataplaneError> {
        let mut s = self.state();
        let new = KernelRoute::from_target(dst, RTPROT_BRINDLE, target);
        if let Some(dev) = &new.dev {
            s.require(dev)?;
        }
        let existing = s.routes.iter().position(|r| same_key(r, &new));
        if existing.is_some() && !replace {
            return Err(DataplaneError::Netlink {
                op: "add route",
                object: dst.to_string(),
                reason: "File exists (os error 17)".into(),
            });
        }
        s.write("add route", dst.to_string())?;
        match existing {
            Some(i) => s.routes[i] = new,
            None => s.routes.push(new),
        }
        Ok(())
    }

    async fn del_route(&self, route: &KernelRoute) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.write("delete route", route.dst.to_string())?;
        s.routes
            .retain(|r| !(same_key(r, route) && r.protocol == route.protocol));
        Ok(())
    }

    async fn neighbors(&self, dev: &str) -> Result<Vec<Neighbor>, DataplaneError> {
        let s = self.state();
        s.require(dev)?;
        Ok(s.neighbors
            .iter()
            .filter(|n| n.dev == dev)
            .cloned()
            .collect())
    }

    async fn set_neighbor(&self, n: &Neighbor) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.require(&n.dev)?;
        s.write("set neighbour", format!("{} dev {}", n.ip, n.dev))?;
        s.neighbors.retain(|o| !(o.dev == n.dev && o.ip == n.ip));
        s.neighbors.insert(n.clone());
        Ok(())
    }

    async fn del_neighbor(&self, n: &Neighbor) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.require(&n.dev)?;
        s.write("delete neighbour", format!("{} dev {}", n.ip, n.dev))?;
        s.neighbors.retain(|o| !(o.dev == n.dev && o.ip == n.ip));
        Ok(())
    }

    async fn fdb(&self, dev: &str) -> Result<Vec<FdbEntry>, DataplaneError> {
        let s = self.state();
        s.require(dev)?;
        Ok(s.fdb.iter().filter(|e| e.dev == dev).cloned().collect())
    }

    async fn add_fdb(&self, e: &FdbEntry) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.require(&e.dev)?;
        s.write("add fdb", format!("{e:?}"))?;
        s.fdb.insert(e.clone());
        Ok(())
    }

    async fn del_fdb(&self, e: &FdbEntry) -> Result<(), DataplaneError> {
        let mut s = self.state();
        s.require(&e.dev)?;
        s.write("delete fdb", format!("{e:?}"))?;
        s.fdb.remove(e);
        Ok(())
    }
}
