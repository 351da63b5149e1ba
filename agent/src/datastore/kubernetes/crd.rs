//! The CustomResourceDefinitions of every Brindle kind, generated from the Rust types: the
//! `crdgen` binary prints them and `manifests/crds.yaml` is its output.
//!
//! Every kind is cluster-scoped under `brindle.dev/v1`, in the category `brindle`
//! (`kubectl get brindle` lists them all). The spec's schema is the type's JSON Schema
//! (schemars, with serde's names), made structural as Kubernetes requires (kube's
//! `StructuralSchemaRewriter`), without `default`s (the API server would write them into the
//! stored objects, which then would not read back as Brindle wrote them) and without
//! `additionalProperties: false` (not allowed next to `properties`; the API server prunes unknown
//! fields instead). No kind has a status, so no CRD has a status subresource.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use schemars::JsonSchema;
use serde_json::{json, Value};

use super::{names, GROUP, VERSION};
use crate::model::{
    BgpConfigurationSpec, BgpPeerSpec, BlockAffinitySpec, IpPoolSpec, IpamBlockSpec,
    IpamConfigSpec, IpamHandleSpec, NodeSpec, Resource, WorkloadEndpointSpec,
};

/// A column of `kubectl get`.
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `boolean` or `date`.
    pub type_: &'static str,
    pub json_path: &'static str,
    /// 0: always shown; 1: with `-o wide`.
    pub priority: u8,
}

const fn col(name: &'static str, type_: &'static str, json_path: &'static str) -> Column {
    Column {
        name,
        type_,
        json_path,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, json_path: &'static str) -> Column {
    Column {
        name,
        type_,
        json_path,
        priority: 1,
    }
}

/// One kind the datastore holds.
pub struct KindInfo {
    pub kind: &'static str,
    pub columns: &'static [Column],
    schema: fn() -> Value,
}

/// Every kind, in the order crdgen prints them.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: IpPoolSpec::KIND,
        columns: &[
            col("CIDR", "string", ".spec.cidr"),
            col("BLOCK SIZE", "integer", ".spec.blockSize"),
            col("VXLAN", "string", ".spec.vxlanMode"),
            col("IPIP", "string", ".spec.ipipMode"),
            col("NAT", "boolean", ".spec.natOutgoing"),
            wide("DISABLED", "boolean", ".spec.disabled"),
            wide("SELECTOR", "string", ".spec.nodeSelector"),
        ],
        schema: spec_schema::<IpPoolSpec>,
    },
    KindInfo {
        kind: IpamBlockSpec::KIND,
        columns: &[
            col("CIDR", "string", ".spec.cidr"),
            col("AFFINITY", "string", ".spec.affinity"),
        ],
        schema: spec_schema::<IpamBlockSpec>,
    },
    KindInfo {
        kind: BlockAffinitySpec::KIND,
        columns: &[
            col("NODE", "string", ".spec.node"),
            col("CIDR", "string", ".spec.cidr"),
            col("STATE", "string", ".spec.state"),
        ],
        schema: spec_schema::<BlockAffinitySpec>,
    },
    KindInfo {
        kind: IpamHandleSpec::KIND,
        columns: &[col("HANDLE", "string", ".spec.handleID")],
        schema: spec_schema::<IpamHandleSpec>,
    },
    KindInfo {
        kind: IpamConfigSpec::KIND,
        columns: &[
            col("STRICT AFFINITY", "boolean", ".spec.strictAffinity"),
            col("MAX BLOCKS", "integer", ".spec.maxBlocksPerHost"),
        ],
        schema: spec_schema::<IpamConfigSpec>,
    },
    KindInfo {
        kind: NodeSpec::KIND,
        columns: &[
            col("IPV4", "string", ".spec.bgp.ipv4Address"),
            col("AS", "integer", ".spec.bgp.asNumber"),
            wide("IPV6", "string", ".spec.bgp.ipv6Address"),
        ],
        schema: spec_schema::<NodeSpec>,
    },
    KindInfo {
        kind: WorkloadEndpointSpec::KIND,
        columns: &[
            col("NODE", "string", ".spec.node"),
            col("NAMESPACE", "string", ".spec.namespace"),
            col("POD", "string", ".spec.pod"),
            col("INTERFACE", "string", ".spec.interfaceName"),
            wide("NETWORKS", "string", ".spec.ipNetworks"),
        ],
        schema: spec_schema::<WorkloadEndpointSpec>,
    },
    KindInfo {
        kind: BgpPeerSpec::KIND,
        columns: &[
            col("NODE", "string", ".spec.node"),
            col("PEER IP", "string", ".spec.peerIP"),
            col("AS", "integer", ".spec.asNumber"),
            wide("SELECTOR", "string", ".spec.nodeSelector"),
        ],
        schema: spec_schema::<BgpPeerSpec>,
    },
    KindInfo {
        kind: BgpConfigurationSpec::KIND,
        columns: &[
            col("MESH", "boolean", ".spec.nodeToNodeMeshEnabled"),
            col("AS", "integer", ".spec.asNumber"),
        ],
        schema: spec_schema::<BgpConfigurationSpec>,
    },
];

/// The JSON Schema of a spec type, as a CRD takes it.
fn spec_schema<S: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<S>().to_value();
    strip(&mut schema);
    schema
}

/// Removes what a CRD schema must not (or should not) carry, recursively.
fn strip(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("default");
            map.remove("title");
            map.remove("$schema");
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            for value in map.values_mut() {
                strip(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

/// The CRD of one kind.
pub fn definition(info: &KindInfo) -> Result<CustomResourceDefinition, serde_json::Error> {
    let plural = names::plural(info.kind);
    let mut columns: Vec<Value> = info
        .columns
        .iter()
        .map(|c| {
            let mut column = json!({ "name": c.name, "type": c.type_, "jsonPath": c.json_path });
            if c.priority > 0 {
                column["priority"] = json!(c.priority);
            }
            column
        })
        .collect();
    // Listing columns replaces kubectl's default ones; keep AGE.
    columns
        .push(json!({ "name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp" }));
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{plural}.{GROUP}") },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": info.kind,
                "listKind": format!("{}List", info.kind),
                "plural": plural,
                "singular": info.kind.to_ascii_lowercase(),
                "categories": ["brindle"],
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "description": format!("Brindle {}; see docs/datastore.md.", info.kind),
                        "required": ["spec"],
                        "properties": {
                            "apiVersion": { "type": "string" },
                            "kind": { "type": "string" },
                            "metadata": { "type": "object" },
                            "spec": (info.schema)(),
                        },
                    },
                },
                "additionalPrinterColumns": columns,
            }],
        },
    }))
}

/// Every CRD as one YAML stream, as `crdgen` prints it.
pub fn all_yaml() -> Result<String, String> {
    let mut out = String::from(
        "# Brindle's CustomResourceDefinitions, for `--datastore kubernetes`.\n\
         # Generated by `cargo run -p brindle-agent --bin crdgen > manifests/crds.yaml`; do not edit.\n",
    );
    for info in KINDS {
        let crd = definition(info).map_err(|e| format!("CRD of {}: {e}", info.kind))?;
        let yaml = serde_yaml::to_string(&crd).map_err(|e| format!("CRD of {}: {e}", info.kind))?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(kind: &str) -> Value {
        let info = KINDS.iter().find(|k| k.kind == kind).expect("kind");
        let crd = serde_json::to_value(definition(info).expect("crd")).expect("json");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    #[test]
    fn crds_have_calicos_names_and_ippool_columns() {
        let info = KINDS.iter().find(|k| k.kind == "IPPool").expect("IPPool");
        let crd = definition(info).expect("crd");
        assert_eq!(crd.metadata.name.as_deref(), Some("ippools.brindle.dev"));
        assert_eq!(crd.spec.scope, "Cluster");
        let version = &crd.spec.versions[0];
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["CIDR", "BLOCK SIZE", "VXLAN", "IPIP", "NAT", "AGE"]
        );
        // No kind has a status.
        assert!(KINDS
            .iter()
            .map(|k| definition(k).expect("crd"))
            .all(|crd| crd.spec.versions[0].subresources.is_none()));
    }

    #[test]
    fn crd_schemas_are_structural_and_follow_serde_names() {
        let pool = schema_of("IPPool");
        assert_eq!(pool["type"], "object");
        assert_eq!(pool["properties"]["cidr"]["type"], "string");
        assert_eq!(pool["properties"]["blockSize"]["type"], "integer");
        assert_eq!(pool["properties"]["blockSize"]["nullable"], true);
        assert_eq!(
            pool["properties"]["ipipMode"]["enum"],
            json!(["Never", "Always", "CrossSubnet"])
        );
        assert!(pool["properties"]["disableBGPExport"].is_object());
        assert_eq!(pool["required"], json!(["cidr"]));
        let block = schema_of("IPAMBlock");
        assert_eq!(
            block["properties"]["allocations"]["items"]["nullable"],
            true
        );
        let text = serde_json::to_string(&KINDS.iter().map(|k| (k.schema)()).collect::<Vec<_>>())
            .expect("json");
        for forbidden in [
            "$ref",
            "\"default\"",
            "\"additionalProperties\":false",
            "anyOf",
        ] {
            assert!(!text.contains(forbidden), "{forbidden} in a schema");
        }
    }

    #[test]
    fn manifests_crds_yaml_is_crdgens_output() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crds.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = all_yaml().expect("crds");
        assert!(
            committed == generated,
            "manifests/crds.yaml is not what crdgen prints (the resource types changed?); \
             run `cargo run -p brindle-agent --bin crdgen > manifests/crds.yaml` and commit it"
        );
        // Every document is a CRD Kubernetes can read back.
        let docs: Vec<&str> = committed.split("\n---\n").skip(1).collect();
        assert_eq!(docs.len(), KINDS.len());
        for doc in docs {
            let crd: CustomResourceDefinition = serde_yaml::from_str(doc).expect("a CRD");
            assert!(crd.spec.group == GROUP);
        }
    }
}
