//! A container runtime's side of CNI: runs a network configuration list (a conflist) the way
//! libcni does, so the lab wires pods exactly as containerd or CRI-O would.
//!
//! - ADD runs the plugins in order. Each gets the list's `name` and `cniVersion`, the result of
//!   the plugin before it as `prevResult`, and the `runtimeConfig` entries its `capabilities`
//!   ask for (`portMappings`, `bandwidth`, ...). The last result is the ADD's result.
//! - DEL runs them in reverse order, each with the cached ADD result as `prevResult`, and goes
//!   on after a failure so that every plugin cleans up (libcni's behaviour); the first error is
//!   returned.
//! - CHECK runs them in order with the cached result.
//!
//! Plugins are looked up by `type` in the `CNI_PATH` directories.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

/// One attachment: a container's interface on one network.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub container_id: String,
    /// Path of the container's network namespace (`/var/run/netns/<name>`).
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`, e.g. `IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME=web`.
    pub args: String,
    /// What the runtime knows about the pod: `{"portMappings": [...], "bandwidth": {...}}`.
    pub runtime_config: Value,
}

/// A conflist and where its plugins are.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub conflist: Value,
    pub cni_path: Vec<PathBuf>,
    /// Runs plugins through `ip netns exec <ns>` (the node's namespace) when set.
    pub exec_in: Option<String>,
}

impl Runtime {
    /// ADD through the whole chain; returns the final result.
    pub fn add(&self, att: &Attachment) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins()? {
            let out = self.invoke("ADD", plugin, att, prev.as_ref())?;
            let result: Value = serde_json::from_str(&out).with_context(|| {
                format!(
                    "plugin {} printed a result that is not JSON: {out}",
                    type_of(plugin)
                )
            })?;
            prev = Some(result);
        }
        prev.ok_or_else(|| anyhow!("the conflist has no plugins"))
    }

    /// DEL through the chain in reverse order, with the ADD's result when there was one.
    pub fn del(&self, att: &Attachment, cached: Option<&Value>) -> Result<()> {
        let mut first_error = None;
        for plugin in self.plugins()?.iter().rev() {
            if let Err(e) = self.invoke("DEL", plugin, att, cached) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// CHECK through the chain with the ADD's result.
    pub fn check(&self, att: &Attachment, cached: &Value) -> Result<()> {
        for plugin in self.plugins()? {
            self.invoke("CHECK", plugin, att, Some(cached))?;
        }
        Ok(())
    }

    fn plugins(&self) -> Result<&Vec<Value>> {
        self.conflist["plugins"]
            .as_array()
            .ok_or_else(|| anyhow!("the conflist has no \"plugins\" list"))
    }

    /// The configuration one plugin sees on stdin (libcni's `buildOneConfig`).
    pub fn plugin_config(&self, plugin: &Value, att: &Attachment, prev: Option<&Value>) -> Value {
        let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
        conf.insert("name".into(), self.conflist["name"].clone());
        conf.insert("cniVersion".into(), self.conflist["cniVersion"].clone());
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let mut runtime = Map::new();
        if let Some(caps) = plugin["capabilities"].as_object() {
            for (cap, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(v) = att.runtime_config.get(cap) {
                        runtime.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        Value::Object(conf)
    }

    fn find(&self, kind: &str) -> Result<PathBuf> {
        self.cni_path
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .ok_or_else(|| {
                anyhow!(
                    "CNI plugin {kind:?} not found in {}",
                    join_paths(&self.cni_path)
                )
            })
    }

    fn invoke(
        &self,
        command: &str,
        plugin: &Value,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<String> {
        let kind = type_of(plugin);
        let bin = self.find(kind)?;
        let conf = self.plugin_config(plugin, att, prev);
        let mut cmd = match &self.exec_in {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = cmd
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &att.container_id)
            .env("CNI_NETNS", &att.netns)
            .env("CNI_IFNAME", &att.ifname)
            .env("CNI_ARGS", &att.args)
            .env("CNI_PATH", join_paths(&self.cni_path))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running CNI plugin {}", bin.display()))?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(conf.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "CNI {command} of plugin {kind} failed: {} {}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }
}

fn type_of(plugin: &Value) -> &str {
    plugin["type"].as_str().unwrap_or("?")
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Where Debian's containernetworking-plugins installs the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Whether the reference plugin `kind` is installed.
pub fn reference_plugin(kind: &str) -> Option<PathBuf> {
    let p = Path::new(REFERENCE_PLUGINS).join(kind);
    p.exists().then_some(p)
}

/// The plugins chained after Brindle's in the shipped conflist ([`shipped_conflist`]): the
/// reference `portmap` and `bandwidth`, as Calico's DaemonSet chains them.
pub fn portmap_and_bandwidth() -> Vec<Value> {
    shipped_conflist()["plugins"]
        .as_array()
        .map(|plugins| plugins.iter().skip(1).cloned().collect())
        .unwrap_or_default()
}

/// `manifests/10-brindle.conflist`, the list the DaemonSet installs.
pub fn shipped_conflist() -> Value {
    serde_json::from_str(include_str!("../../manifests/10-brindle.conflist")).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runtime() -> Runtime {
        Runtime {
            conflist: json!({
                "cniVersion": "1.0.0",
                "name": "k8s-pod-network",
                "plugins": [
                    {"type": "brindle", "agent_socket": "/run/a.sock"},
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                    {"type": "bandwidth", "capabilities": {"bandwidth": false}},
                ]
            }),
            cni_path: vec![PathBuf::from("/nonexistent")],
            exec_in: None,
        }
    }

    fn attachment() -> Attachment {
        Attachment {
            container_id: "c1".into(),
            netns: "/var/run/netns/p".into(),
            ifname: "eth0".into(),
            args: String::new(),
            runtime_config: json!({
                "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000},
            }),
        }
    }

    #[test]
    fn each_plugin_gets_name_version_and_prev_result() {
        let rt = runtime();
        let plugins = rt.plugins().expect("plugins").clone();
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/32"}]});
        let conf = rt.plugin_config(&plugins[1], &attachment(), Some(&prev));
        assert_eq!(conf["name"], "k8s-pod-network");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(conf["type"], "portmap");
        let first = rt.plugin_config(&plugins[0], &attachment(), None);
        assert!(first.get("prevResult").is_none());
        assert_eq!(first["agent_socket"], "/run/a.sock");
    }

    #[test]
    fn runtime_config_only_for_enabled_capabilities() {
        let rt = runtime();
        let plugins = rt.plugins().expect("plugins").clone();
        let brindle = rt.plugin_config(&plugins[0], &attachment(), None);
        assert!(brindle.get("runtimeConfig").is_none(), "{brindle}");
        let portmap = rt.plugin_config(&plugins[1], &attachment(), None);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0]["hostPort"], 8080,
            "{portmap}"
        );
        // bandwidth's capability is switched off in this list.
        let bandwidth = rt.plugin_config(&plugins[2], &attachment(), None);
        assert!(bandwidth.get("runtimeConfig").is_none(), "{bandwidth}");
    }

    #[test]
    fn the_shipped_conflist_chains_portmap_and_bandwidth_after_brindle() {
        let list = shipped_conflist();
        assert_eq!(list["plugins"][0]["type"], "brindle", "{list}");
        let chain: Vec<Value> = portmap_and_bandwidth()
            .iter()
            .map(|p| p["type"].clone())
            .collect();
        assert_eq!(chain, [json!("portmap"), json!("bandwidth")]);
    }

    #[test]
    fn a_missing_plugin_is_named() {
        let err = runtime()
            .add(&attachment())
            .expect_err("no plugins on disk");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("\"brindle\" not found in /nonexistent"),
            "{msg}"
        );
    }
}
