//! The proposer's side of evaluate-once (`carry.rs` has the rule apply follows): before the
//! leader proposes a client's write, it runs the write's guards and write-side policy hooks
//! on the state it has applied, with the time it stamps on the entry, and returns what the
//! entry should carry.
//!
//! Nothing here decides anything: apply does, on every member alike. A verdict evaluated here
//! on a state that apply no longer has is simply not taken; so this side may be wrong,
//! late or partial (a txn with a computed compare, a call that failed, a member fault) at
//! the price of apply running the plugin itself, never at the price of agreement.

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::auth::needs::{self, Need};
use crate::mvcc::{ReadView, Revisions, WriteOp, WriteRequest};
use crate::state_machine::{Command, SharedAuth};
use crate::storage::Storage;

use super::carry::{self, Answer, Carried, ReadSet};
use super::engine::{Engine, HostFault, Outcome, Target, Verdict, View};
use super::hooks;
use super::policy::{self, Subject};
use super::registry::{Binding, BindingCache, Bindings, Kind, Published, Registry};

/// Evaluates the plugins of writes about to be proposed. Cheap to clone.
#[derive(Clone)]
pub struct Vetter {
    auth: SharedAuth,
    /// Apply's engine, so modules compile once per member; the permits leave apply its
    /// instance slot (`engine::POOL_INSTANCES`).
    engine: Engine,
    storage: Storage,
    /// The store's counters as last committed.
    committed: tokio::sync::watch::Receiver<Revisions>,
    /// The guard and policy bindings.
    bindings: BindingCache,
    /// Bounds how many proposals evaluate at once: half the cores (calls run inline on the
    /// runtime's workers), within the engine's instance pool.
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Vetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vetter").finish_non_exhaustive()
    }
}

impl Vetter {
    pub fn new(
        registry: Arc<Mutex<Registry>>,
        published: Arc<Published>,
        auth: SharedAuth,
        engine: Engine,
        storage: Storage,
        committed: tokio::sync::watch::Receiver<Revisions>,
    ) -> Vetter {
        // Half the cores (the runtime's workers), at least one, and at most half the
        // engine's instance slots.
        let permits = std::thread::available_parallelism()
            .map_or(1, |n| n.get() / 2)
            .clamp(1, super::engine::POOL_INSTANCES as usize / 2);
        Vetter {
            auth,
            engine,
            storage,
            committed,
            bindings: BindingCache::new(registry, published, &[Kind::Guard, Kind::Policy]),
            permits: Arc::new(Semaphore::new(permits)),
        }
    }

    /// The verdicts `command` (a client's write, wrapped as the API wraps it) should carry
    /// when proposed with the time `now_ms`. Empty when there is nothing to evaluate.
    pub async fn vet(&self, command: &Command, now_ms: i64) -> Vec<Carried> {
        let (caller, req) = match command {
            Command::Request { caller, command } => match &**command {
                Command::Kv(req) => (Some(caller), req),
                _ => return Vec::new(),
            },
            Command::Kv(req) => (None, req),
            _ => return Vec::new(),
        };
        let (_, bindings) = self.bindings.get();
        if bindings.is_empty() || matches!(req, WriteRequest::Compact(_)) {
            return Vec::new();
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return Vec::new();
        };
        // Inline on this worker: a call is bounded by its fuel and most take microseconds,
        // and the permits keep at least half the workers free. (Handing the worker off with
        // `block_in_place` for each call cost more than the call: a 3-member guarded put
        // benchmark ran at 0.66 of unguarded that way; docs/benchmarks.md.)
        let mut carried = Vec::new();
        match self.evaluate(&bindings, caller, req, now_ms, &mut carried) {
            Ok(()) => {}
            // Not a decision: apply evaluates what is missing, and meets the fault (or not)
            // on its own.
            Err(fault) => tracing::debug!(%fault, "evaluating a write's plugins ahead"),
        }
        for _ in &carried {
            crate::metrics::METRICS.carried("proposed");
        }
        carried
    }

    /// Stops vetting at a module not compiled yet: compiling takes far longer than a call,
    /// and would hold up this write and every one waiting for a permit. (Its install
    /// started compiling it in the background; until then, apply runs the calls.)
    fn compiled(&self, binding: &Binding) -> Result<(), HostFault> {
        if self.engine.ready(&binding.sha256) {
            Ok(())
        } else {
            Err(HostFault(format!(
                "module of {} not compiled yet",
                binding.name
            )))
        }
    }

    /// Runs the policy hooks (for a user's write), then the guards, as apply would on this
    /// member's state, recording each answered call into `carried`.
    fn evaluate(
        &self,
        bindings: &Bindings,
        caller: Option<&crate::auth::Caller>,
        req: &WriteRequest,
        now_ms: i64,
        carried: &mut Vec<Carried>,
    ) -> Result<(), HostFault> {
        let fault = |e: crate::mvcc::Error| HostFault(format!("reading the store: {e}"));
        // The counters as last committed, then a snapshot (as new or newer): no store read
        // for them. Should the snapshot be a commit ahead, what a plugin read there is
        // checked in apply like any read, and apply's revision differs from these.
        let revs = *self.committed.borrow();
        let read = ReadView {
            storage: &self.storage,
            snap: self.storage.db.snapshot(),
            rev: revs.current,
            compact_rev: revs.compact,
            overlay: None,
        };
        let view = View::of(&read);
        let record = |binding: &Binding, input, answer, fuel, reads: Option<ReadSet>| {
            let reads = reads?;
            Some(Carried {
                binding: binding.name.clone(),
                identity: carry::identity(binding),
                input,
                answer,
                fuel,
                revision: reads.revision.then_some(view.rev),
                reads: reads.reads,
            })
        };
        if let Some(caller) = caller {
            let policies = bindings.values().any(|b| b.kind == Kind::Policy);
            let subject = {
                let auth = self.auth.read().expect("auth store lock poisoned");
                (auth.enabled && policies)
                    .then(|| Subject::of(&auth, caller).ok())
                    .flatten()
            };
            if let (Some(subject), Some(mut needs)) = (subject, needs::of_write(req)) {
                let leased = needs::leased_keys(req, |id| read.lease_keys(id)).map_err(fault)?;
                needs.extend(leased.iter().map(|k| Need::write(k, &[])));
                let decided = policy::decide(
                    &subject,
                    bindings,
                    policy::operation_of(req),
                    &needs,
                    &mut |binding, question| {
                        self.compiled(binding)?;
                        let target = Target::of(binding, now_ms).recording();
                        let mut call = self.engine.policy(&target, view.clone(), question)?;
                        if let Outcome::Answered(answer) = &call.outcome {
                            let answer = Answer::Policy(answer.clone());
                            let input = carry::policy_input(question);
                            let reads = call.reads.take();
                            carried.extend(record(binding, input, answer, call.fuel, reads));
                        }
                        Ok(call)
                    },
                )?;
                // Apply asks the guards only of a write the user may make.
                if decided.is_err() {
                    return Ok(());
                }
            }
        }
        let writes: Vec<WriteOp<'_>> = match req {
            WriteRequest::Put(p) => vec![WriteOp::Put(p)],
            WriteRequest::DeleteRange(d) => vec![WriteOp::DeleteRange(d)],
            WriteRequest::Txn(t) if hooks::has_computed(t) => return Ok(()),
            // The path this member's state takes; apply may take another, and then asks
            // its guards other questions, which nothing carried answers.
            WriteRequest::Txn(t) => match crate::mvcc::txn::planned_writes(&read, t) {
                Ok(writes) => writes,
                Err(_) => return Ok(()),
            },
            WriteRequest::Compact(_) => return Ok(()),
        };
        for binding in hooks::guards_met(bindings.values(), &writes) {
            self.compiled(binding)?;
            let target = Target::of(binding, now_ms).recording();
            let ops = hooks::guard_ops(binding, &writes);
            let call = self.engine.guard(&target, view.clone(), &ops)?;
            let Outcome::Answered(verdict) = &call.outcome else {
                break; // apply stops at a failure (or runs on, ignoring it: then it evaluates)
            };
            let denied = matches!(verdict, Verdict::Deny(_));
            let answer = Answer::Guard(verdict.clone());
            let input = carry::guard_input(hooks::writes_in(binding, &writes));
            carried.extend(record(binding, input, answer, call.fuel, call.reads));
            if denied {
                break; // apply stops at the first denial
            }
        }
        Ok(())
    }
}
