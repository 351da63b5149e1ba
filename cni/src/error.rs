//! Typed plugin errors and their outward form: a CNI error code, a message and details.
//!
//! Every failure of the plugin ends here, and [`CniError::to_api_error`] is the one place that
//! decides which CNI code (spec 1.0, "Error" section) a failure maps to.

use std::path::PathBuf;

use brindle_agent::api::{codes, ApiError};

/// Why the plugin failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CniError {
    /// A required `CNI_*` variable is missing, or a variable's value is malformed.
    #[error("{var}: {reason}")]
    Env { var: &'static str, reason: String },

    /// stdin is not JSON (or could not be read as JSON).
    #[error("cannot decode network configuration: {reason}")]
    Decode { reason: String },

    /// The network configuration is JSON but is not a valid Brindle configuration.
    #[error("invalid network configuration: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// The configuration asks for something the plugin does not do (spec code 2).
    #[error("unsupported field in network configuration: {field}: {reason}")]
    UnsupportedField { field: &'static str, reason: String },

    /// The configuration asks for a CNI version this plugin does not speak, or a verb that the
    /// version does not have.
    #[error("{reason}")]
    IncompatibleVersion { reason: String },

    /// Reading stdin failed.
    #[error("cannot read network configuration from stdin: {reason}")]
    Stdin { reason: String },

    /// The agent's socket is missing, refuses connections, or the agent did not answer in time.
    /// The runtime should retry: the agent may be starting or restarting.
    #[error("agent not reachable at {}: {reason}; is brindle-node running on this node?", socket.display())]
    AgentUnreachable { socket: PathBuf, reason: String },

    /// Talking to the socket failed for another reason (permission denied, reset mid-request).
    #[error("I/O error talking to the agent at {}: {reason}", socket.display())]
    AgentIo { socket: PathBuf, reason: String },

    /// The agent answered, but not with an HTTP response or body we understand.
    #[error("unexpected answer from the agent at {}: {reason}", socket.display())]
    AgentProtocol { socket: PathBuf, reason: String },

    /// The agent's answer decoded but cannot be turned into a valid CNI result.
    #[error("the agent's answer is not usable: {reason}")]
    BadAgentAnswer { reason: String },

    /// STATUS could not reach the agent: the plugin cannot add pods (spec 1.1, code 50).
    #[error("agent not reachable at {}: {reason}; is brindle-node running on this node?", socket.display())]
    NotAvailable { socket: PathBuf, reason: String },

    /// CHECK: the runtime's cached result and the agent's record of the pod disagree.
    #[error("the pod differs from the cached result: {differences}")]
    Mismatch { differences: String },

    /// The agent answered with an error: passed on unchanged.
    #[error("{}", .0.msg)]
    Agent(ApiError),
}

impl CniError {
    /// The CNI error code for this failure.
    pub(crate) fn code(&self) -> u32 {
        match self {
            CniError::Env { .. } => codes::INVALID_ENV,
            CniError::Decode { .. } => codes::DECODE_FAILURE,
            CniError::InvalidConfig { .. } => codes::INVALID_CONFIG,
            CniError::UnsupportedField { .. } => codes::UNSUPPORTED_FIELD,
            CniError::IncompatibleVersion { .. } => codes::INCOMPATIBLE_VERSION,
            CniError::Stdin { .. } => codes::IO_FAILURE,
            // 11 "try again later", not 50: 50/51 belong to the STATUS verb (spec 1.1), and for
            // ADD/DEL/CHECK the right reaction of the runtime is to retry.
            CniError::AgentUnreachable { .. } => codes::TRY_AGAIN,
            CniError::AgentIo { .. } => codes::IO_FAILURE,
            CniError::AgentProtocol { .. } | CniError::BadAgentAnswer { .. } => codes::INTERNAL,
            CniError::NotAvailable { .. } => codes::NOT_AVAILABLE,
            CniError::Mismatch { .. } => codes::INTERNAL,
            CniError::Agent(e) => e.code,
        }
    }

    /// The same failure as STATUS reports it: not reaching the agent means the plugin is not
    /// available (50) rather than "try again" (11).
    pub(crate) fn for_status(self) -> CniError {
        match self {
            CniError::AgentUnreachable { socket, reason }
            | CniError::AgentIo { socket, reason } => CniError::NotAvailable { socket, reason },
            CniError::Agent(e) if e.code == codes::TRY_AGAIN => CniError::Agent(ApiError {
                code: codes::NOT_AVAILABLE,
                ..e
            }),
            other => other,
        }
    }

    /// The error in the shape the CNI spec prints: code, msg, details.
    pub(crate) fn to_api_error(&self) -> ApiError {
        match self {
            CniError::Agent(e) => e.clone(),
            _ => ApiError {
                code: self.code(),
                msg: self.to_string(),
                details: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_cni_spec() {
        let env = CniError::Env {
            var: "CNI_NETNS",
            reason: "not set".into(),
        };
        assert_eq!(env.code(), 4);
        assert!(env.to_string().contains("CNI_NETNS"));

        let unreachable = CniError::AgentUnreachable {
            socket: "/run/x.sock".into(),
            reason: "no such file".into(),
        };
        assert_eq!(unreachable.code(), 11);
        let msg = unreachable.to_string();
        assert!(msg.contains("/run/x.sock"), "{msg}");
        assert!(msg.contains("brindle-node"), "{msg}");

        assert_eq!(CniError::Decode { reason: "x".into() }.code(), 6);
        let invalid = CniError::InvalidConfig {
            field: "name",
            reason: "missing".into(),
        };
        assert_eq!(invalid.code(), 7);
        assert_eq!(
            CniError::IncompatibleVersion { reason: "x".into() }.code(),
            1
        );
    }

    #[test]
    fn status_turns_unreachable_into_not_available() {
        let e = CniError::AgentUnreachable {
            socket: "/run/x.sock".into(),
            reason: "connection refused".into(),
        }
        .for_status();
        assert_eq!(e.code(), 50);
        assert!(e.to_string().contains("/run/x.sock"), "{e}");
        let busy = CniError::Agent(ApiError {
            code: 11,
            msg: "datastore".into(),
            details: String::new(),
        });
        assert_eq!(busy.for_status().code(), 50);
        let full = CniError::Agent(ApiError {
            code: 51,
            msg: "no room".into(),
            details: String::new(),
        });
        assert_eq!(full.for_status().code(), 51);
        assert_eq!(
            CniError::Decode { reason: "x".into() }.for_status().code(),
            6
        );
    }

    #[test]
    fn agent_errors_pass_through_unchanged() {
        let api = ApiError {
            code: 51,
            msg: "no pool has room".into(),
            details: "pool 10.244.0.0/16 full".into(),
        };
        let e = CniError::Agent(api.clone());
        assert_eq!(e.code(), 51);
        assert_eq!(e.to_api_error(), api);
    }
}
