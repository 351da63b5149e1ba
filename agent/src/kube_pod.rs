//! What `brindle-node` reads and writes of a pod's Kubernetes Pod (core `v1/pods`, verbs `get`
//! and `patch`) when the datastore is `kubernetes`, as Calico's CNI plugin does:
//!
//! - at ADD, the Pod's labels are read (a GET with a short deadline, [`POD_API_TIMEOUT`]) and
//!   recorded on the WorkloadEndpoint; a slow or failing API server never fails the ADD: the
//!   endpoint is recorded with what is known (namespace, pod name) and a warning is logged;
//! - after ADD, the pod's addresses are written to the Pod as the annotations
//!   [`POD_IP_ANNOTATION`] and [`POD_IPS_ANNOTATION`] (Calico's `cni.projectcalico.org/podIP`
//!   and `podIPs`), with a JSON merge patch that touches nothing else.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::Api;

/// The Pod annotation with the pod's first address, as a host prefix (`10.244.1.5/32`).
pub const POD_IP_ANNOTATION: &str = "brindle.dev/podIP";
/// The Pod annotation with all the pod's addresses, comma-separated.
pub const POD_IPS_ANNOTATION: &str = "brindle.dev/podIPs";
/// WorkloadEndpoint labels Brindle adds to the pod's own (Calico's `projectcalico.org/...`).
pub const NAMESPACE_LABEL: &str = "brindle.dev/namespace";
pub const ORCHESTRATOR_LABEL: &str = "brindle.dev/orchestrator";
/// How long a pod ADD waits for the API server, per request.
pub const POD_API_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the API server did not answer as hoped.
#[derive(Debug, thiserror::Error)]
pub enum KubePodError {
    #[error("{verb} Pod {namespace}/{pod}: no answer within {timeout:?}")]
    Timeout {
        verb: &'static str,
        namespace: String,
        pod: String,
        timeout: Duration,
    },
    #[error("{verb} Pod {namespace}/{pod}: {reason}")]
    Api {
        verb: &'static str,
        namespace: String,
        pod: String,
        reason: String,
    },
}

fn reason(e: kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

/// The labels of Pod `namespace/pod`, waiting at most `timeout`.
pub async fn pod_labels(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, KubePodError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match tokio::time::timeout(timeout, api.get(pod)).await {
        Err(_) => Err(KubePodError::Timeout {
            verb: "get",
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            timeout,
        }),
        Ok(Err(e)) => Err(KubePodError::Api {
            verb: "get",
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            reason: reason(e),
        }),
        Ok(Ok(object)) => Ok(object.metadata.labels.unwrap_or_default()),
    }
}

/// The merge patch that records `ips` on a Pod.
pub fn ip_annotations_patch(ips: &[IpNet]) -> serde_json::Value {
    let all: Vec<String> = ips.iter().map(ToString::to_string).collect();
    serde_json::json!({
        "metadata": {
            "annotations": {
                POD_IP_ANNOTATION: all.first().cloned().unwrap_or_default(),
                POD_IPS_ANNOTATION: all.join(","),
            }
        }
    })
}

/// Writes the pod's addresses to Pod `namespace/pod` as annotations, waiting at most `timeout`.
pub async fn annotate_pod_ips(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    ips: &[IpNet],
    timeout: Duration,
) -> Result<(), KubePodError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let patch = ip_annotations_patch(ips);
    match tokio::time::timeout(
        timeout,
        api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    {
        Err(_) => Err(KubePodError::Timeout {
            verb: "patch",
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            timeout,
        }),
        Ok(Err(e)) => Err(KubePodError::Api {
            verb: "patch",
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            reason: reason(e),
        }),
        Ok(Ok(_)) => Ok(()),
    }
}

/// The WorkloadEndpoint's labels: the pod's own, then Brindle's (which win on a clash).
pub fn endpoint_labels(
    pod_labels: BTreeMap<String, String>,
    namespace: &str,
    orchestrator: &str,
) -> BTreeMap<String, String> {
    let mut labels = pod_labels;
    labels.insert(NAMESPACE_LABEL.to_string(), namespace.to_string());
    labels.insert(ORCHESTRATOR_LABEL.to_string(), orchestrator.to_string());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_carries_the_first_address_and_all_of_them() {
        let ips: Vec<IpNet> = vec![
            "10.244.1.5/32".parse().expect("v4"),
            "fd00:244::5/128".parse().expect("v6"),
        ];
        let patch = ip_annotations_patch(&ips);
        assert_eq!(
            patch["metadata"]["annotations"][POD_IP_ANNOTATION],
            "10.244.1.5/32"
        );
        assert_eq!(
            patch["metadata"]["annotations"][POD_IPS_ANNOTATION],
            "10.244.1.5/32,fd00:244::5/128"
        );
    }

    #[test]
    fn brindle_labels_win_over_the_pods() {
        let pod = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            (NAMESPACE_LABEL.to_string(), "forged".to_string()),
        ]);
        let labels = endpoint_labels(pod, "shop", "k8s");
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[NAMESPACE_LABEL], "shop");
        assert_eq!(labels[ORCHESTRATOR_LABEL], "k8s");
    }
}
