//! Identity: users, projects and role assignments as Keystone has them, password hashing, and tokens.
//!
//! Passwords are stored as argon2id hashes ([`passwords`]), computed on the login guard's threads. Tokens are random 256-bit secrets; the store keeps only their
//! SHA-256, so a copy of the data file does not hand out working tokens.

use std::net::IpAddr;

use nimbus_protocol::ids::{ProjectId, UserId};
use nimbus_storage::records::{Assignment, Millis, NetworkMode, Project, Role, Token, User, now_ms};
use nimbus_storage::schema::{self, ASSIGNMENTS, PROJECT_NAMES, PROJECTS, TOKEN_EXPIRY, TOKENS, USER_NAMES, USERS};
use nimbus_storage::{Pair, Reads, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::app::error::CloudError;
use crate::app::login_guard::Subject;
use crate::app::passwords;

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

fn token_key(secret: &str) -> String {
    crate::app::hex(&Sha256::digest(secret.as_bytes()))
}

fn validate_name(kind: &str, name: &str) -> Result<(), CloudError> {
    crate::names::name_problem(kind, name).map_or(Ok(()), |problem| Err(CloudError::BadRequest(problem)))
}

pub async fn create_project(
    app: &App,
    name: &str,
    description: &str,
    network_mode: NetworkMode,
) -> Result<Project, CloudError> {
    validate_name("project", name)?;
    let project = Project {
        id: ProjectId::generate(),
        name: name.to_string(),
        description: description.to_string(),
        enabled: true,
        network_mode,
        created_at: now_ms(),
    };
    let record = project.clone();
    app.store
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
    app: &App,
    name: &str,
    password: &str,
    default_project: Option<ProjectId>,
) -> Result<User, CloudError> {
    validate_name("user", name)?;
    let password_hash = hash_in_pool(app, password).await?;
    let user = User {
        id: UserId::generate(),
        name: name.to_string(),
        password_hash,
        default_project,
        enabled: true,
        created_at: now_ms(),
        token_epoch: 0,
    };
    let record = user.clone();
    app.store
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

/// Hashes a new password on the login guard's pool, like every other argon2 run.
async fn hash_in_pool(app: &App, password: &str) -> Result<String, CloudError> {
    if password.is_empty() {
        return Err(CloudError::BadRequest("A password must not be empty.".into()));
    }
    let password = password.to_string();
    app.login_guard().pool.run(move || passwords::hash(&password)).await
}

/// Gives `user` the `role` on `project` (idempotent).
pub async fn grant(app: &App, user: UserId, project: ProjectId, role: Role) -> Result<(), CloudError> {
    app.store
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

pub fn find_user(app: &App, name: &str) -> Result<Option<User>, StoreError> {
    app.store.read(|r| match r.get(&USER_NAMES, &name.to_string())? {
        Some(id) => r.get(&USERS, &id),
        None => Ok(None),
    })
}

/// The project a request body names (by name or id); an unknown one is a bad request.
pub fn named_project(app: &App, name_or_id: &str) -> Result<ProjectId, CloudError> {
    find_project(app, name_or_id)?
        .map(|p| p.id)
        .ok_or_else(|| CloudError::BadRequest(format!("Project {name_or_id} could not be found.")))
}

pub fn find_project(app: &App, name_or_id: &str) -> Result<Option<Project>, StoreError> {
    app.store.read(|r| {
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

/// Password authentication scoped to a project, from `source`. Every failure gives the same answer, so the
/// API does not tell which part was wrong; each is logged with the user, the source and the reason (never the
/// password), and counts towards the lockout of the user and the throttling of the source.
pub async fn password_login(
    app: &App,
    user_name: &str,
    password: &str,
    project_name: &str,
    source: IpAddr,
) -> Result<(String, AuthContext), CloudError> {
    let user = find_user(app, user_name)?;
    login_as(app, LoginAttempt { given: user_name, user, source }, password, project_name).await
}

/// The longest user name a failed login is recorded and logged with.
const MAX_LOGGED_NAME: usize = 64;

/// Who tries to log in: the user as given, and as found (`None`: no such user).
struct LoginAttempt<'a> {
    given: &'a str,
    user: Option<User>,
    source: IpAddr,
}

async fn login_as(
    app: &App,
    attempt: LoginAttempt<'_>,
    password: &str,
    project_name: &str,
) -> Result<(String, AuthContext), CloudError> {
    let LoginAttempt { given, user, source } = attempt;
    let guard = app.login_guard();
    // An unknown name counts as given, but cut short: it is the key of a bounded record, and it is logged.
    let given: String = given.chars().take(MAX_LOGGED_NAME).collect();
    let subject = Subject::User(user.as_ref().map_or_else(|| given.clone(), |u| u.id.to_string()));
    let from = Subject::Source(source);
    let refused = |reason: &str| tracing::warn!(user = %given, %source, reason, "login refused");
    if let Err(refusal) = guard.check(&subject, &from) {
        refused(refusal.reason());
        return Err(refusal.into_error());
    }
    let denied = || CloudError::Unauthorized("The request you have made requires authentication.".into());
    // An unknown or disabled user is checked against a stand-in hash, so the answer takes as long as for a
    // wrong password and its timing does not tell which user names exist.
    static STAND_IN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| passwords::hash("no such user"));
    let hash = user.as_ref().filter(|u| u.enabled).map(|u| u.password_hash.clone());
    let pw = password.to_string();
    let ok = guard.pool.run(move || passwords::verify(hash.as_deref().unwrap_or(&STAND_IN), &pw)).await?;
    let failed = |reason: &str| {
        refused(reason);
        guard.failed(subject.clone(), from.clone());
        denied()
    };
    let user = match user {
        None => return Err(failed("no such user")),
        Some(u) if !u.enabled => return Err(failed("the user is disabled")),
        Some(_) if !ok => return Err(failed("wrong password")),
        Some(u) => u,
    };
    let project = find_project(app, project_name)?.filter(|p| p.enabled);
    let Some(project) = project else { return Err(failed("no such project, or it is disabled")) };
    let roles = roles_of(app, user.id, project.id)?;
    if roles.is_empty() {
        return Err(failed("no role on the project"));
    }
    guard.succeeded(&subject);
    let mut secret_bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut secret_bytes);
    let secret = crate::app::hex(&secret_bytes);
    let issued_at = now_ms();
    let expires_at = issued_at + app.timing.token_ttl.as_millis() as u64;
    let token = Token { user: user.id, project: project.id, user_epoch: user.token_epoch, issued_at, expires_at };
    let key = token_key(&secret);
    app.store.write(move |tx| schema::put_token_in(tx, &key, &token)).await?;
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

fn roles_of(app: &App, user: UserId, project: ProjectId) -> Result<Vec<Role>, StoreError> {
    Ok(app.store.read(|r| r.get(&ASSIGNMENTS, &Pair(user, project)))?.map(|a| a.roles).unwrap_or_default())
}

/// Checks a token and tells whose it is. Everything it relies on is read now, so a revoked token, a disabled
/// or deleted user, a changed password, a disabled project and a removed role all take effect at the next
/// request.
pub fn authenticate(app: &App, secret: &str) -> Result<AuthContext, CloudError> {
    let denied =
        |why: &str| CloudError::Unauthorized(format!("The request you have made requires authentication: {why}."));
    let key = token_key(secret);
    app.store.read(|r| {
        let token = r.get(&TOKENS, &key)?.ok_or_else(|| denied("the token is not valid"))?;
        if token.expires_at <= now_ms() {
            return Err(denied("the token has expired"));
        }
        let user = r.get(&USERS, &token.user)?.filter(|u| u.enabled).ok_or_else(|| denied("the user is disabled"))?;
        if user.token_epoch != token.user_epoch {
            return Err(denied("the token was revoked"));
        }
        let project =
            r.get(&PROJECTS, &token.project)?.filter(|p| p.enabled).ok_or_else(|| denied("the project is disabled"))?;
        let roles = r.get(&ASSIGNMENTS, &Pair(user.id, project.id))?.map(|a| a.roles).unwrap_or_default();
        if roles.is_empty() {
            return Err(denied("the user has no role on the project any more"));
        }
        Ok(AuthContext {
            user: user.id,
            user_name: user.name,
            project: project.id,
            project_name: project.name,
            roles,
            issued_at: token.issued_at,
            expires_at: token.expires_at,
        })
    })
}

/// Revokes one token (`DELETE /auth/tokens`): the caller's own, or (admin) anyone's.
pub async fn revoke_token(app: &App, caller: &AuthContext, subject: &str) -> Result<(), CloudError> {
    let key = token_key(subject);
    let (me, admin) = (caller.user, caller.has(Role::Admin));
    app.store
        .write(move |tx| {
            let not_found = || CloudError::NotFound("Could not find token.".into());
            let token = tx.get(&TOKENS, &key)?.ok_or_else(not_found)?;
            if token.user != me && !admin {
                return Err(not_found());
            }
            schema::delete_token_in(tx, &key)?;
            Ok(())
        })
        .await
}

/// What an update of a user changes (`PATCH /users/{id}`); `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub name: Option<String>,
    pub password: Option<String>,
    pub enabled: Option<bool>,
    pub default_project: Option<Option<ProjectId>>,
}

/// Updates a user. A new password or a disable revokes every token the user holds.
pub async fn update_user(app: &App, id: UserId, changes: UserChanges) -> Result<User, CloudError> {
    if let Some(name) = &changes.name {
        validate_name("user", name)?;
    }
    let password_hash = match &changes.password {
        Some(p) => Some(hash_in_pool(app, p).await?),
        None => None,
    };
    app.store
        .write(move |tx| {
            let mut user = tx.get(&USERS, &id)?.ok_or_else(|| CloudError::not_found("User", id))?;
            if let Some(name) = changes.name.filter(|n| *n != user.name) {
                if tx.get(&USER_NAMES, &name)?.is_some() {
                    return Err(CloudError::Conflict(format!("A user named {name} already exists.")));
                }
                tx.delete(&USER_NAMES, &user.name)?;
                tx.put(&USER_NAMES, &name, &id)?;
                user.name = name;
            }
            if let Some(project) = changes.default_project {
                if let Some(p) = project {
                    tx.get(&PROJECTS, &p)?.ok_or_else(|| CloudError::not_found("Project", p))?;
                }
                user.default_project = project;
            }
            let disabling = changes.enabled == Some(false) && user.enabled;
            if let Some(enabled) = changes.enabled {
                user.enabled = enabled;
            }
            if let Some(hash) = password_hash.clone() {
                user.password_hash = hash;
            }
            if disabling || password_hash.is_some() {
                user.token_epoch = user.token_epoch.wrapping_add(1);
            }
            tx.put(&USERS, &id, &user)?;
            Ok(user)
        })
        .await
}

/// A user changes their own password (`POST /users/{id}/password`), proving the old one; every token they
/// hold is revoked, the one of this request too.
/// The original password is checked like a login: its failures count towards the user's waits and lockout
/// and the source's, so a stolen token cannot be used to guess the password.
pub async fn change_password(
    app: &App,
    caller: &AuthContext,
    id: UserId,
    original: &str,
    new: &str,
    source: IpAddr,
) -> Result<(), CloudError> {
    // Not even an admin changes another's password this way (that is `update_user`); anyone else's is
    // "not found", as one that does not exist.
    let user = app.store.read(|r| r.get(&USERS, &id))?.filter(|_| caller.user == id);
    let user = user.ok_or_else(|| CloudError::not_found("User", id))?;
    let guard = app.login_guard();
    let (subject, from) = (Subject::User(id.to_string()), Subject::Source(source));
    if let Err(refusal) = guard.check(&subject, &from) {
        tracing::warn!(user = %user.name, %source, reason = refusal.reason(), "password change refused");
        return Err(refusal.into_error());
    }
    let (hash, original) = (user.password_hash, original.to_string());
    if !guard.pool.run(move || passwords::verify(&hash, &original)).await? {
        tracing::warn!(user = %user.name, %source, reason = "wrong original password", "password change refused");
        guard.failed(subject, from);
        return Err(CloudError::Unauthorized("The original password is not correct.".into()));
    }
    update_user(app, id, UserChanges { password: Some(new.to_string()), ..UserChanges::default() }).await?;
    Ok(())
}

/// Deletes a user with their role assignments; their tokens stop working at once (they name a user that no
/// longer exists) and are purged when they expire.
pub async fn delete_user(app: &App, id: UserId) -> Result<(), CloudError> {
    app.store
        .write(move |tx| {
            let user = tx.delete(&USERS, &id)?.ok_or_else(|| CloudError::not_found("User", id))?;
            tx.delete(&USER_NAMES, &user.name)?;
            for (key, _) in tx.scan_prefix(&ASSIGNMENTS, &Pair::<UserId, ProjectId>::prefix(&id))? {
                tx.delete(&ASSIGNMENTS, &key)?;
            }
            crate::app::key_pairs::delete_all_in(tx, id)?;
            Ok(())
        })
        .await
}

/// Takes `role` on `project` away from `user`; their tokens lose it at their next request.
pub async fn revoke_role(app: &App, user: UserId, project: ProjectId, role: Role) -> Result<(), CloudError> {
    app.store
        .write(move |tx| {
            let key = Pair(user, project);
            let not_held =
                || CloudError::NotFound(format!("User {user} has no role {} on project {project}.", role.name()));
            let mut assignment = tx.get(&ASSIGNMENTS, &key)?.ok_or_else(not_held)?;
            if !assignment.roles.contains(&role) {
                return Err(not_held());
            }
            assignment.roles.retain(|r| *r != role);
            if assignment.roles.is_empty() {
                tx.delete(&ASSIGNMENTS, &key)?;
            } else {
                tx.put(&ASSIGNMENTS, &key, &assignment)?;
            }
            Ok(())
        })
        .await
}

/// Removes expired tokens, reading only those (at most [`PURGE_BATCH`] a pass); returns how many.
pub async fn purge_expired_tokens(app: &App) -> Result<usize, StoreError> {
    app.store
        .write(|tx| {
            let mut purged = 0;
            for entry in schema::due(tx, &TOKEN_EXPIRY, now_ms(), PURGE_BATCH)? {
                tx.delete(&TOKEN_EXPIRY, &entry)?;
                let Pair(expires_at, key) = entry;
                // Only the token this entry was written for (an entry never outlives it today; if one did, it
                // must not take a token with another expiry along).
                if tx.get(&TOKENS, &key)?.is_some_and(|t| t.expires_at == expires_at) {
                    tx.delete(&TOKENS, &key)?;
                    purged += 1;
                }
            }
            Ok(purged)
        })
        .await
}

/// The most expired tokens one purge removes, so one pass never holds the writer for long.
const PURGE_BATCH: usize = 10_000;

/// Who logs in with a password (Identity v3's `auth.identity.password.user`): by name, or by id.
pub enum LoginUser {
    Name(String),
    Id(String),
}

/// A password login as the Identity API receives it: the user by name or id, the project by name or id, or
/// (no scope) the user's default project.
pub async fn login(
    app: &App,
    user: LoginUser,
    password: &str,
    project: Option<String>,
    source: IpAddr,
) -> Result<(String, AuthContext), CloudError> {
    let (given, found) = match &user {
        LoginUser::Name(name) => (name, find_user(app, name)?),
        // An unknown id logs in as nobody: the same answer as a wrong password.
        LoginUser::Id(id) => match id.parse::<UserId>() {
            Ok(parsed) => (id, app.store.read(|r| r.get(&USERS, &parsed))?),
            Err(_) => (id, None),
        },
    };
    let project = match project {
        Some(project) => project,
        None => found.as_ref().and_then(|u| u.default_project).map(|p| p.to_string()).unwrap_or_default(),
    };
    login_as(app, LoginAttempt { given, user: found, source }, password, &project).await
}

pub fn list_projects(app: &App) -> Result<Vec<Project>, StoreError> {
    Ok(app.store.read(|r| r.scan(&PROJECTS))?.into_iter().map(|(_, p)| p).collect())
}

pub fn list_users(app: &App) -> Result<Vec<User>, StoreError> {
    Ok(app.store.read(|r| r.scan(&USERS))?.into_iter().map(|(_, u)| u).collect())
}

/// A user by id or name.
pub fn find_user_by_id_or_name(app: &App, id_or_name: &str) -> Result<Option<User>, StoreError> {
    if let Ok(id) = id_or_name.parse::<UserId>()
        && let Some(user) = app.store.read(|r| r.get(&USERS, &id))?
    {
        return Ok(Some(user));
    }
    find_user(app, id_or_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_purge_removes_the_expired_tokens_and_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = nimbus_storage::Store::open(dir.path().join("nimbus.redb")).unwrap();
        let app =
            App::new(store, nimbus_runtime::Namespace::new("purge-test"), crate::timing::Timing::default(), false);
        let now = now_ms();
        let token = |expires_at| Token {
            user: UserId::generate(),
            project: ProjectId::generate(),
            user_epoch: 0,
            issued_at: 0,
            expires_at,
        };
        let tokens = [("old", token(now - 1000)), ("new", token(now + 60_000)), ("older", token(now - 5000))];
        app.store()
            .write(move |tx| {
                for (key, t) in &tokens {
                    schema::put_token_in(tx, key, t)?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        assert_eq!(purge_expired_tokens(&app).await.unwrap(), 2);
        let (left, expiry) =
            app.store().read(|r| Ok::<_, StoreError>((r.scan(&TOKENS)?, r.scan(&TOKEN_EXPIRY)?))).unwrap();
        assert_eq!(left.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["new"]);
        assert_eq!(expiry.iter().map(|(Pair(_, k), _)| k.as_str()).collect::<Vec<_>>(), ["new"]);
        assert_eq!(purge_expired_tokens(&app).await.unwrap(), 0);
    }

    #[test]
    fn roles_include_the_lesser_ones() {
        let ctx = |roles: Vec<Role>| AuthContext {
            user: UserId::generate(),
            user_name: "u".into(),
            project: ProjectId::generate(),
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
