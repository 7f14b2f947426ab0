//! `spec.accessCredentials`: SSH public keys (and passwords) that KubeVirt puts into the guest.

use super::{Empty, Unknown};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One credential: `sshPublicKey` or `userPassword`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessCredential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<SshPublicKeyAccessCredential>,
    /// Passwords reach the guest only through the guest agent, which virtshim does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_password: Option<Empty>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: Unknown,
}

/// Public keys from a Secret (every value is a key), and how they reach the guest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshPublicKeyAccessCredential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SshPublicKeySource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_method: Option<PropagationMethod>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: Unknown,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshPublicKeySource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<AccessCredentialSecretSource>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: Unknown,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessCredentialSecretSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: Unknown,
}

/// `noCloud: {}` and `configDrive: {}` put the keys in the cloud-init disk's metadata;
/// `qemuGuestAgent` writes them through the guest agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropagationMethod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_cloud: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_drive: Option<Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_guest_agent: Option<Empty>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: Unknown,
}
