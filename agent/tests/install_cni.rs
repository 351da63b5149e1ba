//! `brindle-install-cni` as the DaemonSet's init container runs it, into temporary directories
//! standing for the host's /opt/cni/bin and /etc/cni/net.d.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CONFLIST: &str = include_str!("../../manifests/10-brindle.conflist");

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "brindle-install-cni-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A host: a fake plugin binary to install, and the two target directories (not created yet).
struct Host {
    dir: TempDir,
}

impl Host {
    fn new(name: &str) -> Host {
        let dir = TempDir::new(name);
        std::fs::create_dir_all(dir.0.join("image")).expect("image dir");
        std::fs::write(dir.0.join("image/brindle"), b"\x7fELF plugin v1").expect("plugin");
        Host { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.0.join(rel)
    }

    fn run(&self, config: &str, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_brindle-install-cni"))
            .env_clear()
            .env("CNI_NETWORK_CONFIG", config)
            .env("KUBERNETES_NODE_NAME", "worker-1")
            .arg("--bin")
            .arg(self.path("image/brindle"))
            .arg("--bin-dir")
            .arg(self.path("opt/cni/bin"))
            .arg("--conf-dir")
            .arg(self.path("etc/cni/net.d"))
            .args(extra)
            .output()
            .expect("run brindle-install-cni")
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("installed file")
        .permissions()
        .mode()
        & 0o7777
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Files in `dir`, sorted (temp files would show here).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn installs_then_changes_nothing_on_a_second_run() {
    let host = Host::new("idempotent");
    let out = host.run(CONFLIST, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let plugin = host.path("opt/cni/bin/brindle");
    let conflist = host.path("etc/cni/net.d/10-brindle.conflist");
    assert_eq!(
        std::fs::read(&plugin).expect("plugin"),
        b"\x7fELF plugin v1"
    );
    assert_eq!(mode(&plugin), 0o755);
    let written = std::fs::read_to_string(&conflist).expect("conflist");
    assert_eq!(written.trim_end(), CONFLIST.trim_end());
    assert_eq!(mode(&conflist), 0o644, "no credentials: world-readable");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("installed ")
            .count(),
        2,
        "{}",
        text(&out)
    );

    let before = std::fs::metadata(&conflist)
        .and_then(|m| m.modified())
        .expect("mtime");
    let again = host.run(CONFLIST, &[]);
    assert!(again.status.success(), "{}", text(&again));
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(stdout.matches("unchanged ").count(), 2, "{stdout}");
    let after = std::fs::metadata(&conflist)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(before, after, "an unchanged conflist is not rewritten");
    assert_eq!(
        listing(&host.path("etc/cni/net.d")),
        ["10-brindle.conflist"]
    );
    assert_eq!(listing(&host.path("opt/cni/bin")), ["brindle"]);
}

#[test]
fn an_upgrade_replaces_the_plugin_and_a_changed_conflist() {
    let host = Host::new("upgrade");
    assert!(host.run(CONFLIST, &[]).status.success());
    std::fs::write(host.path("image/brindle"), b"\x7fELF plugin v2").expect("new plugin");
    let changed = CONFLIST.replace("\"log_level\": \"info\"", "\"log_level\": \"debug\"");
    assert_ne!(changed, CONFLIST);
    let out = host.run(&changed, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(host.path("opt/cni/bin/brindle")).expect("plugin"),
        b"\x7fELF plugin v2"
    );
    let written =
        std::fs::read_to_string(host.path("etc/cni/net.d/10-brindle.conflist")).expect("conf");
    assert!(written.contains("\"debug\""), "{written}");
    assert_eq!(
        listing(&host.path("etc/cni/net.d")),
        ["10-brindle.conflist"]
    );
}

#[test]
fn a_conflist_with_a_kubeconfig_is_private_and_placeholders_are_filled() {
    let host = Host::new("secret");
    let config = r#"{"name":"k8s-pod-network","cniVersion":"1.0.0","plugins":[
        {"type":"brindle","nodename":"__KUBERNETES_NODE_NAME__","mtu":__CNI_MTU__,
         "kubernetes":{"kubeconfig":"/etc/cni/net.d/brindle-kubeconfig"}}]}"#;
    let out = host.run(config, &["--mtu", "1450"]);
    assert!(out.status.success(), "{}", text(&out));
    let conflist = host.path("etc/cni/net.d/10-brindle.conflist");
    assert_eq!(mode(&conflist), 0o600, "credentials: owner only");
    let written = std::fs::read_to_string(&conflist).expect("conflist");
    assert!(
        written.contains("\"worker-1\"") && written.contains("\"mtu\":1450"),
        "{written}"
    );
    // A mode that was wrong is corrected even when the bytes are the same.
    std::fs::set_permissions(&conflist, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = host.run(config, &["--mtu", "1450"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mode(&conflist), 0o600);
}

#[test]
fn a_bad_conflist_changes_nothing() {
    let host = Host::new("bad");
    assert!(host.run(CONFLIST, &[]).status.success());
    let conflist = host.path("etc/cni/net.d/10-brindle.conflist");
    let before = std::fs::read(&conflist).expect("conflist");
    std::fs::write(host.path("image/brindle"), b"\x7fELF plugin v2").expect("new plugin");
    for (bad, want) in [
        (
            "{\"name\": \"k8s-pod-network\", \"plugins\": [",
            "not valid JSON",
        ),
        (
            r#"{"name":"n","plugins":[{"type":"brindle","mtu":__CNI_MTUU__}]}"#,
            "__CNI_MTUU__",
        ),
        (r#"{"name":"n","plugins":[]}"#, "plugins"),
    ] {
        let out = host.run(bad, &[]);
        assert!(!out.status.success(), "{bad}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{bad}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert_eq!(std::fs::read(&conflist).expect("conflist"), before);
        assert_eq!(
            std::fs::read(host.path("opt/cni/bin/brindle")).expect("plugin"),
            b"\x7fELF plugin v1",
            "not even the plugin is replaced"
        );
        assert_eq!(
            listing(&host.path("etc/cni/net.d")),
            ["10-brindle.conflist"]
        );
    }
}

#[test]
fn help_names_the_variables() {
    let out = Command::new(env!("CARGO_BIN_EXE_brindle-install-cni"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "CNI_NETWORK_CONFIG",
        "CNI_NET_DIR",
        "CNI_BIN_DIR",
        "0600",
        "atomic",
    ] {
        assert!(help.contains(word), "{word} in --help:\n{help}");
    }
}
