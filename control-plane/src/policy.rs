//! Who may do what: the one access policy. Every API route, every list and the replicated write
//! path ask [`decide`] (or [`scope`], its list form) and nothing else; handlers make no checks
//! of their own.
//!
//! It is pure: a principal (who is asking, with their role bindings), an action, and the facts
//! about the object the caller has already read (its tenant; for data centers, clusters and
//! environments, the tenants whose grants name them; for users and tokens, their bindings).
//! The answer is [`Decision::Allow`], [`Decision::Forbidden`] (the principal may see the object
//! but not do this: 403) or [`Decision::Hidden`] (the principal may not even know the object
//! exists: answered as if it did not, 404, so names do not leak across tenants).
//!
//! | role | may |
//! | --- | --- |
//! | `admin` | everything |
//! | `operator` | read everything in every tenant; kill and run any run; agents, leases, plane health; no definitions, no users or tokens |
//! | `owner` of T | everything inside T (workflows, schedules, resources, runs), T's users and tokens at or below owner of T; read T's grants and the infrastructure they name |
//! | `developer` of T | workflows, schedules, resources and run control inside T; read T's grants and the infrastructure they name |
//! | `viewer` of T | read inside T |

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::name::Name;

/// A role. `admin` and `operator` span the federation; the others are held for one tenant.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Owner,
    Developer,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Owner,
        Role::Developer,
        Role::Viewer,
    ];

    /// Whether the role is held for a tenant (and needs one).
    pub fn is_tenant_role(self) -> bool {
        matches!(self, Role::Owner | Role::Developer | Role::Viewer)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Owner => "owner",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role a principal holds: `admin`, `operator`, or a tenant role with its tenant
/// (`developer@ads`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub role: Role,
    /// The tenant of a tenant role; none for `admin` and `operator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Name>,
}

impl Binding {
    pub fn global(role: Role) -> Self {
        Self { role, tenant: None }
    }

    pub fn tenant(role: Role, tenant: Name) -> Self {
        Self {
            role,
            tenant: Some(tenant),
        }
    }

    /// A tenant role needs its tenant; `admin` and `operator` take none.
    pub fn check(&self) -> Result<(), String> {
        match (self.role.is_tenant_role(), &self.tenant) {
            (true, None) => Err(format!(
                "role `{}` is held for a tenant: give the tenant",
                self.role
            )),
            (false, Some(t)) => Err(format!(
                "role `{}` spans every tenant: it takes no tenant (got `{t}`)",
                self.role
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "{}@{t}", self.role),
            None => write!(f, "{}", self.role),
        }
    }
}

impl FromStr for Binding {
    type Err = String;

    /// `admin`, `operator`, or `ROLE@TENANT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (role, tenant) = match s.split_once('@') {
            Some((r, t)) => (r, Some(t)),
            None => (s, None),
        };
        let role = Role::parse(role).ok_or_else(|| {
            format!("`{role}` is not a role (admin, operator, owner, developer, viewer)")
        })?;
        let tenant = tenant
            .map(|t| Name::new(t).map_err(|e| format!("tenant: {e}")))
            .transpose()?;
        let binding = Binding { role, tenant };
        binding.check()?;
        Ok(binding)
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub who: Who,
    pub bindings: Vec<Binding>,
}

/// The kind of principal and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Who {
    /// A person, signed in with a password (a session).
    User(Name),
    /// An API token, for automation.
    Token(Name),
    /// The plane itself (bootstrap, examples): trusted, as an admin.
    System(String),
}

impl Principal {
    /// The plane acting on its own behalf (bootstrap, seeding): an admin.
    pub fn system(name: impl Into<String>) -> Self {
        Self {
            who: Who::System(name.into()),
            bindings: vec![Binding::global(Role::Admin)],
        }
    }

    /// How the audit trail and messages name it: `user:alice`, `token:ci`, `bootstrap`.
    pub fn actor(&self) -> String {
        match &self.who {
            Who::User(n) => format!("user:{n}"),
            Who::Token(n) => format!("token:{n}"),
            Who::System(n) => n.clone(),
        }
    }

    /// The user behind it, for a person.
    pub fn user(&self) -> Option<&Name> {
        match &self.who {
            Who::User(n) => Some(n),
            _ => None,
        }
    }

    fn holds(&self, role: Role) -> bool {
        self.bindings.iter().any(|b| b.role == role)
    }

    fn holds_in(&self, tenant: &Name, roles: &[Role]) -> bool {
        self.bindings
            .iter()
            .any(|b| b.tenant.as_ref() == Some(tenant) && roles.contains(&b.role))
    }

    fn member_of(&self, tenant: &Name) -> bool {
        self.holds_in(tenant, &[Role::Owner, Role::Developer, Role::Viewer])
    }

    pub fn is_admin(&self) -> bool {
        self.holds(Role::Admin)
    }

    /// The tenants it holds any tenant role in.
    pub fn tenants(&self) -> BTreeSet<Name> {
        self.bindings
            .iter()
            .filter(|b| b.role.is_tenant_role())
            .filter_map(|b| b.tenant.clone())
            .collect()
    }

    /// The tenants it owns.
    pub fn owned(&self) -> BTreeSet<Name> {
        self.bindings
            .iter()
            .filter(|b| b.role == Role::Owner)
            .filter_map(|b| b.tenant.clone())
            .collect()
    }

    /// Whether it may hand out (or take back) `binding`: admins any, owners any role of a
    /// tenant they own (which is at or below their own). Never more than it holds itself.
    fn may_hand_out(&self, binding: &Binding) -> bool {
        match &binding.tenant {
            Some(t) if binding.role.is_tenant_role() => self.holds_in(t, &[Role::Owner]),
            _ => false,
        }
    }
}

/// What is being done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// See it (or see it in a list).
    Read,
    /// Make a new one. What can be hidden is the scope it is made in (its tenant), not the
    /// object, which does not exist yet.
    Create,
    /// Change or delete it.
    Change,
    /// Kill a run, or start one now.
    Control,
}

/// The facts about an object the policy needs, read by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A data center, cluster or environment: shared infrastructure, seen by a tenant through
    /// the grants that name it. `granted_to`: the tenants of those grants.
    Infrastructure { granted_to: Vec<Name> },
    /// A tenant itself.
    Tenant(Name),
    /// A grant of an environment to this tenant.
    Grant(Name),
    /// A workflow, schedule or resource file of this tenant.
    Definition(Name),
    /// A run of this tenant (its history, attempts and logs).
    Run(Name),
    /// Audit entries about this tenant (none: about the federation).
    Audit(Option<Name>),
    /// A user or token, by the bindings it holds; `own`: the principal itself.
    Principal { bindings: Vec<Binding>, own: bool },
    /// A binding being handed out or taken back.
    Binding(Binding),
    /// A user's password; `own`: the principal's own.
    Password { bindings: Vec<Binding>, own: bool },
    /// Agents, leases, plane health.
    Operations,
    /// Plane membership and snapshots (a snapshot holds every credential's hash).
    Plane,
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    /// May see it, may not do this: 403.
    Forbidden,
    /// May not know it exists: 404, as if it did not.
    Hidden,
}

impl Decision {
    /// The stronger refusal of two: hidden over forbidden over allowed.
    pub fn and(self, other: Decision) -> Decision {
        use Decision::*;
        match (self, other) {
            (Hidden, _) | (_, Hidden) => Hidden,
            (Forbidden, _) | (_, Forbidden) => Forbidden,
            _ => Allow,
        }
    }
}

/// The one policy: may `principal` do `action` to `object`?
pub fn decide(principal: &Principal, action: Action, object: &Object) -> Decision {
    if principal.is_admin() {
        return Decision::Allow;
    }
    let visible = match action {
        Action::Create => scope_visible(principal, object),
        _ => readable(principal, object),
    };
    if !visible {
        // Federation-wide things are no tenant's secret: refused, not hidden.
        return match object {
            Object::Operations | Object::Plane | Object::Audit(None) => Decision::Forbidden,
            _ => Decision::Hidden,
        };
    }
    let allowed = match action {
        Action::Read => true,
        Action::Create | Action::Change => writable(principal, object),
        Action::Control => match object {
            Object::Run(t) => {
                principal.holds(Role::Operator)
                    || principal.holds_in(t, &[Role::Owner, Role::Developer])
            }
            // Holding an environment's schedules still (a pause) is run control too.
            Object::Infrastructure { .. } => principal.holds(Role::Operator),
            _ => false,
        },
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::Forbidden
    }
}

/// [`decide`] for several objects at once (a token with several bindings): the strongest
/// refusal wins, so a request that touches another tenant answers as if that tenant did not
/// exist even when it is also forbidden for another reason.
pub fn decide_all<'a>(
    principal: &Principal,
    action: Action,
    objects: impl IntoIterator<Item = &'a Object>,
) -> Decision {
    objects
        .into_iter()
        .map(|o| decide(principal, action, o))
        .fold(Decision::Allow, Decision::and)
}

/// Whether the principal may see the object.
fn readable(p: &Principal, object: &Object) -> bool {
    let operator = p.holds(Role::Operator);
    match object {
        Object::Infrastructure { granted_to } => {
            operator || granted_to.iter().any(|t| p.member_of(t))
        }
        Object::Tenant(t)
        | Object::Grant(t)
        | Object::Definition(t)
        | Object::Run(t)
        | Object::Audit(Some(t)) => operator || p.member_of(t),
        Object::Audit(None) | Object::Operations => operator,
        Object::Principal { bindings, own } | Object::Password { bindings, own } => {
            *own || bindings
                .iter()
                .any(|b| b.tenant.as_ref().is_some_and(|t| p.owned().contains(t)))
        }
        Object::Binding(b) => match &b.tenant {
            Some(t) => operator || p.member_of(t),
            // A federation-wide role is no tenant's secret.
            None => true,
        },
        Object::Plane => false,
    }
}

/// For a create: whether the principal may see the scope the object is made in. Only a
/// tenant can be hidden; federation-wide things are refused, not hidden.
fn scope_visible(p: &Principal, object: &Object) -> bool {
    match object {
        Object::Grant(t) | Object::Definition(t) | Object::Run(t) => {
            p.holds(Role::Operator) || p.member_of(t)
        }
        Object::Principal { bindings, .. } => bindings.iter().all(|b| match &b.tenant {
            Some(t) => p.holds(Role::Operator) || p.member_of(t),
            None => true,
        }),
        Object::Binding(_) => readable(p, object),
        _ => true,
    }
}

/// Whether the principal may create, change or delete the object (given it may see it).
fn writable(p: &Principal, object: &Object) -> bool {
    match object {
        Object::Definition(t) => p.holds_in(t, &[Role::Owner, Role::Developer]),
        Object::Principal { bindings, .. } => {
            !bindings.is_empty() && bindings.iter().all(|b| p.may_hand_out(b))
        }
        Object::Binding(b) => p.may_hand_out(b),
        Object::Password { bindings, own } => {
            *own || (!bindings.is_empty() && bindings.iter().all(|b| p.may_hand_out(b)))
        }
        // Infrastructure, tenants, grants, runs (history is the agents'), audit, operations,
        // the plane: admins only.
        _ => false,
    }
}

/// What a list shows a principal: everything, only some tenants' objects, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Tenants(BTreeSet<Name>),
    Nothing,
}

impl Scope {
    pub fn contains(&self, tenant: &Name) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenants(ts) => ts.contains(tenant),
            Scope::Nothing => false,
        }
    }

    /// Whether any of `tenants` is in scope (infrastructure: the tenants granted it).
    pub fn any(&self, tenants: &[Name]) -> bool {
        match self {
            Scope::All => true,
            _ => tenants.iter().any(|t| self.contains(t)),
        }
    }
}

/// The kinds of things a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Infrastructure,
    Tenant,
    Grant,
    Definition,
    Run,
    Audit,
    /// Users and tokens: listed when they hold a binding in a tenant in scope.
    Principal,
    Operations,
}

/// The list form of [`decide`] with [`Action::Read`]: which tenants' objects of `kind` the
/// principal sees. For every tenant `t`, `scope(p, k).contains(t)` agrees with `decide(p,
/// Read, <object of kind k in t>)` (a property test holds it to that).
pub fn scope(principal: &Principal, kind: Kind) -> Scope {
    if principal.is_admin() {
        return Scope::All;
    }
    let operator = principal.holds(Role::Operator);
    match kind {
        Kind::Infrastructure
        | Kind::Tenant
        | Kind::Grant
        | Kind::Definition
        | Kind::Run
        | Kind::Audit => {
            if operator {
                Scope::All
            } else {
                tenants(principal.tenants())
            }
        }
        Kind::Principal => tenants(principal.owned()),
        Kind::Operations => {
            if operator {
                Scope::All
            } else {
                Scope::Nothing
            }
        }
    }
}

fn tenants(set: BTreeSet<Name>) -> Scope {
    if set.is_empty() {
        Scope::Nothing
    } else {
        Scope::Tenants(set)
    }
}

/// In words, who may do `action` to `object`: for refusals that say what to ask for.
pub fn who_may(action: Action, object: &Object) -> String {
    let tenant_roles = |t: &Name, roles: &str| format!("{roles} of tenant `{t}`, or admin");
    match (action, object) {
        (Action::Read, Object::Operations) | (Action::Control, Object::Infrastructure { .. }) => {
            "operator or admin".into()
        }
        (Action::Control, Object::Run(t)) => tenant_roles(t, "operator, owner or developer"),
        (Action::Create | Action::Change, Object::Definition(t)) => {
            tenant_roles(t, "owner or developer")
        }
        (_, Object::Binding(b)) => match &b.tenant {
            Some(t) if b.role.is_tenant_role() => tenant_roles(t, "owner"),
            _ => "admin".into(),
        },
        (_, Object::Principal { bindings, .. }) | (_, Object::Password { bindings, .. }) => {
            let owned: BTreeSet<String> = bindings
                .iter()
                .filter_map(|b| b.tenant.as_ref().map(|t| format!("`{t}`")))
                .collect();
            if owned.is_empty() || bindings.iter().any(|b| !b.role.is_tenant_role()) {
                "admin".into()
            } else {
                format!(
                    "owner of tenant {}, or admin",
                    owned.into_iter().collect::<Vec<_>>().join(" and ")
                )
            }
        }
        (Action::Read, Object::Audit(None)) => "operator or admin".into(),
        _ => "admin".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn p(bindings: &[&str]) -> Principal {
        Principal {
            who: Who::Token(n("t")),
            bindings: bindings.iter().map(|b| b.parse().unwrap()).collect(),
        }
    }

    use Action::*;
    use Decision::*;

    #[test]
    fn bindings_read_and_print_as_role_at_tenant() {
        let b: Binding = "developer@ads".parse().unwrap();
        assert_eq!(b, Binding::tenant(Role::Developer, n("ads")));
        assert_eq!(b.to_string(), "developer@ads");
        assert_eq!("admin".parse::<Binding>().unwrap().to_string(), "admin");
        assert!(
            "owner"
                .parse::<Binding>()
                .unwrap_err()
                .contains("give the tenant"),
            "a tenant role needs its tenant"
        );
        assert!(
            "admin@ads"
                .parse::<Binding>()
                .unwrap_err()
                .contains("takes no tenant")
        );
        assert!(
            "root"
                .parse::<Binding>()
                .unwrap_err()
                .contains("not a role")
        );
        assert!(
            "viewer@a.b"
                .parse::<Binding>()
                .unwrap_err()
                .contains("tenant")
        );
    }

    #[test]
    fn the_role_table() {
        let ads = n("ads");
        let bi = n("bi");
        let admin = p(&["admin"]);
        let operator = p(&["operator"]);
        let owner = p(&["owner@ads"]);
        let dev = p(&["developer@ads"]);
        let viewer = p(&["viewer@ads"]);
        let infra_ads = Object::Infrastructure {
            granted_to: vec![ads.clone()],
        };
        let infra_bi = Object::Infrastructure {
            granted_to: vec![bi.clone()],
        };
        let cases: Vec<(&Principal, Action, Object, Decision)> = vec![
            (&admin, Change, Object::Plane, Allow),
            (&operator, Read, Object::Run(bi.clone()), Allow),
            (&operator, Control, Object::Run(bi.clone()), Allow),
            (
                &operator,
                Create,
                Object::Definition(ads.clone()),
                Forbidden,
            ),
            (&operator, Read, Object::Operations, Allow),
            (&operator, Read, Object::Plane, Forbidden),
            (&operator, Create, infra_ads.clone(), Forbidden),
            (
                &operator,
                Read,
                Object::Principal {
                    bindings: vec!["viewer@ads".parse().unwrap()],
                    own: false,
                },
                Hidden,
            ),
            (&owner, Create, Object::Definition(ads.clone()), Allow),
            (&owner, Control, Object::Run(ads.clone()), Allow),
            (&owner, Read, Object::Grant(ads.clone()), Allow),
            (&owner, Create, Object::Grant(ads.clone()), Forbidden),
            (&owner, Read, infra_ads.clone(), Allow),
            (&owner, Change, infra_ads.clone(), Forbidden),
            (&owner, Read, infra_bi.clone(), Hidden),
            (&owner, Read, Object::Definition(bi.clone()), Hidden),
            (&owner, Create, Object::Definition(bi.clone()), Hidden),
            (&owner, Read, Object::Operations, Forbidden),
            (
                &owner,
                Create,
                Object::Binding("developer@ads".parse().unwrap()),
                Allow,
            ),
            (
                &owner,
                Create,
                Object::Binding("owner@ads".parse().unwrap()),
                Allow,
            ),
            (
                &owner,
                Create,
                Object::Binding("admin".parse().unwrap()),
                Forbidden,
            ),
            (
                &owner,
                Create,
                Object::Binding("viewer@bi".parse().unwrap()),
                Hidden,
            ),
            (&dev, Create, Object::Definition(ads.clone()), Allow),
            (&dev, Control, Object::Run(ads.clone()), Allow),
            (&dev, Read, Object::Grant(ads.clone()), Allow),
            (&dev, Read, infra_ads.clone(), Allow),
            (
                &dev,
                Create,
                Object::Binding("viewer@ads".parse().unwrap()),
                Forbidden,
            ),
            (&viewer, Read, Object::Run(ads.clone()), Allow),
            (&viewer, Control, Object::Run(ads.clone()), Forbidden),
            (&viewer, Change, Object::Definition(ads.clone()), Forbidden),
            (&viewer, Read, Object::Audit(Some(ads.clone())), Allow),
            (&viewer, Read, Object::Audit(Some(bi.clone())), Hidden),
            (&viewer, Read, Object::Audit(None), Forbidden),
            (&viewer, Control, Object::Run(bi.clone()), Hidden),
            // A user's own password, and no one else's.
            (
                &viewer,
                Change,
                Object::Password {
                    bindings: vec!["viewer@ads".parse().unwrap()],
                    own: true,
                },
                Allow,
            ),
            (
                &viewer,
                Change,
                Object::Password {
                    bindings: vec!["viewer@ads".parse().unwrap()],
                    own: false,
                },
                Hidden,
            ),
            (
                &owner,
                Change,
                Object::Password {
                    bindings: vec!["viewer@ads".parse().unwrap()],
                    own: false,
                },
                Allow,
            ),
            // An owner cannot delete (or reset) someone who also holds a role elsewhere.
            (
                &owner,
                Change,
                Object::Principal {
                    bindings: vec!["viewer@ads".parse().unwrap(), "viewer@bi".parse().unwrap()],
                    own: false,
                },
                Forbidden,
            ),
        ];
        for (who, action, object, expected) in cases {
            assert_eq!(
                decide(who, action, &object),
                expected,
                "{:?} {action:?} {object:?}",
                who.bindings
            );
        }
    }

    #[test]
    fn no_escalation_a_token_never_gets_more_than_its_creator_holds() {
        let owner = p(&["owner@ads", "viewer@bi"]);
        let ask = |bindings: &[&str]| {
            let objects: Vec<Object> = bindings
                .iter()
                .map(|b| Object::Binding(b.parse().unwrap()))
                .collect();
            decide_all(&owner, Create, &objects)
        };
        assert_eq!(ask(&["developer@ads", "viewer@ads"]), Allow);
        assert_eq!(ask(&["admin"]), Forbidden);
        assert_eq!(ask(&["operator"]), Forbidden);
        // Viewer of bi may see bi, not hand out its roles.
        assert_eq!(ask(&["viewer@bi"]), Forbidden);
        assert_eq!(ask(&["developer@ads", "viewer@cd"]), Hidden);
        assert_eq!(ask(&["admin", "viewer@cd"]), Hidden);
    }

    fn arb_role() -> impl Strategy<Value = Role> {
        prop::sample::select(Role::ALL.to_vec())
    }

    const TENANTS: [&str; 3] = ["ads", "bi", "cd"];

    fn arb_tenant() -> impl Strategy<Value = Name> {
        prop::sample::select(TENANTS.to_vec()).prop_map(n)
    }

    fn arb_binding() -> impl Strategy<Value = Binding> {
        (arb_role(), arb_tenant()).prop_map(|(role, t)| Binding {
            role,
            tenant: role.is_tenant_role().then_some(t),
        })
    }

    fn arb_principal() -> impl Strategy<Value = Principal> {
        prop::collection::vec(arb_binding(), 0..4).prop_map(|bindings| Principal {
            who: Who::User(n("u")),
            bindings,
        })
    }

    proptest! {
        /// Lists and single reads agree: a list shows exactly what a read of each item allows.
        #[test]
        fn lists_show_exactly_what_reads_allow(p in arb_principal(), t in arb_tenant(),
                                                bindings in prop::collection::vec(arb_binding(), 1..3)) {
            let cases = [
                (Kind::Tenant, Object::Tenant(t.clone())),
                (Kind::Grant, Object::Grant(t.clone())),
                (Kind::Definition, Object::Definition(t.clone())),
                (Kind::Run, Object::Run(t.clone())),
                (Kind::Audit, Object::Audit(Some(t.clone()))),
                (Kind::Infrastructure, Object::Infrastructure { granted_to: vec![t.clone()] }),
            ];
            for (kind, object) in cases {
                prop_assert_eq!(
                    scope(&p, kind).contains(&t),
                    decide(&p, Action::Read, &object) == Decision::Allow,
                    "{:?} {:?}", kind, object
                );
            }
            // Users and tokens: listed when one of their tenant bindings is in scope.
            let listed = scope(&p, Kind::Principal);
            let in_scope = p.is_admin() || bindings.iter()
                .any(|b| b.tenant.as_ref().is_some_and(|t| listed.contains(t)));
            prop_assert_eq!(
                in_scope,
                decide(&p, Action::Read, &Object::Principal { bindings: bindings.clone(), own: false }) == Decision::Allow
            );
        }

        /// Whoever creates a principal never hands it a binding it could not hold itself: a
        /// created principal's every right is one the creator has.
        #[test]
        fn whatever_a_principal_may_hand_out_it_holds(p in arb_principal(), b in arb_binding()) {
            if decide(&p, Action::Create, &Object::Binding(b.clone())) == Decision::Allow {
                let granted = Principal { who: Who::Token(n("new")), bindings: vec![b] };
                for t in TENANTS.map(n) {
                    for object in [Object::Definition(t.clone()), Object::Run(t.clone()), Object::Grant(t.clone())] {
                        for action in [Action::Read, Action::Create, Action::Change, Action::Control] {
                            if decide(&granted, action, &object) == Decision::Allow {
                                prop_assert_eq!(decide(&p, action, &object), Decision::Allow,
                                    "{:?} {:?}", action, object);
                            }
                        }
                    }
                }
            }
        }

        /// Nothing of a tenant is ever shown to a principal with no role in it (unless it spans
        /// every tenant): what is not the principal's is hidden, never merely forbidden.
        #[test]
        fn another_tenants_objects_are_hidden(p in arb_principal(), t in arb_tenant()) {
            let global = p.bindings.iter().any(|b| !b.role.is_tenant_role());
            if !global && !p.tenants().contains(&t) {
                for object in [Object::Tenant(t.clone()), Object::Grant(t.clone()),
                               Object::Definition(t.clone()), Object::Run(t.clone())] {
                    for action in [Action::Read, Action::Change, Action::Control] {
                        prop_assert_eq!(decide(&p, action, &object), Decision::Hidden);
                    }
                }
                prop_assert_eq!(decide(&p, Action::Create, &Object::Definition(t.clone())), Decision::Hidden);
            }
        }
    }
}
