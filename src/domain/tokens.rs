//! API tokens in Unleash's `project:environment.secret` form.
//!
//! Only a SHA-256 of the whole token string is stored; the scope (kind, projects,
//! environment) is stored beside it, so the prefix is informative for SDKs and Edge
//! but never trusted on its own.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::users::Role;

/// What a token may do: admin (the admin API), client (server SDKs, `/api/client/*`,
/// events), frontend (browser SDKs, `/api/frontend`, OFREP, events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Admin,
    Client,
    Frontend,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Client => "client",
            TokenKind::Frontend => "frontend",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        match s.to_ascii_lowercase().as_str() {
            "admin" => Some(TokenKind::Admin),
            "client" => Some(TokenKind::Client),
            "frontend" => Some(TokenKind::Frontend),
            _ => None,
        }
    }
}

/// The scope of a stored token. `projects == ["*"]` means all projects;
/// `environment == "*"` (admin tokens only) means all environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    pub kind: TokenKind,
    pub projects: Vec<String>,
    pub environment: String,
    /// Admin tokens only: what the token may do on the admin API.
    pub role: Option<Role>,
}

impl TokenScope {
    pub fn all_projects(&self) -> bool {
        self.projects.iter().any(|p| p == "*")
    }

    pub fn allows_project(&self, project: &str) -> bool {
        self.all_projects() || self.projects.iter().any(|p| p == project)
    }

    pub fn allows_environment(&self, environment: &str) -> bool {
        self.environment == "*" || self.environment == environment
    }

    /// The prefix Unleash puts before the secret: `*:*`, `proj:env`, or `[]:env`.
    pub fn prefix(&self) -> String {
        let projects = match self.projects.as_slice() {
            [one] => one.clone(),
            _ => "[]".to_string(),
        };
        format!("{projects}:{}", self.environment)
    }
}

/// Parses `project:environment.secret` as given in `FUSEBOX_INIT_*_TOKENS`.
/// `[]` (several projects) cannot be expressed there, so it is refused.
pub fn parse_init_token(kind: TokenKind, token: &str) -> Result<TokenScope, String> {
    let (scope, secret) = token.split_once('.').ok_or_else(|| {
        format!(
            "token `{}` is not of the form project:environment.secret",
            redact(token)
        )
    })?;
    let (project, environment) = scope.split_once(':').ok_or_else(|| {
        format!(
            "token `{}` is not of the form project:environment.secret",
            redact(token)
        )
    })?;
    if secret.is_empty() || project.is_empty() || environment.is_empty() {
        return Err(format!("token `{}` has an empty part", redact(token)));
    }
    if project == "[]" {
        return Err("multi-project `[]` tokens must be created through the API".into());
    }
    match kind {
        TokenKind::Admin if project != "*" || environment != "*" => {
            return Err("admin tokens must have the form *:*.secret".into())
        }
        TokenKind::Client | TokenKind::Frontend if environment == "*" => {
            return Err("client and frontend tokens must name one environment".into())
        }
        _ => {}
    }
    Ok(TokenScope {
        kind,
        projects: vec![project.to_string()],
        environment: environment.to_string(),
        role: (kind == TokenKind::Admin).then_some(Role::Admin),
    })
}

/// A new secret for a scope: `prefix.` + 56 hex characters (28 random bytes), as Unleash.
pub fn generate_secret(scope: &TokenScope) -> String {
    let mut bytes = [0u8; 28];
    rand::rng().fill_bytes(&mut bytes);
    format!("{}.{}", scope.prefix(), hex::encode(bytes))
}

/// The stored form of a token.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What may be shown of a token in logs and lists: its scope prefix only.
pub fn redact(token: &str) -> String {
    match token.split_once('.') {
        Some((prefix, _)) => format!("{prefix}.***"),
        None => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_tokens_are_parsed_into_their_scope() {
        let s = parse_init_token(TokenKind::Client, "default:development.abc").unwrap();
        assert_eq!(s.projects, vec!["default"]);
        assert_eq!(s.environment, "development");
        assert!(s.allows_project("default") && !s.allows_project("other"));
        let all = parse_init_token(TokenKind::Frontend, "*:production.x").unwrap();
        assert!(all.allows_project("anything") && !all.allows_environment("development"));
        let admin = parse_init_token(TokenKind::Admin, "*:*.s3cret").unwrap();
        assert!(admin.allows_environment("production"));
    }

    #[test]
    fn malformed_or_mis_scoped_init_tokens_are_refused() {
        assert!(parse_init_token(TokenKind::Client, "nodot").is_err());
        assert!(parse_init_token(TokenKind::Client, "nocolon.secret").is_err());
        assert!(parse_init_token(TokenKind::Client, "*:*.secret").is_err());
        assert!(parse_init_token(TokenKind::Admin, "default:development.x").is_err());
        assert!(parse_init_token(TokenKind::Client, "a:development.").is_err());
    }

    #[test]
    fn generated_secrets_carry_the_scope_prefix_and_are_unique() {
        let scope = TokenScope {
            kind: TokenKind::Client,
            projects: vec!["a".into(), "b".into()],
            environment: "production".into(),
            role: None,
        };
        let one = generate_secret(&scope);
        assert!(one.starts_with("[]:production."));
        assert_eq!(one.len(), "[]:production.".len() + 56);
        assert_ne!(one, generate_secret(&scope));
        assert_eq!(hash_secret(&one).len(), 64);
        assert_eq!(redact(&one), "[]:production.***");
    }
}
