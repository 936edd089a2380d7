//! Records of the admin model (projects, environments, features per environment,
//! segments, tokens, audit entries) as the store returns them and the API shows them.
//!
//! Field names follow Unleash's admin API (camelCase) so its users feel at home.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::model::{Constraint, Dependency, Strategy, Variant};
use super::tokens::TokenKind;

/// An environment; `development` and `production` exist from the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub name: String,
    #[serde(rename = "type")]
    pub environment_type: String,
    pub enabled: bool,
    pub sort_order: i64,
}

/// A project; `default` exists from the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A feature's own fields, independent of environments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureMeta {
    pub name: String,
    pub project: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub feature_type: String,
    pub impression_data: bool,
    pub stale: bool,
    pub created_at: i64,
}

/// A feature in one environment: on/off, ordered strategies, feature variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureEnvironment {
    pub name: String,
    pub enabled: bool,
    pub strategies: Vec<Strategy>,
    pub variants: Option<Vec<Variant>>,
}

/// A feature with every environment: what `GET .../features/{name}` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    #[serde(flatten)]
    pub meta: FeatureMeta,
    pub environments: Vec<FeatureEnvironment>,
    pub dependencies: Vec<Dependency>,
}

/// A segment as administered (the client format only carries id, name, constraints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminSegment {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub project: Option<String>,
    pub constraints: Vec<Constraint>,
    pub created_at: i64,
}

/// A stored API token (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredToken {
    pub id: i64,
    pub token_name: String,
    #[serde(rename = "type")]
    pub kind: TokenKind,
    pub environment: String,
    pub projects: Vec<String>,
    /// The non-secret `project:environment` prefix, for recognising a token.
    pub prefix: String,
    /// Admin tokens: viewer, editor or admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<super::users::Role>,
    pub created_at: i64,
    #[serde(skip)]
    pub secret_hash: String,
}

/// One entry of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: i64,
    /// What happened, e.g. `feature-created`, `feature-strategy-updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who: `token:<name>`, `user:<email>`, `system`, `fuse`.
    pub created_by: String,
    pub created_at: i64,
    pub project: Option<String>,
    pub feature: Option<String>,
    pub environment: Option<String>,
    /// The state before the change (null for creations): any JSON, e.g. an object
    /// for a feature, an array for variants.
    pub pre_data: Option<serde_json::Value>,
    /// The state after the change (null for deletions): any JSON.
    pub data: Option<serde_json::Value>,
}
