//! Pods: wiring namespaces through the real `brindle` CNI plugin and removing them.

use crate::*;

impl Cluster {
    /// The container runtime of node `node`: the lab's conflist, with that node's agent socket,
    /// run the way libcni runs it.
    pub fn runtime(&self, node: usize) -> Result<cni_exec::Runtime> {
        let node = &self.nodes[node];
        let text = fs::read_to_string(&self.conflist)?;
        let mut conflist = serde_json::from_str::<serde_json::Value>(&text)?;
        conflist["plugins"][0]["agent_socket"] =
            serde_json::Value::String(node.socket.display().to_string());
        Ok(cni_exec::Runtime {
            conflist,
            cni_path: vec![
                self.bins.clone(),
                PathBuf::from(cni_exec::REFERENCE_PLUGINS),
            ],
            exec_in: Some(node.netns.clone()),
        })
    }

    pub(crate) fn attachment(pod: &Pod) -> cni_exec::Attachment {
        cni_exec::Attachment {
            container_id: pod.container_id.clone(),
            netns: format!("/var/run/netns/{}", pod.netns),
            ifname: "eth0".to_string(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME={}",
                pod.name
            ),
            runtime_config: pod.runtime_config.clone(),
        }
    }

    /// Creates a pod namespace on node `node` and wires it with the CNI plugin.
    pub fn add_pod(&mut self, node: usize, name: &str) -> Result<Pod> {
        self.add_pod_with(node, name, serde_json::json!({}))
    }

    /// Like [`Cluster::add_pod`], with what the runtime knows about the pod (`portMappings`,
    /// `bandwidth`) passed to the plugins whose capabilities ask for it.
    pub fn add_pod_with(
        &mut self,
        node: usize,
        name: &str,
        runtime_config: serde_json::Value,
    ) -> Result<Pod> {
        self.add_pod_conf(node, name, runtime_config, serde_json::json!({}))
    }

    /// Like [`Cluster::add_pod_with`], with `brindle_conf`'s keys (`mtu`, `ipam`...) set in
    /// Brindle's entry of the conflist for this pod only.
    pub fn add_pod_conf(
        &mut self,
        node: usize,
        name: &str,
        runtime_config: serde_json::Value,
        brindle_conf: serde_json::Value,
    ) -> Result<Pod> {
        let netns = format!("bl{}-{name}", self.id);
        self.add_netns(&netns)?;
        let mut pod = Pod {
            name: name.to_string(),
            netns,
            node,
            container_id: format!("lab{}{}", self.id, name.replace('-', "")),
            ip: String::new(),
            ip6: None,
            result: serde_json::Value::Null,
            runtime_config,
        };
        let mut runtime = self.runtime(node)?;
        if let (Some(plugin), Some(extra)) = (
            runtime.conflist["plugins"][0].as_object_mut(),
            brindle_conf.as_object(),
        ) {
            plugin.extend(extra.clone());
        }
        let result = runtime
            .add(&Self::attachment(&pod))
            .with_context(|| format!("CNI ADD of pod {name}"))?;
        pod.result = result.clone();
        let addr = result["ips"][0]["address"]
            .as_str()
            .ok_or_else(|| anyhow!("CNI result without an address: {result}"))?;
        pod.ip = addr.split('/').next().unwrap_or_default().to_string();
        pod.ip6 = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .find(|a| a.contains(':'))
            .map(|a| a.split('/').next().unwrap_or_default().to_string());
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// CNI CHECK of a pod through the conflist, with its ADD result as `prevResult`.
    pub fn check_pod(&self, name: &str) -> Result<()> {
        let pod = self
            .pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow!("no pod {name}"))?;
        self.runtime(pod.node)?
            .check(&Self::attachment(pod), &pod.result)
            .with_context(|| format!("CNI CHECK of pod {name}"))
    }

    /// Deletes a pod through the CNI plugin, then its namespace.
    pub fn del_pod(&mut self, name: &str) -> Result<()> {
        let Some(i) = self.pods.iter().position(|p| p.name == name) else {
            bail!("no pod {name}");
        };
        let pod = self.pods.remove(i);
        self.runtime(pod.node)?
            .del(&Self::attachment(&pod), Some(&pod.result))
            .with_context(|| format!("CNI DEL of pod {name}"))?;
        let _ = ip(&["netns", "del", &pod.netns]);
        self.namespaces.retain(|n| *n != pod.netns);
        Ok(())
    }

    pub(crate) fn start_pods(&mut self) -> Result<()> {
        self.say(&format!(
            "[4/5] starting {} pods per node through the brindle CNI plugin",
            self.spec.pods_per_node
        ));
        for node in 0..self.nodes.len() {
            for p in 1..=self.spec.pods_per_node {
                check_interrupted()?;
                let name = format!("pod-{}-{p}", node + 1);
                let pod = self.add_pod(node, &name)?;
                self.say(&format!(
                    "      {:<10} on {:<6} {}",
                    pod.name, self.nodes[node].name, pod.ip
                ));
            }
        }
        Ok(())
    }
}
