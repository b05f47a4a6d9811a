//! RBAC policy hooks: plugins that refine, for the requests touching their key range, what a
//! user's roles decide.
//!
//! A request's accesses are etcd's permission needs (`auth/needs.rs`), a put's value and
//! lease included. Every policy binding whose range overlaps one of them is asked, in binding
//! name order, about the accesses it overlaps, and answers:
//!
//! - **deny** (with a reason): the request is refused with etcd's `permission denied`; the
//!   binding and the reason travel in the response metadata and the member's log. The first
//!   denial wins, so later bindings are not asked.
//! - **allow**: the accesses it was shown that lie wholly inside its range are granted,
//!   whatever the roles say. (An access that reaches past the range is left to the roles and
//!   to the other bindings: a binding cannot grant what it does not own.)
//! - **defer**: the roles decide.
//!
//! The request goes ahead when every access is granted by a binding or allowed by the roles.
//! A failing hook (trap, fuel, bad answer) follows its binding's failure policy: fail-closed
//! refuses the request, ignore counts as defer.
//!
//! Never asked: about root's requests (root holds every permission and a policy must never
//! lock the operator out), while authentication is off (there is no user to decide about),
//! about the auth and plugin admin RPCs (they need root), and about a caller whose token or
//! user is not valid (that error comes first, as in etcd).
//!
//! Where they run: writes in apply (`state_machine.rs`), deterministic like guards, with the
//! entry's stamped time and the store before the write, so every member decides the same;
//! reads and watch creation on the serving member (`api/mod.rs`), against the same replicated
//! bindings and the store at the read point. A read-side answer is memoized per (auth
//! revision, registry generation, question) when the hook read neither the store nor the
//! clock: such an answer depends on nothing else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::auth::needs::Need;
use crate::auth::perms::{Access, UserPermissions, range_within};
use crate::auth::{AuthError, AuthStore, Caller};
use crate::metrics::lock;
use crate::mvcc::KeyRange;

use super::engine::{
    Call, Engine, HostFault, Outcome, PolicyAccess, PolicyAnswer, PolicyOperation, PolicyQuestion,
    Target, View,
};
use super::registry::{Binding, BindingCache, Bindings, FailurePolicy, Kind, Published, Registry};
use crate::mvcc::Mvcc;
use crate::storage::Storage;

/// Runs one binding's hook on a question.
pub type Run<'r> =
    dyn FnMut(&Binding, &PolicyQuestion) -> Result<Call<PolicyAnswer>, HostFault> + 'r;

/// Who a request is decided for: the caller's merged permissions, name and roles, taken from
/// the auth store at one moment (so the store's lock need not be held while hooks run).
#[derive(Clone, Debug)]
pub struct Subject {
    perms: UserPermissions,
    user: String,
    roles: Vec<String>,
}

impl Subject {
    /// The caller as a subject, or the caller's own error (no user, an old token, an unknown
    /// user), which comes before any hook is asked, as in etcd.
    pub fn of(auth: &AuthStore, caller: &Caller) -> Result<Subject, AuthError> {
        let perms = auth.permissions(caller)?;
        let user = caller.user().unwrap_or_default().to_string();
        let roles = auth
            .users
            .get(&user)
            .map(|u| u.roles.clone())
            .unwrap_or_default();
        Ok(Subject { perms, user, roles })
    }

    /// Root, or anyone while authentication is off: never subject to hooks.
    pub fn is_root(&self) -> bool {
        self.perms.is_root()
    }

    /// The roles' decision alone.
    pub fn check_roles<'a>(
        &self,
        needs: impl IntoIterator<Item = Need<'a>>,
    ) -> Result<(), AuthError> {
        self.perms.check(needs)
    }
}

/// The operation a policy hook is told a write is.
pub fn operation_of(req: &crate::mvcc::WriteRequest) -> PolicyOperation {
    match req {
        crate::mvcc::WriteRequest::Put(_) => PolicyOperation::Put,
        crate::mvcc::WriteRequest::DeleteRange(_) => PolicyOperation::DeleteRange,
        _ => PolicyOperation::Txn,
    }
}

/// Whether `subject` may make a request with these `needs`, by its roles and the policy
/// `bindings` (any kind; only policies are used). `Err` only for a fault of this member.
pub fn decide(
    subject: &Subject,
    bindings: &BTreeMap<String, Binding>,
    operation: PolicyOperation,
    needs: &[Need<'_>],
    run: &mut Run<'_>,
) -> Result<Result<(), AuthError>, HostFault> {
    let Subject { perms, user, roles } = subject;
    if perms.is_root() {
        return Ok(Ok(()));
    }
    let mut policies = bindings
        .values()
        .filter(|b| b.kind == Kind::Policy)
        .peekable();
    if policies.peek().is_none() {
        return Ok(perms.check(needs.iter().copied()));
    }
    let allowed: Vec<bool> = needs
        .iter()
        .map(|n| perms.allows(n.access, n.key, n.range_end))
        .collect();
    let mut granted = vec![false; needs.len()];
    for b in policies {
        let shown: Vec<usize> = (0..needs.len())
            .filter(|&i| {
                KeyRange::pairs_overlap((&b.key, &b.range_end), (needs[i].key, needs[i].range_end))
            })
            .collect();
        if shown.is_empty() {
            continue;
        }
        let question = PolicyQuestion {
            user: user.to_string(),
            roles: roles.clone(),
            operation,
            accesses: shown
                .iter()
                .map(|&i| {
                    let n = &needs[i];
                    PolicyAccess {
                        write: n.access == Access::Write,
                        key: n.key.to_vec(),
                        range_end: n.range_end.to_vec(),
                        value: n.value.map(<[u8]>::to_vec),
                        lease: n.lease,
                        allowed_by_roles: allowed[i],
                    }
                })
                .collect(),
        };
        let call = run(b, &question)?;
        let denied = |reason: String| {
            Ok(Err(AuthError::PolicyDenied {
                binding: b.name.clone(),
                reason,
            }))
        };
        match call.outcome {
            Outcome::Answered(PolicyAnswer::Allow) => {
                for &i in &shown {
                    let n = &needs[i];
                    if range_within((n.key, n.range_end), (&b.key, &b.range_end)) {
                        granted[i] = true;
                    }
                }
            }
            Outcome::Answered(PolicyAnswer::Defer) => {}
            Outcome::Answered(PolicyAnswer::Deny(reason)) => return denied(reason),
            Outcome::Failed(_) if b.failure_policy == FailurePolicy::Ignore => {}
            Outcome::Failed(reason) => return denied(format!("the policy failed: {reason}")),
        }
    }
    if granted.iter().zip(&allowed).all(|(g, a)| *g || *a) {
        Ok(Ok(()))
    } else {
        Ok(Err(AuthError::PermissionDenied))
    }
}

/// A call's decision in words, for the binding's statistics (as guards record theirs).
pub fn words(call: &Call<PolicyAnswer>) -> (String, bool, bool) {
    match &call.outcome {
        Outcome::Answered(PolicyAnswer::Allow) => ("allow".into(), false, false),
        Outcome::Answered(PolicyAnswer::Defer) => ("defer".into(), false, false),
        Outcome::Answered(PolicyAnswer::Deny(r)) => (format!("deny: {r}"), true, false),
        Outcome::Failed(r) => (format!("fail: {r}"), false, true),
    }
}

/// The read side: decides reads and watch creation on the serving member, against the
/// registry and the auth store this member applied, memoizing what it can.
#[derive(Clone, Debug)]
pub struct Reads {
    /// The policy bindings.
    policies: BindingCache,
    engine: Engine,
    storage: Storage,
    memo: Memo,
}

/// The policy bindings at one moment, taken before the auth store is locked (apply locks
/// the registry, then the auth store: a reader must never hold them the other way round).
#[derive(Debug, Default)]
pub struct Snapshot {
    bindings: Arc<Bindings>,
    generation: u64,
}

impl Snapshot {
    /// Whether there is no policy binding (then the roles alone decide).
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}

impl Reads {
    pub fn new(
        registry: Arc<Mutex<Registry>>,
        published: Arc<Published>,
        engine: Engine,
        storage: Storage,
    ) -> Reads {
        Reads {
            policies: BindingCache::new(registry, published, &[Kind::Policy]),
            engine,
            storage,
            memo: Memo::default(),
        }
    }

    /// The policy bindings now. Cheap when there are none.
    pub fn snapshot(&self) -> Snapshot {
        let (generation, bindings) = self.policies.get();
        Snapshot {
            bindings,
            generation,
        }
    }

    /// [`decide`] for a read or a watch, on the store as this member has it now and with this
    /// member's clock.
    pub fn decide(
        &self,
        policies: &Snapshot,
        subject: &Subject,
        auth_revision: u64,
        operation: PolicyOperation,
        needs: &[Need<'_>],
    ) -> Result<Result<(), AuthError>, HostFault> {
        let now_ms = crate::wall_clock_ms();
        let mut view: Option<View> = None;
        let decided = decide(
            subject,
            &policies.bindings,
            operation,
            needs,
            &mut |binding, question| {
                self.memo.answer(
                    auth_revision,
                    policies.generation,
                    binding,
                    question,
                    || {
                        let view = match &view {
                            Some(view) => view.clone(),
                            None => {
                                let read = Mvcc::read_view(&self.storage)
                                    .map_err(|e| HostFault(format!("reading the store: {e}")))?;
                                view.insert(View::of(&read)).clone()
                            }
                        };
                        self.engine
                            .policy(&Target::of(binding, now_ms), view, question)
                    },
                )
            },
        )?;
        if let Err(AuthError::PolicyDenied { binding, reason }) = &decided {
            tracing::info!(%binding, user = %subject.user, %reason, ?operation, "a policy hook denied a read");
        }
        Ok(decided)
    }

    /// The memo (for tests).
    pub fn memo(&self) -> &Memo {
        &self.memo
    }
}

/// The largest number of memoized read-side answers a member keeps; past it the memo starts
/// over (answers are cheap to compute again, and the memo must not grow with clients).
const MEMO_CAPACITY: usize = 4096;

/// The largest question whose answer is memoized (keys and values it carries): the memo
/// holds at most `MEMO_CAPACITY` of them, so its memory stays bounded whatever clients send.
const MEMO_QUESTION_BYTES: usize = 1024;

fn question_bytes(q: &PolicyQuestion) -> usize {
    q.user.len()
        + q.roles.iter().map(String::len).sum::<usize>()
        + q.accesses
            .iter()
            .map(|a| a.key.len() + a.range_end.len() + a.value.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

/// Memoized read-side answers, per (auth revision, registry generation, binding, question).
#[derive(Clone, Debug, Default)]
pub struct Memo {
    answers: Arc<Mutex<MemoMap>>,
}

type MemoKey = (u64, u64, String, PolicyQuestion);
type MemoMap = BTreeMap<MemoKey, Call<PolicyAnswer>>;

impl Memo {
    /// The answer for `question`, computed by `run` unless an equal question was answered
    /// at the same auth revision and registry generation without reading the store or clock.
    pub fn answer(
        &self,
        auth_revision: u64,
        generation: u64,
        binding: &Binding,
        question: &PolicyQuestion,
        run: impl FnOnce() -> Result<Call<PolicyAnswer>, HostFault>,
    ) -> Result<Call<PolicyAnswer>, HostFault> {
        let key = (
            auth_revision,
            generation,
            binding.name.clone(),
            question.clone(),
        );
        if let Some(call) = lock(&self.answers).get(&key) {
            return Ok(call.clone());
        }
        let call = run()?;
        if !call.consulted && question_bytes(question) <= MEMO_QUESTION_BYTES {
            let mut answers = lock(&self.answers);
            if answers.len() >= MEMO_CAPACITY {
                answers.clear();
            }
            answers.insert(key, call.clone());
        }
        Ok(call)
    }

    /// How many answers are memoized (for tests).
    pub fn len(&self) -> usize {
        lock(&self.answers).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "policy_test.rs"]
mod tests;
