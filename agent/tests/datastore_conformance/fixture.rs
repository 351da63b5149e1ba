//! The backends the conformance cases run against, a real etcd server for them, and a fake of
//! the Kubernetes API server (`fake_apiserver.rs`).

#[path = "fake_apiserver.rs"]
pub mod fake_apiserver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use brindle_agent::datastore::embedded::{EmbeddedConfig, EmbeddedStore};
use brindle_agent::datastore::etcd::{EtcdConfig, EtcdStore};
use brindle_agent::datastore::kubernetes::{crd, KubernetesConfig, KubernetesStore};
use brindle_ipam::store::{MemStore, Store};

/// A name unique to this process and call, for files and key prefixes.
fn unique(test: &str) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{test}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One backend instance for one test, with whatever keeps it alive.
pub struct Backend {
    store: Arc<dyn Store>,
    /// What another process passes to `datastore::open` to reach the same store.
    spec: Option<String>,
    etcd: Option<EtcdStore>,
    fake: Option<fake_apiserver::FakeApiServer>,
    _db: Option<TempDb>,
    _server: Option<Arc<EtcdServer>>,
}

impl Backend {
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    pub fn spec(&self) -> Option<String> {
        self.spec.clone()
    }

    /// Drops the history up to `revision`. The embedded store of a `dedicated` backend keeps
    /// only two events and compacts by itself; the memory store keeps none.
    pub async fn compact(&self, revision: u64) {
        if let Some(etcd) = &self.etcd {
            etcd.compact(revision).await.expect("compact etcd");
        }
        if let Some(fake) = &self.fake {
            fake.compact(revision);
        }
    }

    pub async fn mem(_test: &str, _dedicated: bool) -> Option<Backend> {
        Some(Backend {
            store: Arc::new(MemStore::default()),
            spec: None,
            etcd: None,
            fake: None,
            _db: None,
            _server: None,
        })
    }

    pub async fn embedded(test: &str, dedicated: bool) -> Option<Backend> {
        let db = TempDb(std::env::temp_dir().join(format!("brindle-conf-{}.db", unique(test))));
        let config = EmbeddedConfig {
            history: if dedicated { 2 } else { 10_000 },
            poll_interval: Duration::from_millis(10),
            ..EmbeddedConfig::default()
        };
        let store = EmbeddedStore::open_with(&db.0, config)
            .await
            .expect("open embedded");
        Some(Backend {
            store: Arc::new(store),
            spec: Some(format!("embedded:{}", db.0.display())),
            etcd: None,
            fake: None,
            _db: Some(db),
            _server: None,
        })
    }

    /// A store under a prefix of its own, on the shared server or (`dedicated`) on a server of
    /// its own.
    pub async fn etcd(test: &str, dedicated: bool) -> Option<Backend> {
        let server = if dedicated {
            Arc::new(EtcdServer::start_or_skip(test)?)
        } else {
            EtcdServer::shared()?
        };
        let spec = format!(
            "etcd://127.0.0.1:{}?prefix=/conformance/{}",
            server.port(),
            unique(test)
        );
        let config = EtcdConfig {
            // Lists of more than a few items take several pages (at one revision).
            list_page: 7,
            ..EtcdConfig::from_url(&spec).expect("etcd url")
        };
        let store = EtcdStore::connect(config).await.expect("connect etcd");
        Some(Backend {
            store: Arc::new(store.clone()),
            spec: Some(spec),
            etcd: Some(store),
            fake: None,
            _db: None,
            _server: Some(server),
        })
    }
}

impl Backend {
    /// The kubernetes backend against a FAKE of the API server (`fake_apiserver.rs`: its
    /// semantics for custom resources, in process; not a real API server), serving Brindle's
    /// CRDs and a `Counter` CRD for the multi-process case. Lists take several pages.
    pub async fn kubernetes_fake(test: &str, _dedicated: bool) -> Option<Backend> {
        let mut kinds: Vec<&str> = crd::KINDS.iter().map(|k| k.kind).collect();
        kinds.push("Counter");
        let kubeconfig =
            std::env::temp_dir().join(format!("brindle-kubeconfig-{}.yaml", unique(test)));
        let fake = fake_apiserver::FakeApiServer::start(&kinds, kubeconfig);
        let spec = fake.spec();
        let config = KubernetesConfig::from_spec(&spec).expect("kubernetes spec");
        let store = KubernetesStore::connect(&config)
            .await
            .expect("connect to the fake API server");
        // Small pages, so that lists continue across several (at one resourceVersion).
        let store = KubernetesStore::with_page(store.client(), 7);
        Some(Backend {
            store: Arc::new(store),
            spec: Some(spec),
            etcd: None,
            fake: Some(fake),
            _db: None,
            _server: None,
        })
    }
}

/// A database file under the temp dir, removed (with its -wal and -shm files) on drop.
struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A real etcd on loopback ports with a data dir of its own; killed, and the dir removed, on
/// drop (a failing test unwinds through the drop too).
pub struct EtcdServer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// The etcd binary, or `None` (after saying why) when the etcd tests are to be skipped.
    /// Under CI a missing binary fails the test instead.
    fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("BRINDLE_ETCD") {
            return Some(PathBuf::from(path));
        }
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("etcd"))
                .find(|path| path.is_file())
        });
        if found.is_none() {
            let msg = "no `etcd` binary in PATH: install Debian's etcd-server \
                       (scripts/test does) or set BRINDLE_ETCD";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("skipping etcd conformance test: {msg}");
        }
        found
    }

    /// Starts a server for `test`, or `None` when etcd tests are skipped.
    pub fn start_or_skip(test: &str) -> Option<EtcdServer> {
        let binary = Self::binary()?;
        // tmpfs when there is one: etcd fsyncs every write.
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("brindle-etcd-{}", unique(test)));
        std::fs::create_dir_all(&dir).expect("etcd test dir");
        let mut server = EtcdServer {
            binary,
            dir,
            port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        server.spawn();
        Some(server)
    }

    /// The server the tests that neither compact nor restart share, each under its own prefix;
    /// it stops when the last of them ends.
    pub fn shared() -> Option<Arc<EtcdServer>> {
        static SHARED: Mutex<Weak<EtcdServer>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = shared.upgrade() {
            return Some(server);
        }
        let server = Arc::new(Self::start_or_skip("shared")?);
        *shared = Arc::downgrade(&server);
        Some(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if health(self.port) {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                self.stop();
                panic!(
                    "etcd on port {} did not become healthy ({}); its log ends:\n{tail}",
                    self.port,
                    exited.map_or("timeout".to_string(), |s| s.to_string())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /health` answers `"health":"true"`.
fn health(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}
