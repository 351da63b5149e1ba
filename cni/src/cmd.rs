//! The CNI verbs: from the runtime's environment and stdin to a request to the agent, and from
//! the agent's answer to what the plugin prints.
//!
//! Order of checks (as libcni's `skel`): `CNI_COMMAND`; `VERSION` needs nothing else; then the
//! verb's required variables; then the network configuration. stdin is decoded early only to
//! learn the requested `cniVersion`, so that every error is printed in that version.
//!
//! `STATUS` and `GC` (spec 1.1) concern the whole network, not one attachment: they need only
//! `CNI_COMMAND` and the configuration.

use brindle_agent::api::{CniAddRequest, CniDelRequest, CniGcRequest, CniStatusRequest};

use crate::client::Agent;
use crate::config::{CniArgs, NetConf, RawNetConf, RuntimeEnv};
use crate::error::CniError;
use crate::log::Logger;
use crate::result::{compare_with_record, render_add_result, PrevResult};
use crate::version::{self, CniVersion};

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Version,
        Command::Status,
        Command::Gc,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    fn parse(value: Option<&str>) -> Result<Self, CniError> {
        let value = value.unwrap_or("");
        if value.is_empty() {
            return Err(CniError::Env {
                var: "CNI_COMMAND",
                reason: "not set; the runtime must set it".into(),
            });
        }
        Command::ALL
            .into_iter()
            .find(|c| c.as_str() == value)
            .ok_or_else(|| CniError::Env {
                var: "CNI_COMMAND",
                reason: format!(
                    "unknown command {value:?}; supported: ADD, DEL, CHECK, VERSION, STATUS, GC"
                ),
            })
    }
}

/// What the plugin prints and how it exits.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The `cniVersion` of an error object: the requested version when known.
    pub(crate) version: CniVersion,
    /// What to print on stdout on success (CHECK and DEL print nothing).
    pub(crate) result: Result<Option<String>, CniError>,
}

/// Runs one invocation. `read_stdin` is called only for verbs that take a configuration;
/// `connect` builds the agent client from the validated configuration.
pub(crate) fn execute<A: Agent>(
    env: &RuntimeEnv,
    read_stdin: impl FnOnce() -> Result<Vec<u8>, CniError>,
    connect: impl FnOnce(&NetConf) -> A,
    log: &mut Logger,
) -> Outcome {
    let mut version = version::CURRENT;
    let result = execute_inner(env, read_stdin, connect, log, &mut version);
    Outcome { version, result }
}

fn execute_inner<A: Agent>(
    env: &RuntimeEnv,
    read_stdin: impl FnOnce() -> Result<Vec<u8>, CniError>,
    connect: impl FnOnce(&NetConf) -> A,
    log: &mut Logger,
    version: &mut CniVersion,
) -> Result<Option<String>, CniError> {
    let cmd = Command::parse(env.command.as_deref())?;
    log.with("cmd", cmd.as_str());
    if cmd == Command::Version {
        return Ok(Some(version::version_info()));
    }

    let stdin = read_stdin()?;
    let raw = RawNetConf::parse(&stdin);
    if let Ok(raw) = &raw {
        if let Some(v) = raw.version_hint() {
            *version = v;
        }
        log.set_level(raw.log_level_hint());
    }

    let attachment = match cmd {
        Command::Add | Command::Del | Command::Check => {
            let at = Attachment::from_env(cmd, env)?;
            log.with("containerID", at.container_id);
            if let (Some(ns), Some(name)) = (&at.args.pod_namespace, &at.args.pod_name) {
                log.with("pod", format!("{ns}/{name}"));
            }
            Some(at)
        }
        Command::Version | Command::Status | Command::Gc => None,
    };

    let conf = raw?.validate()?;
    log.set_level(conf.log_level);
    if let Some(at) = &attachment {
        log.debug(
            "invoked",
            &[
                ("netns", &at.netns),
                ("ifname", &at.ifname),
                ("socket", &conf.agent_socket.display()),
            ],
        );
    }
    // Checked before the agent is asked anything: a verb the version lacks, a malformed
    // prevResult (ADD and CHECK use it; DEL does not, and must not fail for it), a GC without
    // its list.
    let prev = match cmd {
        Command::Add | Command::Check => conf
            .prev_result
            .as_ref()
            .map(PrevResult::parse)
            .transpose()?,
        _ => None,
    };
    match (cmd, attachment) {
        (Command::Add, Some(at)) => add(&connect(&conf), &conf, &at, prev.as_ref(), log).map(Some),
        (Command::Del, Some(at)) => del(&connect(&conf), &conf, &at, log).map(|()| None),
        (Command::Check, Some(at)) => {
            require_version(cmd, conf.cni_version.has_check(), &conf, "0.4.0")?;
            check(&connect(&conf), &conf, &at, prev.as_ref(), log).map(|()| None)
        }
        (Command::Status, _) => {
            require_version(cmd, conf.cni_version.has_status_and_gc(), &conf, "1.1.0")?;
            status(&connect(&conf), &conf, log).map(|()| None)
        }
        (Command::Gc, _) => {
            require_version(cmd, conf.cni_version.has_status_and_gc(), &conf, "1.1.0")?;
            gc(&connect(&conf), &conf, log).map(|()| None)
        }
        // VERSION returned above; ADD, DEL and CHECK always have their attachment.
        (Command::Version | Command::Add | Command::Del | Command::Check, _) => {
            Ok(Some(version::version_info()))
        }
    }
}

/// A verb the requested version does not define is code 1.
fn require_version(
    cmd: Command,
    has_it: bool,
    conf: &NetConf,
    since: &str,
) -> Result<(), CniError> {
    if has_it {
        return Ok(());
    }
    Err(CniError::IncompatibleVersion {
        reason: format!(
            "{} is not defined for cniVersion {}; it needs {since} or later",
            cmd.as_str(),
            conf.cni_version.as_str()
        ),
    })
}

/// The pod attachment the runtime names in the environment.
#[derive(Debug)]
struct Attachment<'a> {
    container_id: &'a str,
    ifname: &'a str,
    /// Empty only at DEL.
    netns: &'a str,
    args: CniArgs,
}

impl<'a> Attachment<'a> {
    /// Checks the variables the verb requires (CNI spec 1.0, "Parameters").
    fn from_env(cmd: Command, env: &'a RuntimeEnv) -> Result<Self, CniError> {
        let container_id = env.require_container_id()?;
        let netns = match cmd {
            Command::Del => env.netns_or_empty(),
            _ => env.require_netns()?,
        };
        let ifname = env.require_ifname()?;
        let args = env.cni_args()?;
        Ok(Attachment {
            container_id,
            ifname,
            netns,
            args,
        })
    }

    fn add_request(&self, conf: &NetConf) -> CniAddRequest {
        // K8S_POD_INFRA_CONTAINER_ID names the sandbox, which is CNI_CONTAINERID already; it is
        // read (and logged) but not sent.
        CniAddRequest {
            container_id: self.container_id.to_string(),
            netns: self.netns.to_string(),
            ifname: self.ifname.to_string(),
            network: conf.name.clone(),
            pod_namespace: self.args.pod_namespace.clone(),
            pod_name: self.args.pod_name.clone(),
            mtu: conf.mtu,
            assign_ipv4: conf.assign_ipv4,
            assign_ipv6: conf.assign_ipv6,
        }
    }
}

/// ADD. With a `prevResult` (Brindle after another plugin in a chain) the result passes the
/// previous one through with Brindle's interfaces, addresses and routes appended.
fn add(
    agent: &impl Agent,
    conf: &NetConf,
    at: &Attachment<'_>,
    prev: Option<&PrevResult>,
    log: &Logger,
) -> Result<String, CniError> {
    let resp = agent.add(&at.add_request(conf))?;
    let out = render_add_result(conf.cni_version, at.netns, &resp, prev)?;
    log.info(
        "pod added",
        &[
            ("ips", &resp.ips.join(",")),
            ("hostInterface", &resp.host_interface),
            ("mtu", &resp.mtu),
        ],
    );
    Ok(out)
}

/// DEL is idempotent on the agent's side. An unreachable agent is an error, not a success: the
/// runtime retries DEL, and pretending would leak the pod's address.
fn del(
    agent: &impl Agent,
    conf: &NetConf,
    at: &Attachment<'_>,
    log: &Logger,
) -> Result<(), CniError> {
    let req = CniDelRequest {
        container_id: at.container_id.to_string(),
        netns: at.netns.to_string(),
        ifname: at.ifname.to_string(),
        network: conf.name.clone(),
        pod_namespace: at.args.pod_namespace.clone(),
        pod_name: at.args.pod_name.clone(),
    };
    agent.del(&req)?;
    log.info("pod deleted", &[]);
    Ok(())
}

/// CHECK (from 0.4.0): the agent compares the pod's veth, addresses, routes and sysctls with
/// what it set up and returns its record; the plugin then compares the record with the cached
/// result (`prevResult`), when the runtime passes one.
fn check(
    agent: &impl Agent,
    conf: &NetConf,
    at: &Attachment<'_>,
    prev: Option<&PrevResult>,
    log: &Logger,
) -> Result<(), CniError> {
    let record = agent.check(&at.add_request(conf))?;
    if let (Some(prev), Some(record)) = (prev, &record) {
        let diffs = compare_with_record(prev, at.netns, record);
        if !diffs.is_empty() {
            return Err(CniError::Mismatch {
                differences: diffs.join("; "),
            });
        }
    }
    log.debug("pod checked", &[]);
    Ok(())
}

/// STATUS (1.1): success when the agent answers and an address could be allocated; 50 when the
/// agent cannot be reached, 51 when no pool has room.
fn status(agent: &impl Agent, conf: &NetConf, log: &Logger) -> Result<(), CniError> {
    agent
        .status(&CniStatusRequest {
            network: conf.name.clone(),
        })
        .map_err(CniError::for_status)?;
    log.debug("status: ready", &[]);
    Ok(())
}

/// GC (1.1): the agent releases every allocation of this network on this node whose container
/// is not listed, with its host veth and endpoint. Without the list nothing is done: an absent
/// list would otherwise mean "nothing is valid".
fn gc(agent: &impl Agent, conf: &NetConf, log: &Logger) -> Result<(), CniError> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::InvalidConfig {
            field: crate::config::VALID_ATTACHMENTS,
            reason: "missing; GC needs the list of attachments still in use".into(),
        });
    };
    let done = agent.gc(&CniGcRequest {
        network: conf.name.clone(),
        valid_attachments: valid.clone(),
    })?;
    log.info(
        "garbage collected",
        &[
            ("releasedHandles", &done.released_handles.join(",")),
            ("removedInterfaces", &done.removed_interfaces.join(",")),
        ],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogLevel;
    use brindle_agent::api::{ApiError, CniAddResponse, CniAttachment, CniGcResponse, PodRoute};
    use serde_json::Value;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::ffi::OsString;

    /// An agent that records requests and answers from a script.
    #[derive(Default)]
    struct ScriptedAgent {
        adds: RefCell<Vec<CniAddRequest>>,
        dels: RefCell<Vec<CniDelRequest>>,
        checks: RefCell<Vec<CniAddRequest>>,
        statuses: RefCell<Vec<CniStatusRequest>>,
        gcs: RefCell<Vec<CniGcRequest>>,
        fail_with: Option<ApiError>,
    }

    fn add_answer(ifname: &str) -> CniAddResponse {
        CniAddResponse {
            host_interface: "brd0123456789a".into(),
            container_interface: ifname.into(),
            container_mac: "02:00:00:00:00:01".into(),
            mtu: 1450,
            ips: vec!["10.244.1.5/32".into()],
            routes: vec![PodRoute {
                dst: "0.0.0.0/0".into(),
                gw: Some("169.254.1.1".into()),
            }],
        }
    }

    impl ScriptedAgent {
        fn answer<T>(&self, ok: T) -> Result<T, CniError> {
            match &self.fail_with {
                Some(e) => Err(CniError::Agent(e.clone())),
                None => Ok(ok),
            }
        }
    }

    impl Agent for &ScriptedAgent {
        fn add(&self, req: &CniAddRequest) -> Result<CniAddResponse, CniError> {
            self.adds.borrow_mut().push(req.clone());
            self.answer(add_answer(&req.ifname))
        }
        fn del(&self, req: &CniDelRequest) -> Result<(), CniError> {
            self.dels.borrow_mut().push(req.clone());
            self.answer(())
        }
        fn check(&self, req: &CniAddRequest) -> Result<Option<CniAddResponse>, CniError> {
            self.checks.borrow_mut().push(req.clone());
            self.answer(Some(add_answer(&req.ifname)))
        }
        fn status(&self, req: &CniStatusRequest) -> Result<(), CniError> {
            self.statuses.borrow_mut().push(req.clone());
            self.answer(())
        }
        fn gc(&self, req: &CniGcRequest) -> Result<CniGcResponse, CniError> {
            self.gcs.borrow_mut().push(req.clone());
            self.answer(CniGcResponse::default())
        }
    }

    const CONF: &str =
        r#"{"cniVersion":"0.4.0","name":"k8s-pod-network","type":"brindle","mtu":1400}"#;

    fn env(cmd: &str, extra: &[(&str, &str)]) -> RuntimeEnv {
        let mut map: HashMap<String, OsString> = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_NETNS", "/var/run/netns/cni-1"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
                 K8S_POD_INFRA_CONTAINER_ID=c0ffee",
            ),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
        for (k, v) in extra {
            if v.is_empty() {
                map.remove(*k);
            } else {
                map.insert(k.to_string(), OsString::from(v));
            }
        }
        RuntimeEnv::from_lookup(|k| map.get(k).cloned()).expect("utf-8")
    }

    fn run(env: &RuntimeEnv, stdin: &str, agent: &ScriptedAgent) -> Outcome {
        let stdin = stdin.as_bytes().to_vec();
        execute(
            env,
            || Ok(stdin),
            |_| agent,
            &mut Logger::new(LogLevel::Off),
        )
    }

    #[test]
    fn add_passes_the_ipam_family_choice_to_the_agent() {
        let agent = ScriptedAgent::default();
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"brindle",
                       "ipam":{"type":"calico-ipam","assign_ipv4":"true","assign_ipv6":"false"}}"#;
        let out = run(&env("ADD", &[]), conf, &agent);
        out.result.expect("ok");
        let adds = agent.adds.borrow();
        assert_eq!(
            (adds[0].assign_ipv4, adds[0].assign_ipv6),
            (Some(true), Some(false))
        );
    }

    #[test]
    fn add_sends_the_pod_and_prints_the_result() {
        let agent = ScriptedAgent::default();
        let out = run(&env("ADD", &[]), CONF, &agent);
        let printed = out.result.expect("ok").expect("a result");
        let v: Value = serde_json::from_str(&printed).expect("json");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["interfaces"][1]["sandbox"], "/var/run/netns/cni-1");
        assert_eq!(
            agent.adds.borrow().as_slice(),
            [CniAddRequest {
                container_id: "c0ffee".into(),
                netns: "/var/run/netns/cni-1".into(),
                ifname: "eth0".into(),
                network: "k8s-pod-network".into(),
                pod_namespace: Some("default".into()),
                pod_name: Some("web-0".into()),
                mtu: Some(1400),
                assign_ipv4: None,
                assign_ipv6: None,
            }]
        );
    }

    #[test]
    fn del_without_netns_is_sent() {
        let agent = ScriptedAgent::default();
        let out = run(&env("DEL", &[("CNI_NETNS", "")]), CONF, &agent);
        assert_eq!(out.result.expect("ok"), None);
        let dels = agent.dels.borrow();
        assert_eq!(dels.len(), 1);
        assert_eq!(dels[0].netns, "");
        assert_eq!(dels[0].network, "k8s-pod-network");
    }

    #[test]
    fn check_prints_nothing_and_needs_0_4_0() {
        let agent = ScriptedAgent::default();
        let out = run(&env("CHECK", &[]), CONF, &agent);
        assert_eq!(out.result.expect("ok"), None);
        assert_eq!(agent.checks.borrow().len(), 1);

        let conf = CONF.replace("0.4.0", "0.3.1");
        let out = run(&env("CHECK", &[]), &conf, &agent);
        assert_eq!(out.result.expect_err("0.3.1").code(), 1);
        assert_eq!(out.version, CniVersion::V0_3_1);
        assert_eq!(agent.checks.borrow().len(), 1);
    }

    #[test]
    fn agent_errors_are_passed_on() {
        let agent = ScriptedAgent {
            fail_with: Some(ApiError {
                code: 51,
                msg: "no pool has room".into(),
                details: String::new(),
            }),
            ..Default::default()
        };
        for cmd in ["ADD", "DEL", "CHECK"] {
            let out = run(&env(cmd, &[]), CONF, &agent);
            assert_eq!(out.result.expect_err(cmd).code(), 51);
            assert_eq!(out.version, CniVersion::V0_4_0);
        }
    }

    #[test]
    fn missing_variables_are_code_4_and_stop_before_the_agent() {
        let agent = ScriptedAgent::default();
        for (cmd, var) in [
            ("ADD", "CNI_CONTAINERID"),
            ("ADD", "CNI_NETNS"),
            ("ADD", "CNI_IFNAME"),
            ("CHECK", "CNI_NETNS"),
            ("DEL", "CNI_CONTAINERID"),
            ("DEL", "CNI_IFNAME"),
            ("ADD", "CNI_COMMAND"),
        ] {
            let out = run(&env(cmd, &[(var, "")]), CONF, &agent);
            let err = out.result.expect_err(var);
            assert_eq!(err.code(), 4, "{cmd} {var}: {err}");
            assert!(err.to_string().contains(var), "{err}");
            // The error is printed in the requested version even though the env is wrong;
            // without CNI_COMMAND stdin is not read (it might be a terminal), so 1.0.0.
            let want = if var == "CNI_COMMAND" {
                version::CURRENT
            } else {
                CniVersion::V0_4_0
            };
            assert_eq!(out.version, want, "{cmd} {var}");
        }
        assert!(agent.adds.borrow().is_empty());
        assert!(agent.dels.borrow().is_empty());
    }

    #[test]
    fn unknown_command_is_code_4() {
        let agent = ScriptedAgent::default();
        for cmd in ["status", "gc", "add", "BOGUS"] {
            let err = run(&env(cmd, &[]), CONF, &agent).result.expect_err(cmd);
            assert_eq!(err.code(), 4, "{cmd}");
        }
    }

    const CONF_1_1: &str = r#"{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"brindle"}"#;

    #[test]
    fn status_needs_only_the_command_and_1_1_0() {
        let agent = ScriptedAgent::default();
        // No CNI_CONTAINERID, CNI_NETNS or CNI_IFNAME: STATUS concerns the whole network.
        let bare = env(
            "STATUS",
            &[
                ("CNI_CONTAINERID", ""),
                ("CNI_NETNS", ""),
                ("CNI_IFNAME", ""),
            ],
        );
        assert_eq!(run(&bare, CONF_1_1, &agent).result.expect("ok"), None);
        assert_eq!(
            agent.statuses.borrow().as_slice(),
            [CniStatusRequest {
                network: "k8s-pod-network".into()
            }]
        );
        for old in ["0.4.0", "1.0.0"] {
            let conf = CONF_1_1.replace("1.1.0", old);
            let out = run(&bare, &conf, &agent);
            assert_eq!(out.result.expect_err(old).code(), 1, "{old}");
        }
        assert_eq!(agent.statuses.borrow().len(), 1);
    }

    #[test]
    fn status_reports_the_agents_51_and_turns_try_again_into_50() {
        for (agent_code, want) in [(51, 51), (11, 50)] {
            let agent = ScriptedAgent {
                fail_with: Some(ApiError {
                    code: agent_code,
                    msg: "m".into(),
                    details: String::new(),
                }),
                ..Default::default()
            };
            let out = run(&env("STATUS", &[]), CONF_1_1, &agent);
            assert_eq!(out.result.expect_err("fails").code(), want);
        }
    }

    #[test]
    fn gc_sends_the_valid_attachments() {
        let agent = ScriptedAgent::default();
        let conf = r#"{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"brindle",
            "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#;
        let out = run(&env("GC", &[("CNI_CONTAINERID", "")]), conf, &agent);
        assert_eq!(out.result.expect("ok"), None);
        assert_eq!(
            agent.gcs.borrow().as_slice(),
            [CniGcRequest {
                network: "k8s-pod-network".into(),
                valid_attachments: vec![CniAttachment {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                }],
            }]
        );
        // Without the list GC would release everything: refused before the agent is asked.
        let err = run(&env("GC", &[]), CONF_1_1, &agent)
            .result
            .expect_err("no list");
        assert_eq!(err.code(), 7);
        assert!(
            err.to_string().contains("cni.dev/valid-attachments"),
            "{err}"
        );
        let err = run(&env("GC", &[]), &conf.replace("1.1.0", "1.0.0"), &agent)
            .result
            .expect_err("1.0.0");
        assert_eq!(err.code(), 1);
        assert_eq!(agent.gcs.borrow().len(), 1);
    }

    #[test]
    fn add_in_a_chain_keeps_the_previous_result() {
        let agent = ScriptedAgent::default();
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"brindle",
            "prevResult":{"cniVersion":"1.0.0",
                "interfaces":[{"name":"lo0"}],"ips":[],"routes":[],"dns":{}}}"#;
        let printed = run(&env("ADD", &[]), conf, &agent)
            .result
            .expect("ok")
            .expect("a result");
        let v: Value = serde_json::from_str(&printed).expect("json");
        assert_eq!(v["interfaces"][0]["name"], "lo0");
        assert_eq!(v["interfaces"][2]["name"], "eth0");
        assert_eq!(v["ips"][0]["interface"], 2);

        // A malformed prevResult is refused before anything is allocated.
        let bad = conf.replace(r#""ips":[]"#, r#""ips":{}"#);
        let err = run(&env("ADD", &[]), &bad, &agent)
            .result
            .expect_err("bad prevResult");
        assert_eq!(err.code(), 7);
        assert_eq!(agent.adds.borrow().len(), 1);

        // DEL does not need it, and does its job regardless.
        assert_eq!(
            run(&env("DEL", &[]), &bad, &agent).result.expect("DEL"),
            None
        );
        assert_eq!(agent.dels.borrow().len(), 1);
    }

    #[test]
    fn check_compares_prev_result_with_the_agents_record() {
        let agent = ScriptedAgent::default();
        let result = |address: &str| {
            format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"brindle","prevResult":{{
                "cniVersion":"1.0.0",
                "interfaces":[{{"name":"brd0123456789a"}},
                    {{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/var/run/netns/cni-1"}}],
                "ips":[{{"address":"{address}","interface":1}}]}}}}"#
            )
        };
        let out = run(&env("CHECK", &[]), &result("10.244.1.5/32"), &agent);
        assert_eq!(out.result.expect("agrees"), None);
        let err = run(&env("CHECK", &[]), &result("10.244.1.9/32"), &agent)
            .result
            .expect_err("differs");
        let msg = err.to_string();
        assert!(
            msg.contains("10.244.1.9/32") && msg.contains("10.244.1.5/32"),
            "{msg}"
        );
    }

    #[test]
    fn version_does_not_read_stdin() {
        let agent = ScriptedAgent::default();
        let out = execute(
            &env("VERSION", &[]),
            || -> Result<Vec<u8>, CniError> { panic!("stdin read for VERSION") },
            |_| &agent,
            &mut Logger::new(LogLevel::Off),
        );
        let printed = out.result.expect("ok").expect("output");
        assert!(printed.contains(r#""supportedVersions""#));
    }

    #[test]
    fn config_errors_keep_their_codes() {
        let agent = ScriptedAgent::default();
        for (stdin, code) in [
            ("{", 6),
            (r#"{"cniVersion":"1.0.0"}"#, 7),
            (r#"{"name":"n"}"#, 7),
            (r#"{"cniVersion":"9.0.0","name":"n"}"#, 1),
        ] {
            let err = run(&env("ADD", &[]), stdin, &agent)
                .result
                .expect_err(stdin);
            assert_eq!(err.code(), code, "{stdin}: {err}");
        }
        assert!(agent.adds.borrow().is_empty());
    }
}
