//! Guards and write-side policy hooks evaluated once: the verdicts a proposer carries in the
//! log entry, and the rule by which apply accepts them.
//!
//! The member that proposes a write (the leader, after stamping the entry's time) runs the
//! write's guards and policy hooks against the state it has applied, and the entry carries,
//! for each call that answered, a [`Carried`]: the binding's identity, a digest of what the
//! call was asked, the answer, the fuel, and what the call read (each read with a digest of
//! its answer, and the revision if it asked for it). In apply, a hook call takes the carried
//! answer instead of running the plugin when, and only when:
//!
//! 1. the binding of that name is still the one the proposer ran (same module, config,
//!    limits, range, failure policy: [`identity`]);
//! 2. the call is asked exactly what the proposer asked ([`Digest`] of the ops or question);
//! 3. if the call asked for the store's revision, the revision is the same;
//! 4. every read, done again natively on the state the call would see in apply, answers the
//!    same (keys identified by their mod revision, counts by their number).
//!
//! The entry's time is the same by construction (the proposer evaluates with the stamp it
//! puts on the entry). A plugin is a pure function of its config, its input, what it reads
//! and the time, so under these conditions running it again would give the carried answer
//! and fuel. Every input to the rule is replicated state or the entry itself, so every member
//! accepts or re-evaluates alike, and stays identical. Failed calls (traps, fuel, limits)
//! are never carried: apply runs them again, so no member-local failure can become a
//! decision.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::mvcc::{KeyValue, RangeRequest, ReadView, WriteOp};

use super::engine::{Call, HostFault, Outcome, PolicyAnswer, PolicyQuestion, Verdict};
use super::registry::Binding;

/// One hook call evaluated by the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    pub binding: String,
    /// [`identity`] of the binding as the proposer ran it.
    pub identity: [u8; 32],
    /// Digest of the call's input (the guard's ops, the policy question).
    pub input: [u8; 32],
    pub answer: Answer,
    pub fuel: u64,
    /// The revision the call saw, when it asked for it.
    pub revision: Option<i64>,
    pub reads: Vec<Read>,
}

/// A carried answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Guard(Verdict),
    Policy(PolicyAnswer),
}

/// What one call read, recorded when the call runs with [`super::engine::Target::recording`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSet {
    /// Whether the call asked for the store's revision.
    pub revision: bool,
    pub reads: Vec<Read>,
}

/// One read and a digest of its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub op: ReadOp,
    pub answer: [u8; 32],
}

/// A read, as the store imports take it (a range's limit already capped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOp {
    Get(#[serde(with = "serde_bytes")] Vec<u8>),
    Range {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
        limit: u32,
    },
    Count {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
    },
}

impl ReadOp {
    /// The request the store imports run for a range or a count.
    pub fn request(&self) -> Option<RangeRequest> {
        match self {
            ReadOp::Get(_) => None,
            ReadOp::Range {
                key,
                range_end,
                limit,
            } => Some(RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                limit: i64::from(*limit),
                ..Default::default()
            }),
            ReadOp::Count { key, range_end } => Some(RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                count_only: true,
                ..Default::default()
            }),
        }
    }

    /// Does the read again on `read`: the digest of its answer.
    fn replay(&self, read: &ReadView<'_>) -> Result<[u8; 32], HostFault> {
        let fault = |e: crate::mvcc::Error| HostFault(format!("reading the store: {e}"));
        Ok(match self {
            // The key's metadata names its version; its value need not be read.
            ReadOp::Get(key) => {
                answer_of_get(read.meta(key).map_err(fault)?.map(|m| m.mod_revision))
            }
            ReadOp::Range { .. } => {
                let req = self.request().expect("a range has a request");
                answer_of_range(&read.range(&req).map_err(fault)?.kvs)
            }
            ReadOp::Count { .. } => {
                let req = self.request().expect("a count has a request");
                answer_of_count(u64::try_from(read.range(&req).map_err(fault)?.count).unwrap_or(0))
            }
        })
    }
}

/// A key's version is named by its key and mod revision: every put or delete of a key makes
/// a new revision, so equal pairs mean equal value, lease, version and create revision.
pub fn answer_of_get(mod_revision: Option<i64>) -> [u8; 32] {
    let mut d = Digest::new("get");
    d.i64(mod_revision.unwrap_or(0));
    d.finish()
}

pub fn answer_of_range(kvs: &[KeyValue]) -> [u8; 32] {
    let mut d = Digest::new("range");
    for kv in kvs {
        d.bytes(&kv.key);
        d.i64(kv.mod_revision);
    }
    d.finish()
}

pub fn answer_of_count(count: u64) -> [u8; 32] {
    let mut d = Digest::new("count");
    d.u64(count);
    d.finish()
}

/// A sha256 over length-prefixed fields, so different inputs never run together.
pub struct Digest(Sha256);

impl Digest {
    pub fn new(domain: &str) -> Digest {
        let mut d = Digest(Sha256::new());
        d.bytes(domain.as_bytes());
        d
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }

    pub fn u64(&mut self, v: u64) {
        self.0.update(v.to_be_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.0.update(v.to_be_bytes());
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// What a carried call depended on in its binding: everything but the statistics.
pub fn identity(b: &Binding) -> [u8; 32] {
    let mut d = Digest::new("binding");
    d.bytes(b.name.as_bytes());
    d.bytes(b.plugin.as_bytes());
    d.bytes(b.sha256.as_bytes());
    d.bytes(format!("{:?}/{:?}", b.kind, b.failure_policy).as_bytes());
    d.bytes(&b.key);
    d.bytes(&b.range_end);
    d.bytes(&b.config);
    d.u64(b.fuel);
    d.u64(b.memory_bytes);
    d.finish()
}

/// The input of a guard call: the writes it is shown (digested as they are, without making
/// the engine's copy of them).
pub fn guard_input<'w, 'r: 'w>(writes: impl Iterator<Item = &'w WriteOp<'r>>) -> [u8; 32] {
    let mut d = Digest::new("guard");
    for op in writes {
        match op {
            WriteOp::Put(p) => {
                d.bytes(b"put");
                d.bytes(&p.key);
                d.bytes(&p.value);
                d.i64(p.lease);
                d.u64(u64::from(p.ignore_value) | u64::from(p.ignore_lease) << 1);
            }
            WriteOp::DeleteRange(r) => {
                d.bytes(b"delete");
                d.bytes(&r.key);
                d.bytes(&r.range_end);
            }
        }
    }
    d.finish()
}

/// The input of a policy call.
pub fn policy_input(q: &PolicyQuestion) -> [u8; 32] {
    let mut d = Digest::new("policy");
    d.bytes(q.user.as_bytes());
    d.u64(q.roles.len() as u64);
    for role in &q.roles {
        d.bytes(role.as_bytes());
    }
    d.bytes(format!("{:?}", q.operation).as_bytes());
    for a in &q.accesses {
        d.u64(u64::from(a.write) | u64::from(a.allowed_by_roles) << 1);
        d.bytes(&a.key);
        d.bytes(&a.range_end);
        match &a.value {
            Some(v) => {
                d.u64(1);
                d.bytes(v);
            }
            None => d.u64(0),
        }
        d.i64(a.lease);
    }
    d.finish()
}

/// The carried answer for a call of `binding`, as the call the caller would otherwise make,
/// if the entry carries one for the same question (`input` digests it, computed only when
/// the entry carries anything) and it still holds on `view` (the rule in the module docs):
/// the answer `pick` takes (a guard's verdict, a policy's answer) and the carried fuel. `None`:
/// the caller runs the plugin.
pub fn accept<T>(
    carried: &[Carried],
    binding: &Binding,
    input: impl FnOnce() -> [u8; 32],
    view: &ReadView<'_>,
    pick: impl FnOnce(&Answer) -> Option<T>,
) -> Result<Option<Call<T>>, HostFault> {
    let input = if carried.is_empty() {
        None
    } else {
        Some(input())
    };
    let Some(c) = carried
        .iter()
        .find(|c| c.binding == binding.name && Some(c.input) == input)
    else {
        crate::metrics::METRICS.carried("evaluated");
        return Ok(None);
    };
    let holds = c.identity == identity(binding)
        && c.revision.is_none_or(|rev| rev == view.rev)
        && replays(&c.reads, view)?;
    crate::metrics::METRICS.carried(if holds { "accepted" } else { "stale" });
    Ok(holds.then(|| pick(&c.answer)).flatten().map(|answer| Call {
        outcome: Outcome::Answered(answer),
        fuel: c.fuel,
        consulted: false,
        reads: None,
    }))
}

fn replays(reads: &[Read], view: &ReadView<'_>) -> Result<bool, HostFault> {
    for read in reads {
        if read.op.replay(view)? != read.answer {
            return Ok(false);
        }
    }
    Ok(true)
}
