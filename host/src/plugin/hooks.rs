//! The store's [`WriteHooks`] on top of the registry and the engine: which bindings a write
//! meets, calling them in a fixed order, and turning their outcomes into etcd-style errors
//! per failure policy. Runs in apply.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::mvcc::{
    ComputeResult, ComputedValue, Error, Fault, KeyRange, MvccError, ReadView, RequestOp,
    TxnRequest, WriteHooks, WriteOp,
};

use super::carry::{self, Carried};
use super::engine::{Call, Computed, Engine, GuardOp, HostFault, Outcome, Target, Verdict, View};
use super::registry::{Binding, FailurePolicy, Kind, Registry};

/// Hooks for one batch of requests.
pub struct Hooks<'a> {
    pub registry: &'a mut Registry,
    pub engine: &'a Engine,
    /// The time stamped on the entry being applied, for the clock import.
    pub now_ms: i64,
    /// Bindings whose statistics changed: the caller writes them back (once per batch).
    pub touched: BTreeSet<String>,
    /// The verdicts the entry carries (see `plugin/carry.rs`).
    pub carried: &'a [Carried],
}

impl<'a> Hooks<'a> {
    pub fn new(registry: &'a mut Registry, engine: &'a Engine, now_ms: i64) -> Self {
        Hooks {
            registry,
            engine,
            now_ms,
            touched: BTreeSet::new(),
            carried: &[],
        }
    }

    /// The same hooks, taking the verdicts the entry carries where they still hold.
    pub fn carrying(self, carried: &'a [Carried]) -> Self {
        Hooks { carried, ..self }
    }

    /// A failure of this member, not a decision of the plugin's: apply must stop.
    fn host_fault(binding: &str, fault: HostFault) -> Error {
        Fault::PluginHost {
            binding: binding.to_string(),
            reason: fault.to_string(),
        }
        .into()
    }
}

/// Whether `op` writes a key in the binding's range.
fn meets(b: &Binding, op: &WriteOp<'_>) -> bool {
    let written = match op {
        WriteOp::Put(p) => (p.key.as_slice(), &[][..]),
        WriteOp::DeleteRange(d) => (d.key.as_slice(), d.range_end.as_slice()),
    };
    KeyRange::pairs_overlap((&b.key, &b.range_end), written)
}

/// Whether a txn (or one nested in it) has a computed compare.
pub fn has_computed(t: &TxnRequest) -> bool {
    t.compare
        .iter()
        .any(|c| c.target == crate::mvcc::CompareTarget::Computed)
        || t.success.iter().chain(&t.failure).any(|op| match op {
            RequestOp::Txn(nested) => has_computed(nested),
            _ => false,
        })
}

/// The guard bindings `writes` meet, in name order. Apply and the proposer
/// (`plugin/vet.rs`) both ask this, so they make the same calls.
pub fn guards_met<'b>(
    bindings: impl Iterator<Item = &'b Binding>,
    writes: &[WriteOp<'_>],
) -> Vec<&'b Binding> {
    bindings
        .filter(|b| b.kind == Kind::Guard && writes.iter().any(|w| meets(b, w)))
        .collect()
}

/// The writes guard `b` is shown: those in its range, in request order.
pub fn writes_in<'w, 'r>(
    b: &Binding,
    writes: &'w [WriteOp<'r>],
) -> impl Iterator<Item = &'w WriteOp<'r>> {
    writes.iter().filter(move |w| meets(b, w))
}

/// The ops guard `b` is shown, as the engine takes them.
pub fn guard_ops(b: &Binding, writes: &[WriteOp<'_>]) -> Vec<GuardOp> {
    writes_in(b, writes)
        .map(|w| match w {
            WriteOp::Put(p) => GuardOp::Put {
                key: p.key.clone(),
                value: p.value.clone(),
                lease: p.lease,
                ignore_value: p.ignore_value,
                ignore_lease: p.ignore_lease,
            },
            WriteOp::DeleteRange(d) => GuardOp::DeleteRange {
                key: d.key.clone(),
                range_end: d.range_end.clone(),
            },
        })
        .collect()
}

impl WriteHooks for Hooks<'_> {
    fn guard(&mut self, view: &ReadView<'_>, writes: &[WriteOp<'_>]) -> Result<(), Error> {
        // Most writes meet no guard, and then nothing is made. Only the names are copied (the
        // registry is changed below, to record each call); a view for the plugin is made
        // only when one runs.
        let names: Vec<String> = guards_met(self.registry.bindings.values(), writes)
            .into_iter()
            .map(|b| b.name.clone())
            .collect();
        let mut seen = None;
        for name in names {
            let Some(b) = self.registry.bindings.get(&name) else {
                continue;
            };
            let ignore_failure = b.failure_policy == FailurePolicy::Ignore;
            let input = || carry::guard_input(writes_in(b, writes));
            let carried = carry::accept(self.carried, b, input, view, |a| match a {
                carry::Answer::Guard(verdict) => Some(verdict.clone()),
                carry::Answer::Policy(_) => None,
            });
            let call = match carried {
                Ok(Some(call)) => Ok(call),
                Ok(None) => {
                    let view = seen.get_or_insert_with(|| View::of(view)).clone();
                    let ops = guard_ops(b, writes);
                    self.engine.guard(&Target::of(b, self.now_ms), view, &ops)
                }
                Err(fault) => Err(fault),
            };
            let Call { outcome, fuel, .. } = match call {
                Ok(call) => call,
                Err(fault) => return Err(Self::host_fault(&name, fault)),
            };
            let (words, denied, failed) = match &outcome {
                Outcome::Answered(Verdict::Allow) => (Cow::Borrowed("allow"), false, false),
                Outcome::Answered(Verdict::Deny(r)) => (format!("deny: {r}").into(), true, false),
                Outcome::Failed(r) => (format!("fail: {r}").into(), false, true),
            };
            if let Some(b) = self.registry.bindings.get_mut(&name) {
                b.stats.record(&words, fuel, denied, failed);
            }
            self.touched.insert(name.clone());
            match outcome {
                Outcome::Answered(Verdict::Allow) => {}
                Outcome::Answered(Verdict::Deny(reason)) => {
                    return Err(MvccError::GuardDenied {
                        binding: name,
                        reason,
                    }
                    .into());
                }
                Outcome::Failed(_) if ignore_failure => {}
                Outcome::Failed(reason) => {
                    return Err(MvccError::PluginFailed {
                        binding: name,
                        reason,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    fn compute(&mut self, view: &ReadView<'_>, computed: &crate::mvcc::Computed) -> ComputeResult {
        let Some(b) = self
            .registry
            .bindings
            .get(&computed.binding)
            .filter(|b| b.kind == Kind::Compare)
            .cloned()
        else {
            return Err(MvccError::NoSuchCompare {
                binding: computed.binding.clone(),
            }
            .into());
        };
        let call = self.engine.compare(
            &Target::of(&b, self.now_ms),
            View::of(view),
            &computed.argument,
        );
        let Call { outcome, fuel, .. } = match call {
            Ok(call) => call,
            Err(fault) => return Err(Self::host_fault(&b.name, fault)),
        };
        let words = match &outcome {
            Outcome::Answered(Computed::Int(i)) => format!("int: {i}"),
            Outcome::Answered(Computed::Bytes(v)) => format!("bytes: {v:?}"),
            Outcome::Answered(Computed::Error(e)) => format!("error: {e}"),
            Outcome::Failed(r) => format!("fail: {r}"),
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        if let Some(stats) = self
            .registry
            .bindings
            .get_mut(&b.name)
            .map(|b| &mut b.stats)
        {
            stats.record(&words, fuel, false, failed);
        }
        self.touched.insert(b.name.clone());
        match outcome {
            Outcome::Answered(Computed::Int(i)) => Ok(Some(ComputedValue::Int(i))),
            Outcome::Answered(Computed::Bytes(v)) => Ok(Some(ComputedValue::Bytes(v))),
            Outcome::Answered(Computed::Error(_)) => Ok(None),
            Outcome::Failed(_) if b.failure_policy == FailurePolicy::Ignore => Ok(None),
            Outcome::Failed(reason) => Err(MvccError::PluginFailed {
                binding: b.name,
                reason,
            }
            .into()),
        }
    }
}
