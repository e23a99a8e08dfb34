//! Users, roles and privileges: what is persisted in the catalog, and the
//! rules that decide whether a user may do something.
//!
//! A user's principals are itself, the roles granted to it, and `public`.
//! A privilege is held when a grant to one of those principals names it on
//! a scope that covers the object; superusers, members of `admin`, and the
//! owner of a collection hold every privilege on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::scram::Verifier;

/// Built-in role with every privilege.
pub const ADMIN_ROLE: &str = "admin";
/// Built-in role every user is a member of.
pub const PUBLIC_ROLE: &str = "public";

#[derive(Debug, Error, PartialEq)]
pub enum AccessError {
    #[error("permission denied: {0}")]
    Denied(String),
    #[error("role \"{0}\" does not exist")]
    RoleNotFound(String),
    #[error("role \"{0}\" already exists")]
    RoleExists(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    InvalidPrivilege(String),
    #[error("{0}")]
    Protected(String),
    #[error(
        "role name {name:?} is {len} bytes long: names are limited to {MAX_ROLE_NAME_BYTES} bytes"
    )]
    NameTooLong { name: String, len: usize },
    #[error("role name {0:?} is not valid: a name cannot be empty or contain control characters")]
    InvalidName(String),
}

/// The longest user or role name, in bytes (PostgreSQL's NAMEDATALEN - 1).
pub const MAX_ROLE_NAME_BYTES: usize = 63;

/// Check the name of a new user or role: bounded and printable, as the
/// names of other objects.
fn check_role_name(name: &str) -> Result<()> {
    if name.len() > MAX_ROLE_NAME_BYTES {
        let mut shown: String = name.chars().take(MAX_ROLE_NAME_BYTES).collect();
        shown.push_str("...");
        return Err(AccessError::NameTooLong {
            name: shown,
            len: name.len(),
        });
    }
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(AccessError::InvalidName(name.to_string()));
    }
    Ok(())
}

impl quiver_common::sqlstate::SqlStateError for AccessError {
    fn sqlstate(&self) -> quiver_common::sqlstate::SqlState {
        use quiver_common::sqlstate;
        match self {
            AccessError::Denied(_) | AccessError::Protected(_) => sqlstate::INSUFFICIENT_PRIVILEGE,
            AccessError::RoleNotFound(_) => sqlstate::UNDEFINED_OBJECT,
            AccessError::RoleExists(_) => sqlstate::DUPLICATE_OBJECT,
            AccessError::NameTooLong { .. } => sqlstate::NAME_TOO_LONG,
            AccessError::InvalidName(_) => sqlstate::INVALID_NAME,
            AccessError::InvalidGrant(_) | AccessError::InvalidPrivilege(_) => {
                sqlstate::INVALID_GRANT_OPERATION
            }
        }
    }
}

pub type Result<T, E = AccessError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Privilege {
    Select,
    Search,
    Insert,
    Update,
    Delete,
    Index,
    Maintain,
    Create,
    Drop,
    Alter,
}

impl Privilege {
    pub const ALL: [Privilege; 10] = [
        Privilege::Select,
        Privilege::Search,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
        Privilege::Index,
        Privilege::Maintain,
        Privilege::Create,
        Privilege::Drop,
        Privilege::Alter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Search => "SEARCH",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Index => "INDEX",
            Privilege::Maintain => "MAINTAIN",
            Privilege::Create => "CREATE",
            Privilege::Drop => "DROP",
            Privilege::Alter => "ALTER",
        }
    }

    pub fn parse(word: &str) -> Option<Privilege> {
        Privilege::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(word))
    }

    /// Whether the privilege means anything on a single collection.
    pub fn applies_to_collections(self) -> bool {
        self != Privilege::Create
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every database and collection.
    Global,
    /// The database itself (creating and dropping collections in it) and
    /// every collection in it.
    Database(String),
    /// Every collection of the database, present and future.
    AllCollections(String),
    Collection {
        database: String,
        name: String,
    },
}

impl Scope {
    pub fn covers(&self, object: &Object<'_>) -> bool {
        match (self, object) {
            (Scope::Global, _) => true,
            (Scope::Database(d), Object::Database(o)) => d == o,
            (Scope::Database(d), Object::Collection(o, _)) => d == o,
            (Scope::AllCollections(d), Object::Collection(o, _)) => d == o,
            (Scope::Collection { database, name }, Object::Collection(d, c)) => {
                database == d && name == c
            }
            _ => false,
        }
    }

    /// `(object_type, object_name)` as SHOW GRANTS prints them.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Scope::Global => ("global", "*".into()),
            Scope::Database(d) => ("database", d.clone()),
            Scope::AllCollections(d) => ("all collections in database", d.clone()),
            Scope::Collection { database, name } => ("collection", format!("{database}.{name}")),
        }
    }

    pub fn database(&self) -> Option<&str> {
        match self {
            Scope::Global => None,
            Scope::Database(d) | Scope::AllCollections(d) => Some(d),
            Scope::Collection { database, .. } => Some(database),
        }
    }
}

/// What a statement acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object<'a> {
    Global,
    Database(&'a str),
    Collection(&'a str, &'a str),
}

impl fmt::Display for Object<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Global => f.write_str("the server"),
            Object::Database(d) => write!(f, "database {d}"),
            Object::Collection(_, c) => write!(f, "collection {c}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub grantee: String,
    pub privilege: Privilege,
    pub scope: Scope,
    pub grant_option: bool,
    pub grantor: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDef {
    pub name: String,
    pub verifier: Option<Verifier>,
    #[serde(default)]
    pub superuser: bool,
    #[serde(default)]
    pub roles: BTreeSet<String>,
}

/// Everything access control persists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecurityState {
    #[serde(default)]
    pub users: BTreeMap<String, UserDef>,
    /// Roles that are not users (the built-in ones are implicit).
    #[serde(default)]
    pub roles: BTreeSet<String>,
    #[serde(default)]
    pub grants: BTreeSet<Grant>,
}

fn is_builtin(name: &str) -> bool {
    name == ADMIN_ROLE || name == PUBLIC_ROLE
}

impl SecurityState {
    pub fn has_superuser(&self) -> bool {
        self.users.values().any(|u| u.superuser)
    }

    pub fn user(&self, name: &str) -> Option<&UserDef> {
        self.users.get(name)
    }

    /// Whether `name` is a user or a role (built-in roles included).
    pub fn exists(&self, name: &str) -> bool {
        is_builtin(name) || self.roles.contains(name) || self.users.contains_key(name)
    }

    pub fn role_names(&self) -> Vec<String> {
        let mut out: Vec<String> = [ADMIN_ROLE, PUBLIC_ROLE]
            .into_iter()
            .map(String::from)
            .collect();
        out.extend(self.roles.iter().cloned());
        out.sort();
        out
    }

    /// The names whose grants `user` holds.
    pub fn principals(&self, user: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([user.to_string(), PUBLIC_ROLE.to_string()]);
        if let Some(u) = self.users.get(user) {
            out.extend(u.roles.iter().cloned());
        }
        out
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.superuser || u.roles.contains(ADMIN_ROLE))
    }

    pub fn is_superuser(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.superuser)
    }

    fn held(&self, user: &str, p: Privilege, object: &Object<'_>, grantable: bool) -> bool {
        let principals = self.principals(user);
        self.grants.iter().any(|g| {
            g.privilege == p
                && (!grantable || g.grant_option)
                && principals.contains(&g.grantee)
                && g.scope.covers(object)
        })
    }

    /// Whether `user` holds `p` on `object`; `owner` is the owner of the
    /// object (a collection's creator), who holds everything on it.
    pub fn allowed(
        &self,
        user: &str,
        p: Privilege,
        object: &Object<'_>,
        owner: Option<&str>,
    ) -> bool {
        self.is_admin(user) || owner == Some(user) || self.held(user, p, object, false)
    }

    /// Whether `user` holds any privilege on `object` (so may see it).
    pub fn sees(&self, user: &str, object: &Object<'_>, owner: Option<&str>) -> bool {
        self.is_admin(user)
            || owner == Some(user)
            || Privilege::ALL
                .into_iter()
                .any(|p| self.held(user, p, object, false))
    }

    /// Whether `user` may grant (or revoke) `p` on `scope`.
    pub fn may_grant(&self, user: &str, p: Privilege, scope: &Scope, owner: Option<&str>) -> bool {
        if self.is_admin(user) {
            return true;
        }
        let object = match scope {
            Scope::Global => Object::Global,
            Scope::Database(d) => Object::Database(d),
            // Grantable on every collection of the database: held with
            // grant option on a scope that covers them all.
            Scope::AllCollections(d) => {
                let principals = self.principals(user);
                return self.grants.iter().any(|g| {
                    g.grant_option
                        && g.privilege == p
                        && principals.contains(&g.grantee)
                        && match &g.scope {
                            Scope::Global => true,
                            Scope::Database(x) | Scope::AllCollections(x) => x == d,
                            Scope::Collection { .. } => false,
                        }
                });
            }
            Scope::Collection { database, name } => Object::Collection(database, name),
        };
        owner == Some(user) || self.held(user, p, &object, true)
    }

    /// Create a user (or only check that it could be created).
    pub fn create_user(
        &mut self,
        name: &str,
        verifier: Option<Verifier>,
        superuser: bool,
    ) -> Result<()> {
        check_role_name(name)?;
        if self.exists(name) {
            return Err(AccessError::RoleExists(name.into()));
        }
        self.users.insert(
            name.to_string(),
            UserDef {
                name: name.to_string(),
                verifier,
                superuser,
                roles: BTreeSet::new(),
            },
        );
        Ok(())
    }

    pub fn set_password(&mut self, name: &str, verifier: Verifier) -> Result<()> {
        let user = self
            .users
            .get_mut(name)
            .ok_or_else(|| AccessError::RoleNotFound(name.into()))?;
        user.verifier = Some(verifier);
        Ok(())
    }

    pub fn drop_user(&mut self, name: &str) -> Result<()> {
        let user = self
            .users
            .get(name)
            .ok_or_else(|| AccessError::RoleNotFound(name.into()))?;
        if user.superuser {
            return Err(AccessError::Protected(format!(
                "cannot drop user \"{name}\": it is the superuser"
            )));
        }
        self.users.remove(name);
        self.grants.retain(|g| g.grantee != name);
        Ok(())
    }

    pub fn create_role(&mut self, name: &str) -> Result<()> {
        check_role_name(name)?;
        if self.exists(name) {
            return Err(AccessError::RoleExists(name.into()));
        }
        self.roles.insert(name.to_string());
        Ok(())
    }

    pub fn drop_role(&mut self, name: &str) -> Result<()> {
        if is_builtin(name) {
            return Err(AccessError::Protected(format!(
                "cannot drop the built-in role \"{name}\""
            )));
        }
        if self.users.contains_key(name) {
            return Err(AccessError::InvalidGrant(format!(
                "\"{name}\" is a user: use DROP USER"
            )));
        }
        if !self.roles.remove(name) {
            return Err(AccessError::RoleNotFound(name.into()));
        }
        self.grants.retain(|g| g.grantee != name);
        for u in self.users.values_mut() {
            u.roles.remove(name);
        }
        Ok(())
    }

    /// `GRANT role TO user` (`grant = false`: REVOKE ... FROM).
    pub fn set_membership(&mut self, role: &str, user: &str, grant: bool) -> Result<()> {
        if role == PUBLIC_ROLE {
            return Err(AccessError::InvalidGrant(
                "every user is a member of \"public\"; it cannot be granted or revoked".into(),
            ));
        }
        if !is_builtin(role) && !self.roles.contains(role) {
            return Err(if self.users.contains_key(role) {
                AccessError::InvalidGrant(format!(
                    "\"{role}\" is a user; only roles can be granted to users"
                ))
            } else {
                AccessError::RoleNotFound(role.into())
            });
        }
        let Some(u) = self.users.get_mut(user) else {
            return Err(if self.roles.contains(user) || is_builtin(user) {
                AccessError::InvalidGrant(format!(
                    "\"{user}\" is a role; roles can be granted to users only"
                ))
            } else {
                AccessError::RoleNotFound(user.into())
            });
        };
        if grant {
            u.roles.insert(role.to_string());
        } else {
            u.roles.remove(role);
        }
        Ok(())
    }

    pub fn grant(&mut self, grant: Grant) -> Result<()> {
        if !self.exists(&grant.grantee) {
            return Err(AccessError::RoleNotFound(grant.grantee));
        }
        // A grant with the option replaces one without it.
        let plain = Grant {
            grant_option: false,
            ..grant.clone()
        };
        if grant.grant_option {
            self.grants.remove(&plain);
        } else if self.grants.contains(&Grant {
            grant_option: true,
            ..grant.clone()
        }) {
            return Ok(());
        }
        self.grants.retain(|g| {
            !(g.grantee == grant.grantee
                && g.privilege == grant.privilege
                && g.scope == grant.scope)
        });
        self.grants.insert(grant);
        Ok(())
    }

    /// Remove grants of `p` on `scope` to `grantee`; with `option_only`,
    /// keep the privilege and drop only the grant option.
    pub fn revoke(
        &mut self,
        grantee: &str,
        p: Privilege,
        scope: &Scope,
        option_only: bool,
    ) -> Result<()> {
        if !self.exists(grantee) {
            return Err(AccessError::RoleNotFound(grantee.into()));
        }
        let matching: Vec<Grant> = self
            .grants
            .iter()
            .filter(|g| g.grantee == grantee && g.privilege == p && &g.scope == scope)
            .cloned()
            .collect();
        for g in matching {
            self.grants.remove(&g);
            if option_only {
                self.grants.insert(Grant {
                    grant_option: false,
                    ..g
                });
            }
        }
        Ok(())
    }

    /// Forget grants on a collection or database that no longer exists.
    pub fn forget_scope(&mut self, gone: impl Fn(&Scope) -> bool) {
        self.grants.retain(|g| !gone(&g.scope));
    }

    /// Move grants on `from` to `to` (a renamed collection).
    pub fn rename_scope(&mut self, from: &Scope, to: Scope) {
        let moved: Vec<Grant> = self
            .grants
            .iter()
            .filter(|g| &g.scope == from)
            .cloned()
            .collect();
        for mut g in moved {
            self.grants.remove(&g);
            g.scope = to.clone();
            self.grants.insert(g);
        }
    }

    /// Grants held by `name` directly and, for a user, through its roles.
    pub fn grants_for(&self, name: &str) -> Vec<&Grant> {
        let principals = if self.users.contains_key(name) {
            self.principals(name)
        } else {
            BTreeSet::from([name.to_string()])
        };
        self.grants
            .iter()
            .filter(|g| principals.contains(&g.grantee))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_common::sqlstate;

    /// Every variant, with the code it must give.
    #[test]
    fn every_error_variant_has_its_sqlstate() {
        use quiver_common::sqlstate::SqlStateError;
        let cases = [
            (
                AccessError::Denied("d".into()),
                sqlstate::INSUFFICIENT_PRIVILEGE,
            ),
            (
                AccessError::RoleNotFound("r".into()),
                sqlstate::UNDEFINED_OBJECT,
            ),
            (
                AccessError::RoleExists("r".into()),
                sqlstate::DUPLICATE_OBJECT,
            ),
            (
                AccessError::InvalidGrant("g".into()),
                sqlstate::INVALID_GRANT_OPERATION,
            ),
            (
                AccessError::InvalidPrivilege("p".into()),
                sqlstate::INVALID_GRANT_OPERATION,
            ),
            (
                AccessError::Protected("p".into()),
                sqlstate::INSUFFICIENT_PRIVILEGE,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.sqlstate(), code, "{e:?}");
        }
        let scram = [
            (
                super::super::scram::ScramError::Malformed("m"),
                sqlstate::PROTOCOL_VIOLATION,
            ),
            (
                super::super::scram::ScramError::ChannelBinding,
                sqlstate::PROTOCOL_VIOLATION,
            ),
            (
                super::super::scram::ScramError::Nonce,
                sqlstate::PROTOCOL_VIOLATION,
            ),
            (
                super::super::scram::ScramError::Proof,
                sqlstate::INVALID_PASSWORD,
            ),
        ];
        for (e, code) in scram {
            assert_eq!(e.sqlstate(), code, "{e:?}");
        }
    }

    fn state() -> SecurityState {
        let mut s = SecurityState::default();
        s.create_user("root", None, true).unwrap();
        s.create_user("alice", None, false).unwrap();
        s.create_user("bob", None, false).unwrap();
        s.create_role("reader").unwrap();
        s
    }

    fn grant(grantee: &str, p: Privilege, scope: Scope, option: bool) -> Grant {
        Grant {
            grantee: grantee.into(),
            privilege: p,
            scope,
            grant_option: option,
            grantor: "root".into(),
        }
    }

    fn coll(d: &str, c: &str) -> Scope {
        Scope::Collection {
            database: d.into(),
            name: c.into(),
        }
    }

    #[test]
    fn privileges_flow_through_roles_and_scopes() {
        let mut s = state();
        let t = Object::Collection("shop", "t");
        assert!(!s.allowed("alice", Privilege::Select, &t, None));
        assert!(s.allowed("root", Privilege::Select, &t, None));
        assert!(s.allowed("alice", Privilege::Select, &t, Some("alice")));
        s.grant(grant("reader", Privilege::Select, coll("shop", "t"), false))
            .unwrap();
        assert!(!s.allowed("alice", Privilege::Select, &t, None));
        s.set_membership("reader", "alice", true).unwrap();
        assert!(s.allowed("alice", Privilege::Select, &t, None));
        assert!(!s.allowed("alice", Privilege::Search, &t, None));
        assert!(!s.allowed(
            "alice",
            Privilege::Select,
            &Object::Collection("shop", "u"),
            None
        ));
        s.grant(grant(
            "bob",
            Privilege::Insert,
            Scope::AllCollections("shop".into()),
            false,
        ))
        .unwrap();
        assert!(s.allowed(
            "bob",
            Privilege::Insert,
            &Object::Collection("shop", "u"),
            None
        ));
        assert!(!s.allowed(
            "bob",
            Privilege::Insert,
            &Object::Collection("other", "u"),
            None
        ));
        assert!(!s.allowed("bob", Privilege::Create, &Object::Database("shop"), None));
        s.grant(grant("public", Privilege::Search, Scope::Global, false))
            .unwrap();
        assert!(s.allowed(
            "bob",
            Privilege::Search,
            &Object::Collection("x", "y"),
            None
        ));
        s.set_membership("admin", "bob", true).unwrap();
        assert!(s.allowed("bob", Privilege::Drop, &Object::Database("x"), None));
    }

    #[test]
    fn only_holders_with_grant_option_may_grant() {
        let mut s = state();
        let scope = coll("shop", "t");
        assert!(!s.may_grant("alice", Privilege::Select, &scope, None));
        s.grant(grant("alice", Privilege::Select, scope.clone(), false))
            .unwrap();
        assert!(!s.may_grant("alice", Privilege::Select, &scope, None));
        s.grant(grant(
            "alice",
            Privilege::Select,
            Scope::Database("shop".into()),
            true,
        ))
        .unwrap();
        assert!(s.may_grant("alice", Privilege::Select, &scope, None));
        assert!(s.may_grant(
            "alice",
            Privilege::Select,
            &Scope::AllCollections("shop".into()),
            None
        ));
        assert!(!s.may_grant("alice", Privilege::Insert, &scope, None));
        assert!(!s.may_grant("alice", Privilege::Select, &Scope::Global, None));
        s.revoke(
            "alice",
            Privilege::Select,
            &Scope::Database("shop".into()),
            true,
        )
        .unwrap();
        assert!(!s.may_grant("alice", Privilege::Select, &scope, None));
        assert!(s.allowed(
            "alice",
            Privilege::Select,
            &Object::Collection("shop", "u"),
            None
        ));
    }

    #[test]
    fn protected_names() {
        let mut s = state();
        assert!(matches!(
            s.drop_user("root"),
            Err(AccessError::Protected(_))
        ));
        assert!(matches!(
            s.drop_role("admin"),
            Err(AccessError::Protected(_))
        ));
        assert!(matches!(
            s.create_role("public"),
            Err(AccessError::RoleExists(_))
        ));
        assert!(matches!(
            s.create_user("reader", None, false),
            Err(AccessError::RoleExists(_))
        ));
        assert!(s.set_membership("public", "alice", true).is_err());
        assert!(s.set_membership("alice", "bob", true).is_err());
        s.grant(grant("alice", Privilege::Select, Scope::Global, false))
            .unwrap();
        s.drop_user("alice").unwrap();
        assert!(s.grants.is_empty());
    }
}
