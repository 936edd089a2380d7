//! People and roles. A role bounds what a person can do in the web UI and what an
//! admin-API token issued to them can do, so "viewer" means the same everywhere.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// viewer < editor < admin; each role can do everything the ones before it can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything except users and tokens.
    Viewer,
    /// Also changes flags, strategies, segments, fuses and replays quarantine.
    Editor,
    /// Also manages people, API tokens and end users' data (export, erasure).
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Admin-API paths only an admin may use, whatever the method: tokens hand out access,
/// and `/api/admin/users/{id}` exports or erases an end user's personal data.
const ADMIN_ONLY: [&str; 2] = ["/api/admin/api-tokens", "/api/admin/users"];

/// Writes that only read: a viewer may run them.
fn is_read_only_post(path: &str) -> bool {
    path.ends_with("/fuse/backtest")
}

/// Whether an admin-API token of `role` may make this request; `Err` says why not.
pub fn role_allows(role: Role, read: bool, path: &str) -> Result<(), String> {
    if ADMIN_ONLY.iter().any(|p| path.starts_with(p)) {
        return if role == Role::Admin {
            Ok(())
        } else {
            Err(format!(
                "a {} token cannot manage tokens or end users' data; that takes the admin role",
                role.as_str()
            ))
        };
    }
    if read || is_read_only_post(path) || role >= Role::Editor {
        Ok(())
    } else {
        Err(format!(
            "a {} token can only read; changes take the editor role",
            role.as_str()
        ))
    }
}

/// A login email: one `@` with text on both sides, no spaces, at most 254 characters.
/// Stored lower-cased so `Ann@x.io` and `ann@x.io` are one person.
pub fn normalize_email(email: &str) -> Result<String, &'static str> {
    let email = email.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid {
        Ok(email)
    } else {
        Err("must be an email address such as pm@example.com")
    }
}

/// Minimum password length; length matters more than character classes (NIST 800-63B).
pub const MIN_PASSWORD_LEN: usize = 10;

pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        Err(format!("must be at least {MIN_PASSWORD_LEN} characters"))
    } else if n > 1024 {
        Err("must be at most 1024 characters".into())
    } else {
        Ok(())
    }
}

/// A person as shown (never with the password hash).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: i64,
    pub email: String,
    pub role: Role,
    pub created_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Viewer < Role::Editor && Role::Editor < Role::Admin);
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("Admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn viewer_reads_editor_writes_admin_manages_access() {
        let flag = "/api/admin/projects/default/features";
        assert!(role_allows(Role::Viewer, true, flag).is_ok());
        assert!(role_allows(Role::Viewer, false, flag).is_err());
        assert!(role_allows(
            Role::Viewer,
            false,
            "/api/admin/projects/p/features/f/environments/e/fuse/backtest"
        )
        .is_ok());
        assert!(role_allows(Role::Editor, false, flag).is_ok());
        assert!(role_allows(Role::Editor, true, "/api/admin/api-tokens").is_err());
        assert!(role_allows(Role::Admin, false, "/api/admin/api-tokens/3").is_ok());
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email(" Ann@Example.com ").as_deref(),
            Ok("ann@example.com")
        );
        for bad in ["", "ann", "@x.io", "ann@", "a b@x.io", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_need_length() {
        assert!(check_password("short").is_err());
        assert!(check_password("long enough pass").is_ok());
    }
}
