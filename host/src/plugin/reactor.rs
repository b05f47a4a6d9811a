//! Reactors: plugins that turn the committed events of their key range into new writes.
//!
//! They run on the leader only. For each reactor the leader reads, from history, the events
//! after the reactor's cursor (replicated state, `registry::ReactorState`), takes the next
//! revisions that should trigger it (up to [`STEP_REVISIONS`] in a row), runs the plugin on
//! each revision's events in order, and proposes the writes they return as one
//! [`PluginCommand::ReactorStep`] with the cursor it started from and the last revision it
//! covers. Apply takes the step only if the cursor is still there and moves it in the same
//! entry as the writes, so every source revision is reacted to exactly once: a leader that
//! crashes before its step commits leaves the cursor for the next leader to redo the step; a
//! step proposed twice (by an old and a new leader) applies once.
//!
//! Loop protection: the revisions reactor steps wrote are recorded, with their depth, with
//! every reactor whose range they touch. A reactor's own writes do not trigger it unless it
//! was bound with `retrigger`; no reactor write triggers a reactor past its `max_depth`, so
//! chains through several reactors end too.
//!
//! Failures (a trap, fuel, output over the limits, writes a guard refuses) are proposed as
//! [`PluginCommand::ReactorFailed`], so they are counted alike on every member, and after
//! `REACTOR_FAILURES_TO_PAUSE` in a row the reactor is paused until it is bound again. The
//! leader retries with exponential backoff meanwhile. A reactor whose cursor history no
//! longer holds (compacted past it) fails the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Engine;
use super::engine::{Outcome, Target, View, reactor_bytes, reactor_written};
use super::registry::{Binding, Kind, PluginCommand, PluginError, ReactorState, Registry};
use crate::metrics::lock;
use crate::mvcc::{Event, KeyRange, Mvcc, RequestOp};
use crate::state_machine::Command;

/// How often an idle leader looks at its reactors without a commit to wake it.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Bytes of events read per look at one reactor (whole revisions).
const READ_BYTES: usize = 1 << 20;
/// A reactor whose range saw no events is moved this many revisions at a time, so a
/// new leader's first scan is bounded.
const SKIP_AHEAD: i64 = 1000;
/// A quiet reactor's cursor is also moved when it has not moved for this long, so that a
/// compaction (which usually keeps minutes of history) never passes it.
const QUIET_MOVE: Duration = Duration::from_secs(10);
/// Most source revisions one step reacts to: a reactor falls behind a busy range by at most
/// one step's commit, not one per revision.
const STEP_REVISIONS: usize = 64;
/// Backoff after a failure: doubled each time, up to the cap.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// What reactors need of their member: its registry and deterministic engine.
#[derive(Clone, Debug)]
pub struct Reactors {
    registry: Arc<Mutex<Registry>>,
    engine: Engine,
}

impl Reactors {
    pub fn new(registry: Arc<Mutex<Registry>>, engine: Engine) -> Reactors {
        Reactors { registry, engine }
    }

    /// The reactors to run now: bound, not paused.
    fn active(&self) -> Vec<(Binding, ReactorState)> {
        let registry = lock(&self.registry);
        registry
            .bindings
            .values()
            .filter(|b| b.kind == Kind::Reactor)
            .filter_map(|b| {
                let state = registry.reactors.get(&b.name)?;
                (!state.paused).then(|| (b.clone(), state.clone()))
            })
            .collect()
    }
}

/// Per reactor, what this member knows without asking the log.
#[derive(Default)]
struct Local {
    /// The cursor a scan started from and how far it found nothing to do.
    scanned: Option<(i64, i64)>,
    /// No retry before this (after a failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    /// When this member last saw the cursor move (or first saw the reactor).
    moved: Option<(i64, Instant)>,
}

/// Runs the reactors while this member leads, until it stops.
pub async fn run(ctx: crate::api::Context, reactors: Reactors) {
    let mut commits = ctx.raft.subscribe();
    let mut stopping = ctx.stopping.clone();
    let mut local: BTreeMap<String, Local> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(IDLE_CHECK) => {}
            res = stopping.changed() => if res.is_err() || *stopping.borrow() { return },
        }
        if !ctx.raft.status().is_leader {
            local.clear();
            continue;
        }
        let active = reactors.active();
        local.retain(|name, _| active.iter().any(|(b, _)| b.name == *name));
        for (binding, state) in active {
            let mine = local.entry(binding.name.clone()).or_default();
            if mine.retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            match step(&ctx, &reactors, &binding, &state, mine).await {
                Ok(()) => {
                    mine.retry_at = None;
                    mine.backoff = Duration::ZERO;
                }
                Err(why) => {
                    mine.backoff = (mine.backoff * 2).clamp(BACKOFF_START, BACKOFF_CAP);
                    mine.retry_at = Some(Instant::now() + mine.backoff);
                    tracing::warn!(reactor = %binding.name, %why, backoff = ?mine.backoff, "reactor step failed");
                }
            }
        }
    }
}

/// What a look at one reactor found to do.
enum Work {
    /// Nothing new in its range up to this revision.
    Nothing(i64),
    /// Only writes that must not trigger it (its own, or past its depth) up to this revision:
    /// the cursor moves past them.
    Skip(i64),
    /// History after the cursor was compacted away (up to this revision).
    Compacted(i64),
    /// Run it on the events of each of these revisions (in order; the last is where the
    /// step moves the cursor), writing at `depth`.
    React {
        revisions: Vec<(i64, Vec<Event>)>,
        depth: u32,
    },
}

/// One step of one reactor: find its next triggering revision, run it, propose the step.
async fn step(
    ctx: &crate::api::Context,
    reactors: &Reactors,
    binding: &Binding,
    state: &ReactorState,
    mine: &mut Local,
) -> Result<(), String> {
    let revs = *ctx.raft.subscribe().borrow();
    let moved = match mine.moved {
        Some((cursor, at)) if cursor == state.cursor => at,
        _ => {
            mine.moved = Some((state.cursor, Instant::now()));
            Instant::now()
        }
    };
    let from = match mine.scanned {
        Some((cursor, to)) if cursor == state.cursor => to,
        _ => state.cursor,
    };
    if from >= revs.current {
        return Ok(());
    }
    let work = {
        let (storage, binding, state) = (ctx.storage.clone(), binding.clone(), state.clone());
        let current = revs.current;
        tokio::task::spawn_blocking(move || find_work(&storage, &binding, &state, from, current))
            .await
            .map_err(|e| format!("reading history: {e}"))??
    };
    let (revisions, depth) = match work {
        Work::Nothing(to) => {
            mine.scanned = Some((state.cursor, to));
            if to - state.cursor >= SKIP_AHEAD || moved.elapsed() >= QUIET_MOVE {
                propose(ctx, binding, state, to, 0, Vec::new()).await?;
            }
            return Ok(());
        }
        Work::Skip(to) => return propose(ctx, binding, state, to, 0, Vec::new()).await,
        Work::Compacted(compact) => {
            let reason = format!(
                "history was compacted at revision {compact}, past its cursor {}",
                state.cursor
            );
            propose_failure(ctx, binding, state, &reason).await?;
            return Err(reason);
        }
        Work::React { revisions, depth } => (revisions, depth),
    };
    let reacted = {
        let engine = reactors.engine.clone();
        let storage = ctx.storage.clone();
        let binding = binding.clone();
        let now_ms = crate::wall_clock_ms();
        tokio::task::spawn_blocking(move || react(&engine, &storage, &binding, now_ms, revisions))
            .await
            .map_err(|e| format!("running the reactor: {e}"))??
    };
    match reacted {
        Reacted::Step { revision, ops } => propose(ctx, binding, state, revision, depth, ops).await,
        Reacted::Failed(reason) => {
            propose_failure(ctx, binding, state, &reason).await?;
            Err(reason)
        }
    }
}

/// What running a reactor over a batch of revisions came to.
enum Reacted {
    /// The writes of the revisions up to `revision` (at least the first of the batch).
    Step { revision: i64, ops: Vec<RequestOp> },
    /// The first revision of the batch failed.
    Failed(String),
}

/// Runs the reactor on each revision of a batch, in order, and gathers their writes into one
/// step. The step ends before a revision that fails (the next step starts with it, and fails
/// there, alone), whose writes touch a key the step already writes (one txn writes a key
/// once), or that would take the step past the output limits.
fn react(
    engine: &Engine,
    storage: &crate::storage::Storage,
    binding: &Binding,
    now_ms: i64,
    revisions: Vec<(i64, Vec<Event>)>,
) -> Result<Reacted, String> {
    let view = Mvcc::read_view(storage).map_err(|e| format!("reading the store: {e}"))?;
    let view = View::of(&view);
    let mut step: Option<(i64, Vec<RequestOp>)> = None;
    let mut bytes = 0usize;
    for (revision, events) in revisions {
        let call = engine
            .react(
                &Target::of(binding, now_ms),
                view.clone(),
                revision,
                &events,
            )
            .map_err(|fault| fault.to_string())?;
        let ops = match (call.outcome, &step) {
            (Outcome::Answered(ops), _) => ops,
            (Outcome::Failed(reason), None) => return Ok(Reacted::Failed(reason)),
            (Outcome::Failed(_), Some(_)) => break,
        };
        let Some((to, gathered)) = &mut step else {
            bytes = reactor_bytes(&ops);
            step = Some((revision, ops));
            continue;
        };
        let more = reactor_bytes(&ops);
        if gathered.len() + ops.len() > super::engine::MAX_REACTOR_OPS
            || bytes + more > super::engine::MAX_REACTOR_BYTES
            || ops.iter().any(|op| gathered.iter().any(|g| overlap(g, op)))
        {
            break;
        }
        bytes += more;
        gathered.extend(ops);
        *to = revision;
    }
    let (revision, ops) = step.ok_or("no revision to react to")?;
    Ok(Reacted::Step { revision, ops })
}

fn overlap(a: &RequestOp, b: &RequestOp) -> bool {
    match (reactor_written(a), reactor_written(b)) {
        (Some(a), Some(b)) => KeyRange::pairs_overlap(a, b),
        // Reactors write puts and deletes only; anything else ends the batch.
        _ => true,
    }
}

/// Reads the events after `from` (up to `current`, a bounded amount) in the reactor's
/// range, and finds the first revision that triggers it.
fn find_work(
    storage: &crate::storage::Storage,
    binding: &Binding,
    state: &ReactorState,
    from: i64,
    current: i64,
) -> Result<Work, String> {
    let view = Mvcc::read_view(storage).map_err(|e| format!("reading history: {e}"))?;
    // Checked on the view the events are read from: history below its compaction is gone.
    if from + 1 < view.compact_rev {
        return Ok(Work::Compacted(view.compact_rev));
    }
    let range = KeyRange::new(&binding.key, &binding.range_end);
    let (events, covered) = view
        .events(from + 1, current, &range, true, READ_BYTES)
        .map_err(|e| format!("reading history: {e}"))?;
    let mut by_revision: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    for event in events {
        by_revision
            .entry(event.kv.mod_revision)
            .or_default()
            .push(event);
    }
    let mut skipped = false;
    let mut batch: Vec<(i64, Vec<Event>)> = Vec::new();
    let mut batch_depth = 0;
    for (revision, events) in by_revision {
        let depth = match state.written.get(&revision) {
            None => 1,
            Some((_, true)) if !state.options.retrigger => {
                skipped = true;
                continue;
            }
            Some(&(d, _)) if d >= state.options.max_depth => {
                tracing::info!(reactor = %binding.name, revision, depth = d, "reactor depth limit: not triggered again");
                skipped = true;
                continue;
            }
            Some(&(d, _)) => d + 1,
        };
        // One step writes at one depth: a batch is the triggering revisions of one depth
        // in a row (the revisions skipped among them are passed with them).
        if batch.is_empty() {
            batch_depth = depth;
        } else if depth != batch_depth || batch.len() >= STEP_REVISIONS {
            break;
        }
        batch.push((revision, events));
    }
    Ok(if !batch.is_empty() {
        Work::React {
            revisions: batch,
            depth: batch_depth,
        }
    } else if skipped {
        Work::Skip(covered)
    } else {
        Work::Nothing(covered)
    })
}

async fn propose(
    ctx: &crate::api::Context,
    binding: &Binding,
    state: &ReactorState,
    revision: i64,
    depth: u32,
    ops: Vec<RequestOp>,
) -> Result<(), String> {
    let command = Command::Plugin(PluginCommand::ReactorStep {
        name: binding.name.clone(),
        cursor: state.cursor,
        revision,
        depth,
        ops,
    });
    write(ctx, command).await
}

async fn propose_failure(
    ctx: &crate::api::Context,
    binding: &Binding,
    state: &ReactorState,
    reason: &str,
) -> Result<(), String> {
    let command = Command::Plugin(PluginCommand::ReactorFailed {
        name: binding.name.clone(),
        cursor: state.cursor,
        reason: reason.to_string(),
    });
    write(ctx, command).await
}

/// Proposes a member's own command, bounded by the request timeout. A step that lost a race
/// with another (its cursor moved) is not an error: the next look starts from the new cursor.
/// A step apply refused (its writes were refused) is: the leader backs off.
async fn write(ctx: &crate::api::Context, command: Command) -> Result<(), String> {
    use crate::state_machine::CommandResponse;
    match tokio::time::timeout(ctx.limits.request_timeout, ctx.raft.write(command)).await {
        Ok(Ok(CommandResponse::Plugin(Err(PluginError::ReactorMoved { .. }), _))) => Ok(()),
        Ok(Ok(CommandResponse::Plugin(Err(e), _))) => Err(e.to_string()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("proposing: {e}")),
        Err(_) => Err("proposing: timed out".into()),
    }
}
