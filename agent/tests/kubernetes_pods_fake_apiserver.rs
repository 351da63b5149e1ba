//! The pod side of Kubernetes mode (agent/src/kube_pod.rs) against a FAKE of the API server
//! (not a real one: none can run here; datastore_conformance/fake_apiserver.rs): the Pod's
//! labels read, its addresses written as a merge patch touching only the two annotations, and
//! a down API server answered with a clear error within the deadline (the ADD goes on).

#[allow(dead_code)]
#[path = "datastore_conformance/fake_apiserver.rs"]
mod fake_apiserver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use brindle_agent::datastore::kubernetes::{self, crd, KubernetesConfig};
use brindle_agent::kube_pod::{self, POD_IPS_ANNOTATION, POD_IP_ANNOTATION};
use fake_apiserver::FakeApiServer;
use ipnet::IpNet;
use serde_json::json;

fn kubeconfig_path(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!(
        "brindle-k8s-pods-{name}-{}-{nanos}",
        std::process::id()
    ))
}

async fn fake_and_client(name: &str) -> (FakeApiServer, kube::Client) {
    let kinds: Vec<&str> = crd::KINDS.iter().map(|k| k.kind).collect();
    let fake = FakeApiServer::start(&kinds, kubeconfig_path(name));
    let config = KubernetesConfig::from_spec(&fake.spec()).expect("kubernetes spec");
    let (client, _) = kubernetes::client(&config).await.expect("client");
    fake.set_core_pod(
        "shop",
        "web-1",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "shop", "resourceVersion": "5001",
                "labels": { "app": "web", "tier": "front" },
                "annotations": { "kept": "yes" }
            },
            "spec": { "nodeName": "worker-1", "containers": [{ "name": "c", "image": "x" }] }
        }),
    );
    (fake, client)
}

#[tokio::test]
async fn fake_apiserver_pod_labels_read_and_ips_written_as_a_merge_patch() {
    let (fake, client) = fake_and_client("labels").await;
    let labels = kube_pod::pod_labels(&client, "shop", "web-1", kube_pod::POD_API_TIMEOUT)
        .await
        .expect("labels");
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
    let wep_labels = kube_pod::endpoint_labels(labels, "shop", "k8s");
    assert_eq!(wep_labels[kube_pod::NAMESPACE_LABEL], "shop");

    let ips: Vec<IpNet> = vec![
        "10.244.3.9/32".parse().expect("v4"),
        "fd00:244::9/128".parse().expect("v6"),
    ];
    kube_pod::annotate_pod_ips(&client, "shop", "web-1", &ips, kube_pod::POD_API_TIMEOUT)
        .await
        .expect("annotate");
    // Exactly what the server received: one merge patch with the two annotations, nothing else.
    let patches = fake.pod_patches();
    assert_eq!(
        patches,
        vec![(
            "shop".to_string(),
            "web-1".to_string(),
            json!({ "metadata": { "annotations": {
                POD_IP_ANNOTATION: "10.244.3.9/32",
                POD_IPS_ANNOTATION: "10.244.3.9/32,fd00:244::9/128",
            }}})
        )]
    );
    let pod = fake.core_pod("shop", "web-1").expect("pod");
    assert_eq!(pod["metadata"]["annotations"]["kept"], "yes", "{pod}");
    assert_eq!(
        pod["metadata"]["annotations"][POD_IP_ANNOTATION],
        "10.244.3.9/32"
    );
    assert_eq!(pod["metadata"]["labels"]["app"], "web", "labels untouched");
    assert_eq!(pod["spec"]["nodeName"], "worker-1", "spec untouched");
}

#[tokio::test]
async fn fake_apiserver_down_or_missing_pod_is_a_clear_error_within_the_deadline() {
    let (fake, client) = fake_and_client("down").await;
    let missing = kube_pod::pod_labels(&client, "shop", "gone", kube_pod::POD_API_TIMEOUT)
        .await
        .expect_err("no such pod");
    assert!(missing.to_string().contains("404"), "{missing}");

    fake.set_unavailable(true);
    let started = Instant::now();
    let down = kube_pod::pod_labels(&client, "shop", "web-1", Duration::from_millis(500))
        .await
        .expect_err("API server down");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let text = down.to_string();
    assert!(
        text.contains("shop/web-1") && (text.contains("503") || text.contains("within")),
        "{text}"
    );
    let ips: Vec<IpNet> = vec!["10.244.3.9/32".parse().expect("v4")];
    assert!(
        kube_pod::annotate_pod_ips(&client, "shop", "web-1", &ips, Duration::from_millis(500))
            .await
            .is_err()
    );
    fake.set_unavailable(false);
    kube_pod::annotate_pod_ips(&client, "shop", "web-1", &ips, kube_pod::POD_API_TIMEOUT)
        .await
        .expect("after the outage");
    let pod = fake.core_pod("shop", "web-1").expect("pod");
    assert_eq!(
        pod["metadata"]["annotations"][POD_IPS_ANNOTATION],
        "10.244.3.9/32"
    );
}
