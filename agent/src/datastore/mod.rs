//! Datastore backends, chosen at run time from the `--datastore` flag.
//!
//! | value                      | backend                                            |
//! |----------------------------|----------------------------------------------------|
//! | `embedded:/path/to/file.db`| [`embedded::EmbeddedStore`]: SQLite, one host      |
//! | `etcd://host:port[,host:port...][?prefix=/brindle]` | [`etcd::EtcdStore`]: etcd v3, clusters |
//! | `kubernetes[:/path/to/kubeconfig]` | [`kubernetes::KubernetesStore`]: custom resources `brindle.dev/v1` through the API server (in-cluster config or `KUBECONFIG`, or the kubeconfig named) |
//!
//! Every backend implements [`brindle_ipam::store::Store`] with the same semantics (BRIEF §3).

pub mod embedded;
pub mod etcd;
pub mod kubernetes;

use std::path::PathBuf;
use std::sync::Arc;

use brindle_ipam::store::Store;

/// The forms `--datastore` accepts, for error messages.
const ACCEPTED_FORMS: &str =
    "embedded:/path/to/file.db, etcd://host:port[,host:port...][?prefix=/brindle] \
     or kubernetes[:/path/to/kubeconfig]";

/// Why a datastore could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error("invalid datastore {spec:?}: expected {ACCEPTED_FORMS}")]
    InvalidSpec { spec: String },
    #[error("embedded datastore {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("embedded datastore {}: {context}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        context: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "embedded datastore {}: schema version {found} is not supported (this build knows {supported}); \
         a newer brindle wrote it",
        path.display()
    )]
    SchemaVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("embedded datastore {}: {reason}", path.display())]
    Embedded { path: PathBuf, reason: String },
    #[error("etcd datastore {spec}: {reason}")]
    Etcd { spec: String, reason: String },
    #[error("kubernetes datastore: {reason}")]
    Kubernetes { reason: String },
}

/// Opens the datastore named by a `--datastore` value.
pub async fn open(spec: &str) -> Result<Arc<dyn Store>, DatastoreError> {
    match parse(spec)? {
        Backend::Embedded(path) => Ok(Arc::new(embedded::EmbeddedStore::open(path).await?)),
        Backend::Etcd(config) => Ok(Arc::new(etcd::EtcdStore::connect(config).await?)),
        Backend::Kubernetes(config) => Ok(Arc::new(
            kubernetes::KubernetesStore::connect(&config).await?,
        )),
    }
}

#[derive(Debug, PartialEq)]
enum Backend {
    Embedded(PathBuf),
    Etcd(etcd::EtcdConfig),
    Kubernetes(kubernetes::KubernetesConfig),
}

fn parse(spec: &str) -> Result<Backend, DatastoreError> {
    let invalid = || DatastoreError::InvalidSpec {
        spec: spec.to_string(),
    };
    if let Some(path) = spec.strip_prefix("embedded:") {
        if path.is_empty() {
            return Err(invalid());
        }
        Ok(Backend::Embedded(PathBuf::from(path)))
    } else if spec.starts_with("etcd://") || spec.starts_with("etcd+https://") {
        Ok(Backend::Etcd(etcd::EtcdConfig::from_url(spec)?))
    } else if let Some(config) = kubernetes::KubernetesConfig::from_spec(spec) {
        Ok(Backend::Kubernetes(config))
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accepted_forms() {
        assert_eq!(
            parse("embedded:/var/lib/brindle/store.db").expect("embedded"),
            Backend::Embedded(PathBuf::from("/var/lib/brindle/store.db"))
        );
        assert!(matches!(
            parse("etcd://10.0.0.1:2379").expect("etcd"),
            Backend::Etcd(config) if config.endpoints == ["10.0.0.1:2379"]
        ));
        assert_eq!(
            parse("kubernetes").expect("k8s"),
            Backend::Kubernetes(kubernetes::KubernetesConfig::default())
        );
        assert_eq!(
            parse("kubernetes:/etc/brindle/kubeconfig").expect("k8s with a kubeconfig"),
            Backend::Kubernetes(kubernetes::KubernetesConfig {
                kubeconfig: Some(PathBuf::from("/etc/brindle/kubeconfig"))
            })
        );
    }

    #[test]
    fn rejects_other_forms_naming_the_accepted_ones() {
        for spec in [
            "",
            "embedded:",
            "sqlite:/x.db",
            "/x.db",
            "Kubernetes",
            "kubernetes:",
        ] {
            let err = parse(spec).expect_err(spec).to_string();
            assert!(err.contains("embedded:/path/to/file.db"), "{err}");
            assert!(err.contains("kubernetes"), "{err}");
        }
    }

    #[tokio::test]
    async fn unreachable_kubernetes_api_server_over_tls_is_an_error_naming_it() {
        // https through rustls (the in-cluster form); port 1 on loopback refuses at once.
        let path = std::env::temp_dir().join(format!(
            "brindle-ds-kubeconfig-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
             users:\n- name: u\n  user:\n    token: abc\n\
             contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n",
        )
        .expect("write kubeconfig");
        let err = open(&format!("kubernetes:{}", path.display()))
            .await
            .err()
            .expect("refused");
        let _ = std::fs::remove_file(&path);
        let text = err.to_string();
        assert!(text.contains("https://127.0.0.1:1"), "{text}");
    }

    #[tokio::test]
    async fn missing_kubeconfig_is_an_error_naming_it() {
        let err = open("kubernetes:/nonexistent/brindle-kubeconfig")
            .await
            .err()
            .expect("no such file")
            .to_string();
        assert!(err.contains("/nonexistent/brindle-kubeconfig"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_etcd_is_an_error_naming_it() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let err = open("etcd://127.0.0.1:1").await.err().expect("refused");
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:1"), "{text}");
    }

    #[tokio::test]
    async fn open_embedded_creates_parent_dirs_and_file() {
        let dir = std::env::temp_dir().join(format!(
            "brindle-ds-open-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let path = dir.join("a/b/store.db");
        let store = open(&format!("embedded:{}", path.display()))
            .await
            .expect("open");
        let rev = store
            .create("IPPool", "p", b"{}".to_vec())
            .await
            .expect("create");
        assert_eq!(rev, 1);
        assert!(path.is_file());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
