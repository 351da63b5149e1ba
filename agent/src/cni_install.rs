//! `brindle-install-cni`: puts the CNI plugin binary and the conflist on the host, from the
//! DaemonSet's init container (host directories mounted at `/host/opt/cni/bin` and
//! `/host/etc/cni/net.d`), as Calico's `install-cni` does.
//!
//! Every file is written to a temporary file in the target directory and renamed over the
//! target, so the kubelet or the container runtime never reads a half-written conflist or
//! executes a half-copied plugin. A target that already has the same bytes and mode is left
//! alone (its mtime too): running the installer again changes nothing. The conflist gets mode
//! 0600 when it holds credentials (a kubeconfig, a token, a password...), 0644 otherwise.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Mode of installed plugin binaries.
pub const BINARY_MODE: u32 = 0o755;
/// Mode of a conflist without credentials.
pub const PUBLIC_MODE: u32 = 0o644;
/// Mode of a conflist with credentials.
pub const SECRET_MODE: u32 = 0o600;

/// What to install.
#[derive(Clone, Debug)]
pub struct InstallConfig {
    /// Plugin binaries to copy into `bin_dir`, under their own file names.
    pub binaries: Vec<PathBuf>,
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// File name of the conflist in `conf_dir`.
    pub conf_name: String,
    /// The conflist text, before substitution.
    pub network_config: String,
    /// `__TOKEN__` placeholders and their values (`__KUBERNETES_NODE_NAME__`, `__CNI_MTU__`).
    pub substitutions: Vec<(String, String)>,
    /// The conflist's mode; `None`: 0600 with credentials, else 0644.
    pub conf_mode: Option<u32>,
}

/// Why installing failed. Nothing is left half-written in either case.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the network configuration is not valid JSON: {0}")]
    BadJson(serde_json::Error),
    #[error("the network configuration is not a conflist: {0}")]
    NotConflist(String),
    #[error("the network configuration still holds the placeholder {0} (set its variable)")]
    Placeholder(String),
    #[error("invalid conflist name {0:?}: a plain file name is expected")]
    BadName(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub path: PathBuf,
    pub changed: bool,
    pub mode: u32,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The conflist after substitution, checked: a JSON object with a `name` and a non-empty
/// `plugins` list of objects that each have a `type`.
pub fn render_conflist(
    text: &str,
    substitutions: &[(String, String)],
) -> Result<String, InstallError> {
    let mut out = text.to_string();
    for (token, value) in substitutions {
        out = out.replace(token.as_str(), value);
    }
    // A placeholder left over would reach the plugin as a literal string.
    let placeholder = regex::Regex::new("__[A-Z][A-Z0-9_]*__")
        .map_err(|e| InstallError::NotConflist(format!("placeholder pattern: {e}")))?;
    if let Some(found) = placeholder.find(&out) {
        return Err(InstallError::Placeholder(found.as_str().to_string()));
    }
    let json: Value = serde_json::from_str(&out).map_err(InstallError::BadJson)?;
    let not = |why: &str| InstallError::NotConflist(why.to_string());
    let object = json.as_object().ok_or_else(|| not("not a JSON object"))?;
    if !object.get("name").is_some_and(Value::is_string) {
        return Err(not("no \"name\""));
    }
    let plugins = object
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| not("no \"plugins\" list"))?;
    if plugins.is_empty() {
        return Err(not("\"plugins\" is empty"));
    }
    for (i, plugin) in plugins.iter().enumerate() {
        if !plugin.get("type").is_some_and(Value::is_string) {
            return Err(InstallError::NotConflist(format!(
                "plugins[{i}] has no \"type\""
            )));
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Whether a conflist carries credentials: a key naming a kubeconfig, token, password, secret
/// or private key, anywhere in it.
pub fn holds_credentials(conflist: &str) -> bool {
    fn walk(value: &Value) -> bool {
        match value {
            Value::Object(map) => map.iter().any(|(key, v)| {
                let key = key.to_ascii_lowercase();
                [
                    "kubeconfig",
                    "token",
                    "password",
                    "secret",
                    "client-key",
                    "private",
                ]
                .iter()
                .any(|word| key.contains(word))
                    || walk(v)
            }),
            Value::Array(items) => items.iter().any(walk),
            _ => false,
        }
    }
    serde_json::from_str::<Value>(conflist).is_ok_and(|v| walk(&v))
}

/// Writes `bytes` to `path` with `mode`, atomically (temp file in the same directory, fsync,
/// rename), unless `path` already has exactly these bytes and this mode.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<Outcome, InstallError> {
    let unchanged = match fs::read(path) {
        Ok(current) => {
            current == bytes
                && fs::metadata(path)
                    .map(|m| m.permissions().mode() & 0o7777 == mode)
                    .unwrap_or(false)
        }
        Err(_) => false,
    };
    if unchanged {
        return Ok(Outcome {
            path: path.to_path_buf(),
            changed: false,
            mode,
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot file: the runtime ignores it (it reads *.conf, *.conflist, *.json).
    let temp = dir.join(format!(".{file_name}.brindle-tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            // Created with the final mode's restrictions so a secret is never readable by others.
            .mode(mode & 0o700)
            .open(&temp)
            .map_err(io(&temp))?;
        file.write_all(bytes).map_err(io(&temp))?;
        // The umask must not decide the final mode.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        drop(file);
        fs::rename(&temp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    Ok(Outcome {
        path: path.to_path_buf(),
        changed: true,
        mode,
    })
}

/// Installs the binaries, then the conflist (last: once it is there the runtime uses the
/// plugin, which must be in place by then).
pub fn install(config: &InstallConfig) -> Result<Vec<Outcome>, InstallError> {
    if config.conf_name.is_empty()
        || config.conf_name.contains('/')
        || config.conf_name.starts_with('.')
    {
        return Err(InstallError::BadName(config.conf_name.clone()));
    }
    // Checked before anything is written: a bad conflist leaves the host as it was.
    let conflist = render_conflist(&config.network_config, &config.substitutions)?;
    let conf_mode = config.conf_mode.unwrap_or(if holds_credentials(&conflist) {
        SECRET_MODE
    } else {
        PUBLIC_MODE
    });
    let mut binaries = Vec::new();
    for source in &config.binaries {
        let bytes = fs::read(source).map_err(io(source))?;
        let name = source.file_name().ok_or_else(|| InstallError::Io {
            path: source.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        })?;
        binaries.push((config.bin_dir.join(name), bytes));
    }
    fs::create_dir_all(&config.bin_dir).map_err(io(&config.bin_dir))?;
    fs::create_dir_all(&config.conf_dir).map_err(io(&config.conf_dir))?;
    let mut outcomes = Vec::new();
    for (target, bytes) in binaries {
        outcomes.push(write_atomically(&target, &bytes, BINARY_MODE)?);
    }
    outcomes.push(write_atomically(
        &config.conf_dir.join(&config.conf_name),
        conflist.as_bytes(),
        conf_mode,
    )?);
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFLIST: &str = include_str!("../../manifests/10-brindle.conflist");

    #[test]
    fn the_shipped_conflist_renders_and_is_public() {
        let out = render_conflist(CONFLIST, &[]).expect("valid");
        assert!(!holds_credentials(&out));
    }

    #[test]
    fn placeholders_are_substituted_and_leftovers_refused() {
        let text = r#"{"name":"n","plugins":[{"type":"brindle","mtu":__CNI_MTU__,"nodename":"__KUBERNETES_NODE_NAME__"}]}"#;
        let subs = vec![
            ("__CNI_MTU__".to_string(), "1450".to_string()),
            (
                "__KUBERNETES_NODE_NAME__".to_string(),
                "worker-1".to_string(),
            ),
        ];
        let out = render_conflist(text, &subs).expect("valid");
        assert!(
            out.contains("\"mtu\":1450") && out.contains("worker-1"),
            "{out}"
        );
        let err = render_conflist(text, &subs[..1]).expect_err("left over");
        assert!(
            err.to_string().contains("__KUBERNETES_NODE_NAME__"),
            "{err}"
        );
    }

    #[test]
    fn not_a_conflist_is_refused() {
        for (text, want) in [
            ("{", "not valid JSON"),
            ("[]", "not a JSON object"),
            (r#"{"plugins":[{"type":"brindle"}]}"#, "no \"name\""),
            (r#"{"name":"n","type":"brindle"}"#, "no \"plugins\""),
            (r#"{"name":"n","plugins":[]}"#, "empty"),
            (r#"{"name":"n","plugins":[{"mtu":1}]}"#, "plugins[0]"),
        ] {
            let err = render_conflist(text, &[]).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn credentials_are_recognised() {
        assert!(holds_credentials(
            r#"{"name":"n","plugins":[{"type":"x","kubernetes":{"kubeconfig":"/etc/cni/net.d/k"}}]}"#
        ));
        assert!(holds_credentials(
            r#"{"name":"n","plugins":[{"type":"x","auth":{"Token":"abc"}}]}"#
        ));
        assert!(!holds_credentials(
            r#"{"name":"n","plugins":[{"type":"portmap","capabilities":{"portMappings":true}}]}"#
        ));
    }
}
