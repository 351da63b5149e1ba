//! The CNI spec versions this plugin speaks, and what differs between them.
//!
//! Everything that differs between versions is a method here (`ips_have_version`, `has_check`,
//! `has_status_and_gc`, `interface_mtu`), so `result.rs` and `cmd.rs` never compare versions.

use crate::error::CniError;

/// A CNI spec version the plugin supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// All supported versions, oldest first, as `VERSION` reports them.
pub(crate) const SUPPORTED: [CniVersion; 5] = [
    CniVersion::V0_3_0,
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
    CniVersion::V1_1_0,
];

/// The version the plugin itself implements; the `cniVersion` of `VERSION`'s output.
pub(crate) const CURRENT: CniVersion = CniVersion::V1_1_0;

impl CniVersion {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a `cniVersion` string; anything not in [`SUPPORTED`] is error code 1.
    pub(crate) fn parse(s: &str) -> Result<Self, CniError> {
        SUPPORTED
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| CniError::IncompatibleVersion {
                reason: format!(
                    "unsupported cniVersion {s:?}; supported: {}",
                    supported_list()
                ),
            })
    }

    /// Up to 0.4.0 each entry of `ips` carries `"version": "4"|"6"`; 1.0.0 removed it.
    pub(crate) fn ips_have_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// CHECK exists from 0.4.0 on.
    pub(crate) fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub(crate) fn has_status_and_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// 1.1.0 added `mtu` to the result's interfaces.
    pub(crate) fn interface_mtu(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The output of the `VERSION` command.
pub(crate) fn version_info() -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct VersionInfo {
        cni_version: &'static str,
        supported_versions: Vec<&'static str>,
    }
    let info = VersionInfo {
        cni_version: CURRENT.as_str(),
        supported_versions: SUPPORTED.iter().map(|v| v.as_str()).collect(),
    };
    // Serializing a struct of strings cannot fail.
    serde_json::to_string(&info).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_supported_version() {
        for v in SUPPORTED {
            assert_eq!(CniVersion::parse(v.as_str()).ok(), Some(v));
        }
    }

    #[test]
    fn unsupported_versions_are_code_1() {
        for s in [
            "0.1.0", "0.2.0", "1.2.0", "2.0.0", "", "1.0", "v1.0.0", "1.1",
        ] {
            let err = CniVersion::parse(s).expect_err(s);
            assert_eq!(err.code(), 1, "{s}");
        }
    }

    #[test]
    fn verbs_and_fields_per_version() {
        use CniVersion::*;
        let table = [
            // version, ips carry "version", CHECK, STATUS/GC, interface mtu
            (V0_3_0, true, false, false, false),
            (V0_3_1, true, false, false, false),
            (V0_4_0, true, true, false, false),
            (V1_0_0, false, true, false, false),
            (V1_1_0, false, true, true, true),
        ];
        for (v, ip_version, check, status_gc, mtu) in table {
            assert_eq!(v.ips_have_version(), ip_version, "{v:?}");
            assert_eq!(v.has_check(), check, "{v:?}");
            assert_eq!(v.has_status_and_gc(), status_gc, "{v:?}");
            assert_eq!(v.interface_mtu(), mtu, "{v:?}");
        }
    }

    #[test]
    fn version_output_is_exact() {
        assert_eq!(
            version_info(),
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }
}
