//! How policy answers combine with the roles: the rules of `policy.rs`, checked with scripted
//! answers instead of plugins (the plugins themselves are tested end to end in
//! `tests/tests/plugins.rs`).

use std::collections::BTreeMap;

use super::*;
use crate::auth::{PermKind, Permission, Role, User};
use crate::plugin::BindingStats;

/// A store with authentication on, root, and user `u` holding role `r`, which may read and
/// write `/own/` and read `/shared/`.
fn store() -> AuthStore {
    let mut auth = AuthStore {
        enabled: true,
        ..AuthStore::default()
    };
    let user = |name: &str, roles: &[&str]| User {
        name: name.into(),
        password_hash: String::new(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        no_password: false,
        revision: 1,
    };
    auth.users.insert("root".into(), user("root", &["root"]));
    auth.users.insert("u".into(), user("u", &["r"]));
    auth.roles.insert(
        "root".into(),
        Role {
            name: "root".into(),
            permissions: Vec::new(),
        },
    );
    auth.roles.insert(
        "r".into(),
        Role {
            name: "r".into(),
            permissions: vec![
                Permission {
                    kind: PermKind::ReadWrite,
                    key: b"/own/".to_vec(),
                    range_end: b"/own0".to_vec(),
                },
                Permission {
                    kind: PermKind::Read,
                    key: b"/shared/".to_vec(),
                    range_end: b"/shared0".to_vec(),
                },
            ],
        },
    );
    auth
}

fn caller(user: &str) -> Caller {
    Caller::Certificate { user: user.into() }
}

fn policy(name: &str, key: &str, range_end: &str, failure_policy: FailurePolicy) -> Binding {
    Binding {
        name: name.into(),
        plugin: "p".into(),
        kind: Kind::Policy,
        key: key.as_bytes().to_vec(),
        range_end: range_end.as_bytes().to_vec(),
        config: Vec::new(),
        fuel: 1,
        memory_bytes: 1,
        failure_policy,
        sha256: String::new(),
        stats: BindingStats::default(),
    }
}

fn bindings(list: Vec<Binding>) -> BTreeMap<String, Binding> {
    list.into_iter().map(|b| (b.name.clone(), b)).collect()
}

fn answered(answer: PolicyAnswer) -> Call<PolicyAnswer> {
    Call {
        outcome: Outcome::Answered(answer),
        fuel: 1,
        consulted: false,
        reads: None,
    }
}

/// Decides with each binding answering as `answers` says; returns the decision and the
/// questions asked, as (binding, question).
fn run(
    bindings: &BTreeMap<String, Binding>,
    user: &str,
    needs: &[Need<'_>],
    answers: &[(&str, Call<PolicyAnswer>)],
) -> (Result<(), AuthError>, Vec<(String, PolicyQuestion)>) {
    let mut asked = Vec::new();
    let subject = match Subject::of(&store(), &caller(user)) {
        Ok(subject) => subject,
        Err(e) => return (Err(e), asked),
    };
    let decided = decide(
        &subject,
        bindings,
        PolicyOperation::Txn,
        needs,
        &mut |b, q| {
            asked.push((b.name.clone(), q.clone()));
            Ok(answers
                .iter()
                .find(|(name, _)| *name == b.name)
                .map(|(_, call)| call.clone())
                .expect("an answer for every binding asked"))
        },
    )
    .expect("no host fault");
    (decided, asked)
}

#[test]
fn roles_alone_decide_without_policy_bindings() {
    let none = BTreeMap::new();
    let put = [Need::write(b"/own/a", b"")];
    assert_eq!(run(&none, "u", &put, &[]).0, Ok(()));
    let other = [Need::write(b"/other", b"")];
    assert_eq!(
        run(&none, "u", &other, &[]).0,
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn allow_grants_what_the_roles_refuse_inside_the_bound_range_only() {
    let b = bindings(vec![policy(
        "t",
        "/tenants/",
        "/tenants0",
        FailurePolicy::FailClosed,
    )]);
    let allow = [("t", answered(PolicyAnswer::Allow))];
    let inside = [Need::write(b"/tenants/u/x", b"")];
    assert_eq!(run(&b, "u", &inside, &allow).0, Ok(()));
    // A range that reaches past the binding: the allow does not cover it.
    let wider = [Need::read(b"/tenants/", b"\0")];
    assert_eq!(
        run(&b, "u", &wider, &allow).0,
        Err(AuthError::PermissionDenied)
    );
    // An access outside every binding is left to the roles.
    let mixed = [
        Need::write(b"/tenants/u/x", b""),
        Need::write(b"/other", b""),
    ];
    let (decided, asked) = run(&b, "u", &mixed, &allow);
    assert_eq!(decided, Err(AuthError::PermissionDenied));
    assert_eq!(asked[0].1.accesses.len(), 1, "shown only what overlaps");
}

#[test]
fn defer_leaves_the_roles_decision() {
    let b = bindings(vec![policy("p", "/", "\0", FailurePolicy::FailClosed)]);
    let defer = [("p", answered(PolicyAnswer::Defer))];
    assert_eq!(
        run(&b, "u", &[Need::write(b"/own/a", b"")], &defer).0,
        Ok(())
    );
    assert_eq!(
        run(&b, "u", &[Need::write(b"/shared/a", b"")], &defer).0,
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn the_first_denial_in_name_order_wins() {
    let b = bindings(vec![
        policy("a", "/", "\0", FailurePolicy::FailClosed),
        policy("b", "/", "\0", FailurePolicy::FailClosed),
        policy("c", "/", "\0", FailurePolicy::FailClosed),
    ]);
    let answers = [
        ("a", answered(PolicyAnswer::Allow)),
        ("b", answered(PolicyAnswer::Deny("frozen".into()))),
        ("c", answered(PolicyAnswer::Deny("never asked".into()))),
    ];
    let (decided, asked) = run(&b, "u", &[Need::write(b"/own/a", b"")], &answers);
    assert_eq!(
        decided,
        Err(AuthError::PolicyDenied {
            binding: "b".into(),
            reason: "frozen".into()
        })
    );
    assert_eq!(asked.len(), 2);
}

#[test]
fn failures_follow_the_failure_policy() {
    let failed = Call {
        outcome: Outcome::Failed("out of fuel".into()),
        fuel: 1,
        consulted: false,
        reads: None,
    };
    let closed = bindings(vec![policy("p", "/", "\0", FailurePolicy::FailClosed)]);
    let (decided, _) = run(
        &closed,
        "u",
        &[Need::write(b"/own/a", b"")],
        &[("p", failed.clone())],
    );
    assert_eq!(
        decided,
        Err(AuthError::PolicyDenied {
            binding: "p".into(),
            reason: "the policy failed: out of fuel".into()
        })
    );
    // Ignore is defer: the roles still decide.
    let open = bindings(vec![policy("p", "/", "\0", FailurePolicy::Ignore)]);
    let own = [Need::write(b"/own/a", b"")];
    assert_eq!(run(&open, "u", &own, &[("p", failed.clone())]).0, Ok(()));
    let other = [Need::write(b"/other", b"")];
    assert_eq!(
        run(&open, "u", &other, &[("p", failed)]).0,
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn root_and_invalid_callers_are_never_asked() {
    let b = bindings(vec![policy("p", "/", "\0", FailurePolicy::FailClosed)]);
    let deny = [("p", answered(PolicyAnswer::Deny("no".into())))];
    let (decided, asked) = run(&b, "root", &[Need::write(b"/x", b"")], &deny);
    assert_eq!((decided, asked.len()), (Ok(()), 0));
    let (decided, asked) = run(&b, "nobody", &[Need::write(b"/x", b"")], &deny);
    assert_eq!(
        (decided, asked.len()),
        (Err(AuthError::PermissionDenied), 0)
    );
}

#[test]
fn questions_carry_user_roles_values_leases_and_the_roles_verdict() {
    let b = bindings(vec![policy("p", "/", "\0", FailurePolicy::FailClosed)]);
    let put = crate::mvcc::PutRequest {
        key: b"/own/a".to_vec(),
        value: b"v".to_vec(),
        lease: 7,
        ..Default::default()
    };
    let req = crate::mvcc::WriteRequest::Put(put);
    let needs = crate::auth::needs::of_write(&req).expect("a put has needs");
    let (_, asked) = run(&b, "u", &needs, &[("p", answered(PolicyAnswer::Defer))]);
    let q = &asked[0].1;
    assert_eq!(
        (q.user.as_str(), q.roles.clone()),
        ("u", vec!["r".to_string()])
    );
    assert_eq!(
        q.accesses,
        [PolicyAccess {
            write: true,
            key: b"/own/a".to_vec(),
            range_end: Vec::new(),
            value: Some(b"v".to_vec()),
            lease: 7,
            allowed_by_roles: true,
        }]
    );
}

#[test]
fn the_memo_keeps_only_answers_that_read_nothing() {
    let memo = Memo::default();
    let b = policy("p", "/", "\0", FailurePolicy::FailClosed);
    let q = PolicyQuestion {
        user: "u".into(),
        roles: Vec::new(),
        operation: PolicyOperation::Range,
        accesses: Vec::new(),
    };
    let mut runs = 0;
    for _ in 0..3 {
        memo.answer(1, 1, &b, &q, || {
            runs += 1;
            Ok(answered(PolicyAnswer::Allow))
        })
        .expect("answer");
    }
    assert_eq!(runs, 1);
    // A new auth revision or registry generation asks again.
    memo.answer(2, 1, &b, &q, || {
        runs += 1;
        Ok(answered(PolicyAnswer::Allow))
    })
    .expect("answer");
    assert_eq!(runs, 2);
    // An answer that read the store or the clock is never kept.
    let q2 = PolicyQuestion {
        user: "v".into(),
        ..q
    };
    for _ in 0..2 {
        memo.answer(1, 1, &b, &q2, || {
            runs += 1;
            Ok(Call {
                consulted: true,
                ..answered(PolicyAnswer::Allow)
            })
        })
        .expect("answer");
    }
    assert_eq!(runs, 4);
    assert_eq!(memo.len(), 2);
}
