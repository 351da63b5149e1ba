//! Unit tests of the parts that need no server; `agent/tests/datastore_conformance.rs` runs the
//! store against a real etcd.

use super::*;

fn endpoints(url: &str) -> Vec<String> {
    EtcdConfig::from_url(url).expect(url).endpoints
}

#[test]
fn url_forms() {
    let config = EtcdConfig::from_url("etcd://127.0.0.1:2379").expect("plain");
    assert_eq!(config.endpoints, ["127.0.0.1:2379"]);
    assert_eq!(config.prefix, DEFAULT_PREFIX);

    assert_eq!(endpoints("etcd://etcd-0"), ["etcd-0:2379"]);
    assert_eq!(
        endpoints("etcd://10.0.0.1:2379,10.0.0.2:22379/"),
        ["10.0.0.1:2379", "10.0.0.2:22379"]
    );
    assert_eq!(
        endpoints("etcd://[fd00::1]:2379,[fd00::2]"),
        ["[fd00::1]:2379", "[fd00::2]:2379"]
    );

    let config = EtcdConfig::from_url("etcd://h:1?prefix=/clusters/a/").expect("prefix");
    assert_eq!(config.prefix, "/clusters/a");
    assert_eq!(
        EtcdConfig::from_url("etcd://h:1?prefix=/")
            .expect("root")
            .prefix,
        ""
    );
}

#[test]
fn bad_urls_say_why() {
    for (url, why) in [
        ("etcd://", "empty endpoint"),
        ("etcd://a:1,,b:2", "empty endpoint"),
        ("etcd://a:99999", "bad host or port"),
        ("etcd://a:", "bad host or port"),
        ("etcd://fd00::1:2379", "[addr]:port"),
        ("etcd://a:1/prefix", "invalid endpoint"),
        ("etcd://user@a:1", "invalid endpoint"),
        ("etcd://a:1?prefix=rel", "must start with '/'"),
        ("etcd://a:1?timeout=3", "unknown parameter"),
        ("etcd+https://a:1", "TLS"),
    ] {
        let err = EtcdConfig::from_url(url).expect_err(url).to_string();
        assert!(err.contains(why), "{url}: {err}");
        assert!(err.contains(url), "{url}: {err}");
    }
}

#[test]
fn key_layout() {
    let store = EtcdStore::new(EtcdConfig::from_url("etcd://h:1").expect("url"));
    let db = &store.shared;
    assert_eq!(
        db.key("IPPool", "p1").expect("key"),
        b"/brindle/v1/IPPool/p1"
    );
    assert_eq!(
        db.parse_key(b"/brindle/v1/IPAMBlock/10-0-0-0-26"),
        Some(("IPAMBlock".to_string(), "10-0-0-0-26".to_string()))
    );
    // Names may hold '/'; kinds may not.
    assert_eq!(
        db.parse_key(b"/brindle/v1/K/a/b"),
        Some(("K".to_string(), "a/b".to_string()))
    );
    assert!(db.key("A/B", "x").is_err());
    assert!(db.key("", "x").is_err());
    assert_eq!(db.parse_key(b"/brindle/v1/NoName"), None);
    assert_eq!(db.parse_key(b"/other/v1/K/n"), None);
    assert_eq!(db.parse_key(b"/brindle/v1/K/\xff"), None);
}

#[tokio::test]
async fn unreachable_endpoints_are_unavailable_naming_each() {
    let store = EtcdStore::new(EtcdConfig {
        timeout: Duration::from_secs(1),
        ..EtcdConfig::from_url("etcd://127.0.0.1:1,127.0.0.1:2").expect("url")
    });
    let err = store.get("IPPool", "p").await.expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{text}");
    assert!(
        text.contains("127.0.0.1:1") && text.contains("127.0.0.1:2"),
        "{text}"
    );
}
