//! Identity: users, projects and role assignments as Keystone has them, password hashing, and tokens.
//!
//! Passwords are stored as argon2id hashes. Tokens are random 256-bit secrets; the store keeps only their
//! SHA-256, so a copy of the data file does not hand out working tokens.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use nimbus_storage::ids::{Pair, ProjectId, UserId};
use nimbus_storage::records::{Assignment, Millis, NetworkMode, Project, Role, Token, User, now_ms};
use nimbus_storage::schema::{ASSIGNMENTS, PROJECT_NAMES, PROJECTS, TOKENS, USER_NAMES, USERS};
use nimbus_storage::{Reads, Store, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::CloudError;

/// Who is asking, as established from a valid token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthContext {
    pub user: UserId,
    pub user_name: String,
    pub project: ProjectId,
    pub project_name: String,
    pub roles: Vec<Role>,
    pub issued_at: Millis,
    pub expires_at: Millis,
}

impl AuthContext {
    /// Roles are ordered: admin includes member, member includes reader.
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r >= role)
    }
}

pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 with default parameters").to_string()
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

fn token_key(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn validate_name(kind: &str, name: &str) -> Result<(), CloudError> {
    crate::names::name_problem(kind, name).map_or(Ok(()), |problem| Err(CloudError::BadRequest(problem)))
}

pub async fn create_project(
    store: &Store,
    name: &str,
    description: &str,
    network_mode: NetworkMode,
) -> Result<Project, CloudError> {
    validate_name("project", name)?;
    let project = Project {
        id: ProjectId::random(),
        name: name.to_string(),
        description: description.to_string(),
        enabled: true,
        network_mode,
        created_at: now_ms(),
    };
    let record = project.clone();
    store
        .write(move |tx| {
            if tx.get(&PROJECT_NAMES, &record.name)?.is_some() {
                return Err(CloudError::Conflict(format!("A project named {} already exists.", record.name)));
            }
            tx.put(&PROJECTS, &record.id, &record)?;
            tx.put(&PROJECT_NAMES, &record.name, &record.id)?;
            Ok(())
        })
        .await?;
    Ok(project)
}

pub async fn create_user(
    store: &Store,
    name: &str,
    password: &str,
    default_project: Option<ProjectId>,
) -> Result<User, CloudError> {
    validate_name("user", name)?;
    if password.is_empty() {
        return Err(CloudError::BadRequest("A password must not be empty.".into()));
    }
    let password = password.to_string();
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| CloudError::Internal(format!("password hashing failed: {e}")))?;
    let user = User {
        id: UserId::random(),
        name: name.to_string(),
        password_hash,
        default_project,
        enabled: true,
        created_at: now_ms(),
    };
    let record = user.clone();
    store
        .write(move |tx| {
            if tx.get(&USER_NAMES, &record.name)?.is_some() {
                return Err(CloudError::Conflict(format!("A user named {} already exists.", record.name)));
            }
            if let Some(p) = record.default_project {
                tx.get(&PROJECTS, &p)?.ok_or_else(|| CloudError::not_found("Project", p))?;
            }
            tx.put(&USERS, &record.id, &record)?;
            tx.put(&USER_NAMES, &record.name, &record.id)?;
            Ok(())
        })
        .await?;
    Ok(user)
}

/// Gives `user` the `role` on `project` (idempotent).
pub async fn grant(store: &Store, user: UserId, project: ProjectId, role: Role) -> Result<(), CloudError> {
    store
        .write(move |tx| {
            tx.get(&USERS, &user)?.ok_or_else(|| CloudError::not_found("User", user))?;
            tx.get(&PROJECTS, &project)?.ok_or_else(|| CloudError::not_found("Project", project))?;
            let key = Pair(user, project);
            let mut assignment = tx.get(&ASSIGNMENTS, &key)?.unwrap_or(Assignment { roles: Vec::new() });
            if !assignment.roles.contains(&role) {
                assignment.roles.push(role);
                assignment.roles.sort();
                tx.put(&ASSIGNMENTS, &key, &assignment)?;
            }
            Ok(())
        })
        .await
}

pub fn find_user(store: &Store, name: &str) -> Result<Option<User>, StoreError> {
    store.read(|r| match r.get(&USER_NAMES, &name.to_string())? {
        Some(id) => r.get(&USERS, &id),
        None => Ok(None),
    })
}

pub fn find_project(store: &Store, name_or_id: &str) -> Result<Option<Project>, StoreError> {
    store.read(|r| {
        if let Ok(id) = name_or_id.parse::<ProjectId>()
            && let Some(p) = r.get(&PROJECTS, &id)?
        {
            return Ok(Some(p));
        }
        match r.get(&PROJECT_NAMES, &name_or_id.to_string())? {
            Some(id) => r.get(&PROJECTS, &id),
            None => Ok(None),
        }
    })
}

/// Password authentication scoped to a project. Every failure gives the same answer, so the API does not tell
/// which part was wrong.
pub async fn password_login(
    store: &Store,
    user_name: &str,
    password: &str,
    project_name: &str,
    ttl: std::time::Duration,
) -> Result<(String, AuthContext), CloudError> {
    let denied = || CloudError::Unauthorized("The request you have made requires authentication.".into());
    // An unknown or disabled user is checked against a stand-in hash, so the answer takes as long as for a
    // wrong password and its timing does not tell which user names exist.
    static STAND_IN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| hash_password("no such user"));
    let user = find_user(store, user_name)?.filter(|u| u.enabled);
    let hash = user.as_ref().map_or_else(|| STAND_IN.clone(), |u| u.password_hash.clone());
    let pw = password.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
        .await
        .map_err(|e| CloudError::Internal(format!("password check failed: {e}")))?;
    let user = user.filter(|_| ok).ok_or_else(denied)?;
    let project = find_project(store, project_name)?.filter(|p| p.enabled).ok_or_else(denied)?;
    let roles = store.read(|r| r.get(&ASSIGNMENTS, &Pair(user.id, project.id)))?.map(|a| a.roles).unwrap_or_default();
    if roles.is_empty() {
        return Err(denied());
    }
    let mut secret_bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut secret_bytes);
    let secret: String = secret_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let issued_at = now_ms();
    let expires_at = issued_at + ttl.as_millis() as u64;
    let token = Token { user: user.id, project: project.id, roles: roles.clone(), issued_at, expires_at };
    let key = token_key(&secret);
    store.write(move |tx| tx.put(&TOKENS, &key, &token)).await?;
    let context = AuthContext {
        user: user.id,
        user_name: user.name,
        project: project.id,
        project_name: project.name,
        roles,
        issued_at,
        expires_at,
    };
    Ok((secret, context))
}

/// Checks a token and tells whose it is.
pub fn validate(store: &Store, secret: &str) -> Result<AuthContext, CloudError> {
    let denied =
        |why: &str| CloudError::Unauthorized(format!("The request you have made requires authentication: {why}."));
    let key = token_key(secret);
    store.read(|r| {
        let token = r.get(&TOKENS, &key)?.ok_or_else(|| denied("the token is not valid"))?;
        if token.expires_at <= now_ms() {
            return Err(denied("the token has expired"));
        }
        let user = r.get(&USERS, &token.user)?.filter(|u| u.enabled).ok_or_else(|| denied("the user is disabled"))?;
        let project =
            r.get(&PROJECTS, &token.project)?.filter(|p| p.enabled).ok_or_else(|| denied("the project is disabled"))?;
        Ok(AuthContext {
            user: user.id,
            user_name: user.name,
            project: project.id,
            project_name: project.name,
            roles: token.roles,
            issued_at: token.issued_at,
            expires_at: token.expires_at,
        })
    })
}

/// Removes expired tokens; returns how many.
pub async fn purge_expired_tokens(store: &Store) -> Result<usize, StoreError> {
    store
        .write(|tx| {
            let now = now_ms();
            let expired: Vec<String> =
                tx.scan(&TOKENS)?.into_iter().filter(|(_, t)| t.expires_at <= now).map(|(k, _)| k).collect();
            for key in &expired {
                tx.delete(&TOKENS, key)?;
            }
            Ok(expired.len())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password("s3cret");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "s3cret"));
        assert!(!verify_password(&hash, "s3cre"));
        assert!(!verify_password("not a hash", "s3cret"));
    }

    #[test]
    fn roles_include_the_lesser_ones() {
        let ctx = |roles: Vec<Role>| AuthContext {
            user: UserId::random(),
            user_name: "u".into(),
            project: ProjectId::random(),
            project_name: "p".into(),
            roles,
            issued_at: 0,
            expires_at: 0,
        };
        assert!(ctx(vec![Role::Admin]).has(Role::Reader));
        assert!(ctx(vec![Role::Member]).has(Role::Member));
        assert!(!ctx(vec![Role::Reader]).has(Role::Member));
        assert!(!ctx(vec![]).has(Role::Reader));
    }
}
