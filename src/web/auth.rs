//! Who is using the web UI: argon2 password hashes, sessions as HS256 JWTs in an
//! HttpOnly SameSite=Strict cookie, a CSRF token bound to each session, and a login
//! rate limit. The user is re-read on every request, so a role change or deletion
//! takes effect at once rather than when the session expires.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::UiError;
use crate::app::AppState;
use crate::domain::users::{Role, User};
use crate::store::{now_ms, Actor, Store};

pub const SESSION_COOKIE: &str = "fusebox_session";
/// Double-submit cookie guarding the login and setup forms (no session yet).
pub const LOGIN_CSRF_COOKIE: &str = "fusebox_login_csrf";

/// Name of the generated signing key in `server_secrets`.
const JWT_SECRET_NAME: &str = "jwt_secret";

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let salt =
        SaltString::encode_b64(&bytes).map_err(|e| anyhow::anyhow!("encoding a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A random 32-byte value as hex (CSRF tokens, generated keys).
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares secrets without an early exit, so timing does not reveal a prefix.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session signing key: `FUSEBOX_JWT_SECRET`, else one generated on first start
/// and kept in the database (shared by replicas, stable across restarts).
pub async fn signing_secret(store: &dyn Store, configured: Option<&str>) -> anyhow::Result<String> {
    match configured {
        Some(secret) if secret.len() < 32 => {
            anyhow::bail!("FUSEBOX_JWT_SECRET must be at least 32 characters")
        }
        Some(secret) => Ok(secret.to_string()),
        None => Ok(store.server_secret(JWT_SECRET_NAME, &random_hex()).await?),
    }
}

/// Creates the first admin from `FUSEBOX_ADMIN_EMAIL`/`FUSEBOX_ADMIN_PASSWORD` when no
/// user exists yet.
pub async fn bootstrap_admin(
    store: &dyn Store,
    email: Option<&str>,
    password: Option<&str>,
) -> anyhow::Result<()> {
    let (email, password) = match (email, password) {
        (Some(e), Some(p)) => (e, p),
        (None, None) => return Ok(()),
        _ => anyhow::bail!("set both FUSEBOX_ADMIN_EMAIL and FUSEBOX_ADMIN_PASSWORD, or neither"),
    };
    if store.count_users().await? > 0 {
        return Ok(());
    }
    let email = crate::domain::users::normalize_email(email)
        .map_err(|e| anyhow::anyhow!("FUSEBOX_ADMIN_EMAIL {e}"))?;
    crate::domain::users::check_password(password)
        .map_err(|e| anyhow::anyhow!("FUSEBOX_ADMIN_PASSWORD {e}"))?;
    let hash = hash_password(password)?;
    match store
        .create_user(&email, &hash, Role::Admin, true, &Actor::system())
        .await
    {
        // Another replica created the first user meanwhile.
        Ok(_) | Err(crate::store::StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// User id.
    sub: String,
    exp: i64,
    iat: i64,
    /// The CSRF token every form of this session must carry.
    csrf: String,
}

/// Signs and checks sessions.
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime_secs: i64,
}

impl Sessions {
    pub fn new(secret: &str, lifetime_hours: i64) -> Sessions {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        Sessions {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            lifetime_secs: lifetime_hours.clamp(1, 24 * 30) * 3600,
        }
    }

    /// A session cookie for `user`.
    pub fn issue(&self, user: &User, secure: bool) -> Result<Cookie<'static>, UiError> {
        let now = now_ms() / 1000;
        let claims = Claims {
            sub: user.id.to_string(),
            iat: now,
            exp: now + self.lifetime_secs,
            csrf: random_hex(),
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| UiError::Internal(anyhow::anyhow!("signing a session: {e}")))?;
        Ok(Cookie::build(SESSION_COOKIE, jwt)
            .path("/ui")
            .http_only(true)
            .secure(secure)
            .same_site(SameSite::Strict)
            .max_age(time::Duration::seconds(self.lifetime_secs))
            .finish())
    }

    fn check(&self, jwt: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(jwt, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// A cookie that removes `name`.
pub fn removal(name: &'static str) -> Cookie<'static> {
    let mut cookie = Cookie::build(name, "")
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    cookie.make_removal();
    cookie
}

/// Whether the browser reached us over HTTPS (directly or behind a proxy), so
/// cookies can be marked Secure without breaking plain-HTTP localhost use.
pub fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// A logged-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

impl Session {
    pub fn actor(&self) -> Actor {
        Actor(format!("user:{}", self.user.email))
    }

    /// Fails with 403 unless the user's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), UiError> {
        if self.user.role >= role {
            Ok(())
        } else {
            Err(UiError::Forbidden(format!(
                "this needs the {} role; you are {}",
                role.as_str(),
                self.user.role.as_str()
            )))
        }
    }

    /// Checks the CSRF token a form carried.
    pub fn check_csrf(&self, form: &HashMap<String, String>) -> Result<(), UiError> {
        match form.get("csrf") {
            Some(token) if same_secret(token, &self.csrf) => Ok(()),
            _ => Err(UiError::Csrf),
        }
    }
}

impl FromRequest for Session {
    type Error = UiError;
    type Future = Pin<Box<dyn Future<Output = Result<Session, UiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let cookie = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string());
        let next = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/ui/".into());
        Box::pin(async move {
            let state =
                state.ok_or_else(|| UiError::Internal(anyhow::anyhow!("app state missing")))?;
            let login = || UiError::LoginRequired(next.clone());
            let claims = cookie
                .and_then(|jwt| state.ui.sessions.check(&jwt))
                .ok_or_else(login)?;
            let id: i64 = claims.sub.parse().map_err(|_| login())?;
            let user = state
                .store
                .get_user(id)
                .await
                .map_err(|e| UiError::Internal(e.into()))?
                .ok_or_else(login)?
                .user;
            Ok(Session {
                user,
                csrf: claims.csrf,
            })
        })
    }
}

/// Failed logins allowed per client address and per email in one window.
const LOGIN_ATTEMPTS: u32 = 10;
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Counts failed logins per key (client address, email) in fixed windows.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (Instant, u32)>>,
}

impl LoginLimiter {
    /// Whether any of `keys` has used up its attempts; returns the seconds to wait.
    pub fn blocked(&self, keys: &[String]) -> Option<u64> {
        let map = self.failures.lock().ok()?;
        keys.iter().find_map(|k| {
            map.get(k).and_then(|(start, n)| {
                let elapsed = start.elapsed();
                (*n >= LOGIN_ATTEMPTS && elapsed < LOGIN_WINDOW)
                    .then(|| (LOGIN_WINDOW - elapsed).as_secs().max(1))
            })
        })
    }

    pub fn failed(&self, keys: &[String]) {
        if let Ok(mut map) = self.failures.lock() {
            if map.len() > 100_000 {
                map.retain(|_, (start, _)| start.elapsed() < LOGIN_WINDOW);
            }
            for k in keys {
                let entry = map.entry(k.clone()).or_insert((Instant::now(), 0));
                if entry.0.elapsed() >= LOGIN_WINDOW {
                    *entry = (Instant::now(), 0);
                }
                entry.1 += 1;
            }
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        if let Ok(mut map) = self.failures.lock() {
            for k in keys {
                map.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse battery!", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn sessions_round_trip_and_reject_tampering() {
        let sessions = Sessions::new(&"k".repeat(32), 1);
        let user = User {
            id: 7,
            email: "a@b.c".into(),
            role: Role::Editor,
            created_at: 0,
        };
        let cookie = sessions.issue(&user, false).unwrap();
        assert!(cookie.http_only().unwrap_or(false));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        let claims = sessions.check(cookie.value()).unwrap();
        assert_eq!(claims.sub, "7");
        assert_eq!(claims.csrf.len(), 64);
        let other = Sessions::new(&"o".repeat(32), 1);
        assert!(other.check(cookie.value()).is_none());
        let mut tampered = cookie.value().to_string();
        tampered.push('x');
        assert!(sessions.check(&tampered).is_none());
    }

    #[test]
    fn limiter_blocks_after_the_allowed_failures() {
        let limiter = LoginLimiter::default();
        let keys = vec!["ip:1".to_string()];
        for _ in 0..LOGIN_ATTEMPTS - 1 {
            limiter.failed(&keys);
        }
        assert!(limiter.blocked(&keys).is_none());
        limiter.failed(&keys);
        assert!(limiter.blocked(&keys).is_some());
        assert!(limiter.blocked(&["ip:2".to_string()]).is_none());
        limiter.succeeded(&keys);
        assert!(limiter.blocked(&keys).is_none());
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
