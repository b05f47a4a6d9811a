//! A linearizability checker for histories of etcd key-value operations, in the manner of
//! porcupine.
//!
//! # Model
//!
//! Every operation touches one key, whose value is an `Option<String>` (`None`: the key is
//! absent) and starts absent. The operations are etcd's, reduced to what a test observes:
//!
//! - [`Input::Get`] returns the value ([`Output::Get`]).
//! - [`Input::Put`] sets the value ([`Output::Put`]).
//! - [`Input::Cas`] is a Txn that compares the value with `expected` (`None`: "the key is
//!   absent") and, only if equal, puts `new`; [`Output::Cas`] says whether it did.
//! - [`Input::Delete`] makes the key absent; [`Output::Delete`] says whether it existed.
//!
//! A history is linearizable if each operation can be given one instant inside its interval
//! `[call, ret]` such that running the operations one at a time in the order of those instants
//! produces exactly the recorded outputs. Because operations on different keys never interact,
//! a history is linearizable if and only if each key's sub-history is (P-compositionality, Herlihy
//! and Wing), so every key is checked on its own: many small searches instead of one huge one.
//!
//! # Unknown outcomes
//!
//! A client that times out or loses its connection does not know whether its request took
//! effect; it records `ret: None` (or [`Output::Unknown`]). Such an operation may have taken
//! effect at any instant after its call, or never:
//!
//! - An unknown [`Input::Get`] constrains nothing and is dropped.
//! - An unknown write with `ret: None` gets a return instant after everything else. The search
//!   never has to linearize it: leaving it pending until the end means "it never took effect",
//!   and the search succeeds as soon as every operation with a known return is linearized.
//!   When it is linearized, it applies its effect (a Cas whose comparison fails would change
//!   nothing, which is the same as leaving it pending, so that branch is not explored).
//! - A write with a known `ret` but [`Output::Unknown`] must be placed inside its interval, and
//!   may there either apply its effect or change nothing; the search tries both.
//!
//! # Algorithm
//!
//! Wing and Gong's search with Lowe's improvements, as porcupine does it. For one key, the
//! call and return events are sorted by time into a doubly linked list. A depth-first search
//! walks the list from its head: an operation whose call comes before the first return still
//! in the list may be linearized now, if the model accepts its recorded output from the
//! current state; it is then unlinked (call and return) and the walk restarts from the head.
//! Reaching a return event means the operation returning there was not linearized in time, so
//! the search backtracks: it relinks the most recently linearized operation, restores the
//! state, and tries the next candidate after it. Lowe's memoization makes this practical: the
//! pair (set of linearized operations, model state) determines what can still happen, so a
//! pair seen before is not explored again. The set is a bitset with an incrementally
//! maintained hash, and a state is one integer (values are interned).
//!
//! On top of that, reductions that never change the verdict (each is argued where it is
//! implemented, and the tests compare the search with brute-force enumeration):
//!
//! - Values that no Get returns and no Cas expects are merged into one: the model cannot
//!   tell them apart, and states that differ only in them become one memoized state.
//! - Forced moves: a read-only operation (a Get, a failed Cas, a Delete of an absent key)
//!   that the current state allows is linearized without trying alternatives, because any
//!   way to finish can be reordered to start with it. This removes most backtracking.
//! - Unknown-outcome writes are tried only after every other candidate, only the first
//!   pending one of identical writes, and only right before an operation whose output or
//!   resulting state depends on them (a partial-order reduction); otherwise they would be
//!   tried at every point after their call, multiplying the states.
//! - The memo records which unknown-outcome writes were used, and prunes a node if the same
//!   (set, state) was reached using a subset of them: it had every option this one has.
//!
//! Events at the same instant are ordered calls first, so operations that merely touch are
//! treated as concurrent: with coarse clocks this can hide a real violation, never invent one.
//!
//! # Cost
//!
//! Checking is exponential in the worst case, so it runs under a step budget and reports
//! [`CheckResult::BudgetExceeded`] instead of hanging; a test must treat that as a failure.
//! In practice the cost grows with the number of operations in flight on one key at once and
//! with ambiguity. Give every write a value of its own, so that a read says which write it
//! saw: then a linearizable history of 2,000 operations on one key from 8 clients checks in
//! milliseconds, and a violation is found in well under a second, even with a few lost
//! responses. Few distinct values combined with many lost writes make proving a violation
//! (which means exhausting every explanation) much costlier.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};

/// A recorded history: every operation every client issued, in any order.
pub type History = Vec<Operation>;

/// One client request and what the client saw of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Which client issued it; only used to describe a violation.
    pub client: usize,
    /// When the request was sent, on a clock shared by all clients (nanoseconds or any
    /// monotonic unit).
    pub call: u64,
    /// When the response arrived; `None` if it never did (timeout, connection lost), so the
    /// operation may or may not have taken effect, at any time after `call`. The output is
    /// then ignored.
    pub ret: Option<u64>,
    pub input: Input,
    pub output: Output,
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    /// A Txn: if the value equals `expected` (`None`: the key is absent), put `new`.
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    Delete {
        key: String,
    },
}

impl Input {
    /// The single key this operation touches.
    pub fn key(&self) -> &str {
        match self {
            Input::Get { key }
            | Input::Put { key, .. }
            | Input::Cas { key, .. }
            | Input::Delete { key } => key,
        }
    }
}

/// What a client got back. Each variant but `Unknown` answers the [`Input`] of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The value read; `None` if the key was absent.
    Get {
        value: Option<String>,
    },
    Put,
    /// Whether the comparison held and `new` was written.
    Cas {
        succeeded: bool,
    },
    /// Whether the key existed (and so was deleted).
    Delete {
        deleted: bool,
    },
    /// The client does not know whether the operation took effect.
    Unknown,
}

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's operations can be linearized.
    Ok,
    /// The operations on `key` cannot be linearized; `explanation` says where the search got
    /// stuck. When several keys are illegal, the first in byte order is reported.
    Illegal { key: String, explanation: String },
    /// The search on `key` used `max_steps` steps without a verdict; no other key was found
    /// illegal. Not a pass: the history is too concurrent (or too long) to check.
    BudgetExceeded { key: String, max_steps: u64 },
    /// `history[index]` cannot be an observation of this model at all (e.g. it returned before
    /// it was called, or its output answers a different kind of request): a bug in whatever
    /// recorded the history, reported before any search.
    Malformed { index: usize, reason: String },
}

impl CheckResult {
    /// True only for [`CheckResult::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => write!(f, "the history is linearizable"),
            CheckResult::Illegal { key, explanation } => {
                write!(
                    f,
                    "the history is not linearizable on key {key:?}:\n{explanation}"
                )
            }
            CheckResult::BudgetExceeded { key, max_steps } => write!(
                f,
                "the linearizability search on key {key:?} used its budget of {max_steps} steps \
                 without a verdict; this is a failure, not a pass: record a shorter or less \
                 concurrent history, or raise the budget"
            ),
            CheckResult::Malformed { index, reason } => {
                write!(
                    f,
                    "operation #{index} of the history is malformed: {reason}"
                )
            }
        }
    }
}

/// Steps [`check`] allows the search on each key: a few seconds in a debug build, far more
/// than a linearizable history of thousands of operations per key needs.
pub const DEFAULT_MAX_STEPS: u64 = 10_000_000;

/// Checks `history` with [`DEFAULT_MAX_STEPS`] per key.
pub fn check(history: &[Operation]) -> CheckResult {
    check_with_budget(history, DEFAULT_MAX_STEPS)
}

/// Checks `history`, allowing the search on each key at most `max_steps` steps (one step
/// considers one event of the list), so the total work is bounded by keys × `max_steps`.
///
/// An illegal key is reported even if another key ran out of budget, since that verdict is
/// definite; otherwise a key out of budget makes the result [`CheckResult::BudgetExceeded`].
pub fn check_with_budget(history: &[Operation], max_steps: u64) -> CheckResult {
    // Compile every key before searching any, so a malformed operation is reported as such
    // rather than as a violation on whichever key happens to be searched first.
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        by_key.entry(op.input.key()).or_default().push(index);
    }
    let mut compiled = Vec::with_capacity(by_key.len());
    for (key, indices) in by_key {
        match compile_key(history, &indices) {
            Ok(key_ops) => compiled.push((key, key_ops)),
            Err(malformed) => return malformed,
        }
    }

    let mut out_of_budget = None;
    for (key, key_ops) in &compiled {
        match Search::new(key_ops).run(max_steps) {
            Verdict::Linearizable => {}
            Verdict::Illegal(search) => {
                return CheckResult::Illegal {
                    key: (*key).to_owned(),
                    explanation: search.explain(history, key_ops),
                };
            }
            Verdict::OutOfBudget => {
                out_of_budget.get_or_insert(*key);
            }
        }
    }
    match out_of_budget {
        Some(key) => CheckResult::BudgetExceeded {
            key: key.to_owned(),
            max_steps,
        },
        None => CheckResult::Ok,
    }
}

/// A model state: [`ABSENT`], the id of a value some operation observes, or [`UNOBSERVED`].
type State = u32;
const ABSENT: State = 0;
/// Any value that no Get returns and no Cas expects. The model only ever compares the state
/// with observed values, so such values are indistinguishable from one another: merging them
/// loses nothing, and lets the memoization see that states differing only in them are one.
const UNOBSERVED: State = State::MAX;

/// An operation as the search sees it: outputs folded into the effect, values interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Effect {
    Get {
        value: State,
    },
    Put {
        value: State,
    },
    Cas {
        expected: State,
        new: State,
        succeeded: bool,
    },
    Delete {
        deleted: bool,
    },
    // Writes whose outcome is unknown.
    MaybePut {
        value: State,
    },
    MaybeCas {
        expected: State,
        new: State,
    },
    MaybeDelete,
}

impl Effect {
    /// Whether the operation leaves the state as it is whenever its output is possible.
    fn is_read_only(self) -> bool {
        match self {
            Effect::Get { .. }
            | Effect::Cas {
                succeeded: false, ..
            }
            | Effect::Delete { deleted: false } => true,
            Effect::Cas { expected, new, .. } => expected == new,
            _ => false,
        }
    }

    fn is_unknown(self) -> bool {
        matches!(
            self,
            Effect::MaybePut { .. } | Effect::MaybeCas { .. } | Effect::MaybeDelete
        )
    }

    /// The states the model can be in after this operation runs from `state` and produces the
    /// recorded output: none if that output is impossible, at most two. `open_ended` says
    /// the operation has no return, so a linearization that changes nothing is pointless (the
    /// search can leave it pending instead) and is not offered.
    fn successors(self, state: State, open_ended: bool) -> [Option<State>; 2] {
        let applied = match self {
            Effect::Get { value } => return [(state == value).then_some(state), None],
            Effect::Put { value } => return [Some(value), None],
            Effect::Cas {
                expected,
                new,
                succeeded,
            } => {
                let after = if succeeded { new } else { state };
                return [((state == expected) == succeeded).then_some(after), None];
            }
            Effect::Delete { deleted } => {
                return [((state != ABSENT) == deleted).then_some(ABSENT), None];
            }
            Effect::MaybePut { value } => value,
            Effect::MaybeCas { expected, new } => {
                if state == expected {
                    new
                } else {
                    state
                }
            }
            Effect::MaybeDelete => ABSENT,
        };
        if open_ended {
            [(applied != state).then_some(applied), None]
        } else if applied == state {
            [Some(state), None]
        } else {
            [Some(applied), Some(state)]
        }
    }
}

/// One operation of one key's sub-history.
#[derive(Debug)]
struct KeyOp {
    /// Its index in the caller's history, to describe it.
    index: usize,
    call: u64,
    /// `None`: the return is after every other event.
    ret: Option<u64>,
    effect: Effect,
}

/// Interns the values of one key: observed values get ids from 1, the rest are
/// [`UNOBSERVED`].
#[derive(Debug, Default)]
struct Interner<'a> {
    observed: HashMap<&'a str, State>,
}

impl<'a> Interner<'a> {
    fn observe(&mut self, value: Option<&'a str>) {
        if let Some(value) = value {
            let next = self.observed.len() + 1;
            // Fewer than 4 billion distinct values fit in memory as Strings, so this fits.
            let id = State::try_from(next).unwrap_or(UNOBSERVED - 1);
            self.observed.entry(value).or_insert(id);
        }
    }

    fn intern(&self, value: Option<&str>) -> State {
        match value {
            None => ABSENT,
            Some(value) => self.observed.get(value).copied().unwrap_or(UNOBSERVED),
        }
    }
}

fn compile_key(history: &[Operation], indices: &[usize]) -> Result<Vec<KeyOp>, CheckResult> {
    let mut interner = Interner::default();
    for &index in indices {
        match (&history[index].input, &history[index].output) {
            (Input::Get { .. }, Output::Get { value }) if history[index].ret.is_some() => {
                interner.observe(value.as_deref());
            }
            (Input::Cas { expected, .. }, _) => interner.observe(expected.as_deref()),
            _ => {}
        }
    }
    let intern = |value| interner.intern(value);
    let mut ops = Vec::with_capacity(indices.len());
    for &index in indices {
        let op = &history[index];
        let malformed = |reason: String| CheckResult::Malformed { index, reason };
        if let Some(ret) = op.ret
            && ret < op.call
        {
            return Err(malformed(format!(
                "it returned at {ret}, before it was called at {}",
                op.call
            )));
        }
        let unknown = op.ret.is_none() || op.output == Output::Unknown;
        let effect = match (&op.input, &op.output) {
            // A read that may not have happened constrains nothing.
            (Input::Get { .. }, _) if unknown => continue,
            (Input::Get { .. }, Output::Get { value }) => Effect::Get {
                value: intern(value.as_deref()),
            },
            (Input::Put { value, .. }, _) if unknown => Effect::MaybePut {
                value: intern(Some(value)),
            },
            (Input::Put { value, .. }, Output::Put) => Effect::Put {
                value: intern(Some(value)),
            },
            (Input::Cas { expected, new, .. }, _) if unknown => Effect::MaybeCas {
                expected: intern(expected.as_deref()),
                new: intern(Some(new)),
            },
            (Input::Cas { expected, new, .. }, Output::Cas { succeeded }) => Effect::Cas {
                expected: intern(expected.as_deref()),
                new: intern(Some(new)),
                succeeded: *succeeded,
            },
            (Input::Delete { .. }, _) if unknown => Effect::MaybeDelete,
            (Input::Delete { .. }, Output::Delete { deleted }) => {
                Effect::Delete { deleted: *deleted }
            }
            (input, output) => {
                return Err(malformed(format!(
                    "output {output:?} does not answer input {input:?}"
                )));
            }
        };
        ops.push(KeyOp {
            index,
            call: op.call,
            ret: op.ret,
            effect,
        });
    }
    Ok(ops)
}

/// The end of a linked list.
const NIL: usize = usize::MAX;

/// One event of the sorted event list.
#[derive(Debug, Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// What has been linearized, as a memoization key: the set of linearized operations with a
/// known return and the state they leave. `hash` is the XOR of [`scramble`] over the members,
/// kept up to date as operations are added and removed, so hashing a key does not read the
/// whole bitset.
#[derive(Debug, Clone)]
struct Memo {
    bits: Vec<u64>,
    hash: u64,
    state: State,
}

impl PartialEq for Memo {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.state == other.state && self.bits == other.bits
    }
}

impl Eq for Memo {}

impl Hash for Memo {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        // Equal keys have equal `hash` (it is a function of `bits`), as `Hash` requires.
        self.hash.hash(hasher);
        self.state.hash(hasher);
    }
}

impl Memo {
    fn toggle(&mut self, slot: usize) {
        toggle(&mut self.bits, slot);
        self.hash ^= scramble(slot);
    }
}

fn toggle(bits: &mut [u64], slot: usize) {
    bits[slot / 64] ^= 1 << (slot % 64);
}

fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small
        .iter()
        .zip(large)
        .all(|(small, large)| small & !large == 0)
}

/// splitmix64's finalizer: spreads operation numbers over all 64 bits so that XORs of
/// different sets rarely collide.
fn scramble(op: usize) -> u64 {
    let mut z = (op as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A linearized operation on the search stack, with what is needed to undo it and to resume
/// the walk after it.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// The operation's call event.
    event: usize,
    /// Which of its successor states was taken; for an unknown outcome, 0 is "applied".
    choice: usize,
    state_before: State,
    /// For an open-ended operation: the state before the run of consecutive open-ended
    /// operations that ends with it (see [`needs_run`]).
    run_start: State,
    /// For an open-ended operation: the first pending return when it was chosen, which bounds
    /// the candidates after it.
    limit: usize,
    /// A read-only operation linearized as a forced move: its node has no other branch.
    forced: bool,
}

/// Where the walk over candidates is.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// Looking for a forced move at this event of the list of operations with a known return:
    /// a read-only operation the current state allows. Whenever one exists, any linearization
    /// of the rest can be reordered to start with it (it changes nothing, and a candidate may
    /// move earlier), so the node succeeds if and only if linearizing it next does: no need to
    /// branch.
    ReadOnly(usize),
    /// At this event of the list of operations with a known return.
    Closed(usize),
    /// At this call of an open-ended operation; only those called before event `limit` (the
    /// first pending return) are candidates.
    Open { at: usize, limit: usize },
}

enum Verdict {
    Linearizable,
    Illegal(Box<Search>),
    OutOfBudget,
}

/// The search over one key's operations.
#[derive(Debug)]
struct Search {
    effects: Vec<Effect>,
    /// All events sorted by time (calls first on ties); an index into it is an event's rank.
    events: Vec<Event>,
    call_event: Vec<usize>,
    /// `NIL` for an open-ended operation, which has no return event.
    return_event: Vec<usize>,
    /// Two doubly linked lists over the events, headed by `closed_head` (calls and returns of
    /// operations with a known return) and `open_head` (calls of open-ended operations).
    /// Keeping open-ended calls apart lets the walk try them last.
    next: Vec<usize>,
    prev: Vec<usize>,
    closed_head: usize,
    open_head: usize,
    /// Operations with a known return not yet linearized; zero means success.
    pending_closed: usize,
    /// An operation's number among the operations with a known return, or among the
    /// open-ended ones: its bit in `current` or in `open_used`.
    slot: Vec<usize>,
    current: Memo,
    /// The open-ended operations linearized.
    open_used: Vec<u64>,
    /// For each key visited, the sets of open-ended operations used when it was, none a
    /// superset of another. The memoization of Wing, Gong and Lowe, with subsumption: a node
    /// is pruned if its key was visited with a subset of its open-ended operations used, since
    /// every way to go on from it was available there too. Open-ended operations can be used
    /// at any point after their call, so the exact sets would rarely repeat.
    seen: HashMap<Memo, Vec<Vec<u64>>>,
    frames: Vec<Frame>,
    /// For an open-ended operation, the call event of the next open-ended one with the same
    /// effect, if any (else `NIL`). Only the first pending one of such twins is a candidate,
    /// and only it is linked in the open-ended list: it can go anywhere the later ones can,
    /// so trying those too would only explore the same states under other names (and lost
    /// writes of unobserved values are all alike).
    next_twin: Vec<usize>,
    /// The stack that linearized the most operations with a known return, as (operation,
    /// choice), for the explanation; and how many it linearized. Counting those alone keeps
    /// lost writes out of the prefix shown unless they were needed on the way.
    best: Vec<(usize, usize)>,
    best_closed: usize,
    closed_count: usize,
}

impl Search {
    fn new(ops: &[KeyOp]) -> Search {
        let mut events = Vec::with_capacity(ops.len() * 2);
        for (op, key_op) in ops.iter().enumerate() {
            events.push(Event { op, is_call: true });
            if key_op.ret.is_some() {
                events.push(Event { op, is_call: false });
            }
        }
        let time = |event: &Event| {
            let op = &ops[event.op];
            match (event.is_call, op.ret) {
                (false, Some(ret)) => ret,
                // Only operations with a known return have return events.
                _ => op.call,
            }
        };
        events.sort_by_key(|event| (time(event), !event.is_call, event.op));

        let n = events.len();
        let (closed_head, open_head) = (n, n + 1);
        let mut next = vec![NIL; n + 2];
        let mut prev = vec![NIL; n + 2];
        let mut call_event = vec![NIL; ops.len()];
        let mut return_event = vec![NIL; ops.len()];
        let mut next_twin = vec![NIL; ops.len()];
        let (mut closed_count, mut open_count) = (0, 0);
        let slot = ops
            .iter()
            .map(|op| {
                let count = if op.ret.is_some() {
                    &mut closed_count
                } else {
                    &mut open_count
                };
                *count += 1;
                *count - 1
            })
            .collect();
        let mut last_with_effect: HashMap<Effect, usize> = HashMap::new();
        let (mut closed_tail, mut open_tail) = (closed_head, open_head);
        for (rank, event) in events.iter().enumerate() {
            if ops[event.op].ret.is_none()
                && let Some(twin) = last_with_effect.insert(ops[event.op].effect, event.op)
            {
                next_twin[twin] = rank;
                // Linked in when its twin is linearized.
                call_event[event.op] = rank;
                continue;
            }
            if event.is_call {
                call_event[event.op] = rank;
            } else {
                return_event[event.op] = rank;
            }
            let tail = if ops[event.op].ret.is_some() {
                &mut closed_tail
            } else {
                &mut open_tail
            };
            next[*tail] = rank;
            prev[rank] = *tail;
            *tail = rank;
        }

        Search {
            effects: ops.iter().map(|op| op.effect).collect(),
            events,
            call_event,
            return_event,
            next,
            prev,
            closed_head,
            open_head,
            pending_closed: closed_count,
            slot,
            current: Memo {
                bits: vec![0; closed_count.div_ceil(64)],
                hash: 0,
                state: ABSENT,
            },
            open_used: vec![0; open_count.div_ceil(64)],
            seen: HashMap::new(),
            frames: Vec::new(),
            next_twin,
            best: Vec::new(),
            best_closed: 0,
            closed_count,
        }
    }

    fn is_open(&self, op: usize) -> bool {
        self.return_event[op] == NIL
    }

    /// Marks `op` linearized, or not any more.
    fn toggle(&mut self, op: usize) {
        if self.is_open(op) {
            toggle(&mut self.open_used, self.slot[op]);
        } else {
            self.current.toggle(self.slot[op]);
        }
    }

    /// Records a visit to the current node; false if it is subsumed by an earlier one.
    fn visit(&mut self) -> bool {
        let Some(visits) = self.seen.get_mut(&self.current) else {
            self.seen
                .insert(self.current.clone(), vec![self.open_used.clone()]);
            return true;
        };
        if visits.iter().any(|used| is_subset(used, &self.open_used)) {
            return false;
        }
        visits.retain(|used| !is_subset(&self.open_used, used));
        visits.push(self.open_used.clone());
        true
    }

    fn first_read_only(&self) -> Cursor {
        Cursor::ReadOnly(self.next[self.closed_head])
    }

    fn first_closed(&self) -> Cursor {
        Cursor::Closed(self.next[self.closed_head])
    }

    fn unlink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    /// Links `event`, which is not linked, into the list after `after`, at its place in time.
    fn link_after(&mut self, mut after: usize, event: usize) {
        while self.next[after] != NIL && self.next[after] < event {
            after = self.next[after];
        }
        let next = self.next[after];
        self.next[event] = next;
        self.prev[event] = after;
        self.next[after] = event;
        if next != NIL {
            self.prev[next] = event;
        }
    }

    /// Undoes [`Search::unlink`]. Unlinking leaves the event's own links untouched, so undoing
    /// a series of unlinks in reverse order restores the list exactly (dancing links).
    fn relink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = event;
        if next != NIL {
            self.prev[next] = event;
        }
    }

    /// Tries to linearize the operation called at `event` now, taking its successor states
    /// from number `from_choice` on, and skipping any that leads to an already explored
    /// node. Pushes a frame (`forced` if it is a forced move) and returns true on success.
    fn linearize(&mut self, event: usize, from_choice: usize, limit: usize, forced: bool) -> bool {
        let op = self.events[event].op;
        let open = self.is_open(op);
        let state_before = self.current.state;
        let effect = self.effects[op];
        let successors = effect.successors(state_before, open);
        let run_start = match self.frames.last() {
            Some(top) if self.is_open(self.events[top.event].op) => Some(top.run_start),
            _ => None,
        };
        self.toggle(op);
        for (choice, successor) in successors.iter().enumerate().skip(from_choice) {
            let Some(state_after) = *successor else {
                continue;
            };
            if let Some(run_start) = run_start
                && !needs_run(effect, open, run_start, state_before, state_after)
            {
                continue;
            }
            self.current.state = state_after;
            if !self.visit() {
                continue;
            }
            self.unlink(event);
            if !open {
                self.unlink(self.return_event[op]);
                self.pending_closed -= 1;
            } else if self.next_twin[op] != NIL {
                // Its twin called next takes its place as the class's candidate; it was called
                // later, so it goes after the unlinked event's predecessor.
                self.link_after(self.prev[event], self.next_twin[op]);
            }
            self.frames.push(Frame {
                event,
                choice,
                state_before,
                run_start: run_start.unwrap_or(state_before),
                limit,
                forced,
            });
            if self.closed_count - self.pending_closed > self.best_closed {
                self.best_closed = self.closed_count - self.pending_closed;
                self.best = self
                    .frames
                    .iter()
                    .map(|frame| (self.events[frame.event].op, frame.choice))
                    .collect();
            }
            return true;
        }
        self.toggle(op);
        self.current.state = state_before;
        false
    }

    fn undo(&mut self, frame: Frame) {
        let op = self.events[frame.event].op;
        if !self.is_open(op) {
            self.relink(self.return_event[op]);
            self.pending_closed += 1;
        } else if self.next_twin[op] != NIL {
            self.unlink(self.next_twin[op]);
        }
        self.relink(frame.event);
        self.toggle(op);
        self.current.state = frame.state_before;
    }

    fn run(mut self, max_steps: u64) -> Verdict {
        let mut steps = 0u64;
        let mut cursor = self.first_read_only();
        loop {
            if self.pending_closed == 0 {
                // Whatever is left has an unknown outcome and may never have taken effect.
                return Verdict::Linearizable;
            }
            if steps >= max_steps {
                return Verdict::OutOfBudget;
            }
            steps += 1;

            cursor = match cursor {
                Cursor::ReadOnly(at) if at != NIL && self.events[at].is_call => {
                    let op = self.events[at].op;
                    let state = self.current.state;
                    if !self.effects[op].is_read_only()
                        || self.effects[op].successors(state, false)[0].is_none()
                    {
                        Cursor::ReadOnly(self.next[at])
                    } else if self.linearize(at, 0, NIL, true) {
                        self.first_read_only()
                    } else {
                        // Its node was explored (or made redundant, see `needs_run`) with it
                        // linearized next, and this node succeeds only if that one did.
                        match self.backtrack() {
                            Some(cursor) => cursor,
                            None => return Verdict::Illegal(Box::new(self)),
                        }
                    }
                }
                // No forced move: branch over all candidates.
                Cursor::ReadOnly(_) => self.first_closed(),
                Cursor::Closed(at) if at != NIL && self.events[at].is_call => {
                    if self.linearize(at, 0, NIL, false) {
                        self.first_read_only()
                    } else {
                        Cursor::Closed(self.next[at])
                    }
                }
                // The first pending return (the walk always meets one before NIL, since a
                // closed operation is pending): the open-ended operations called before it
                // are the remaining candidates.
                Cursor::Closed(at) => Cursor::Open {
                    at: self.next[self.open_head],
                    limit: at,
                },
                Cursor::Open { at, limit } if at != NIL && at < limit => {
                    if self.linearize(at, 0, limit, false) {
                        self.first_read_only()
                    } else {
                        Cursor::Open {
                            at: self.next[at],
                            limit,
                        }
                    }
                }
                // No candidate left.
                Cursor::Open { .. } => match self.backtrack() {
                    Some(cursor) => cursor,
                    None => return Verdict::Illegal(Box::new(self)),
                },
            };
        }
    }

    /// Gives up on the current node: undoes the last choice and tries its next alternative,
    /// or else returns the candidate after it. A forced choice has no alternative, so its
    /// node is given up too. `None` when the search is exhausted.
    fn backtrack(&mut self) -> Option<Cursor> {
        loop {
            let frame = self.frames.pop()?;
            self.undo(frame);
            if frame.forced {
                continue;
            }
            let open = self.is_open(self.events[frame.event].op);
            return Some(
                if self.linearize(frame.event, frame.choice + 1, frame.limit, false) {
                    self.first_read_only()
                } else if open {
                    Cursor::Open {
                        at: self.next[frame.event],
                        limit: frame.limit,
                    }
                } else {
                    Cursor::Closed(self.next[frame.event])
                },
            );
        }
    }

    /// Describes where the failed search got furthest: the longest linearizable prefix, the
    /// operation that could not be fitted in after it, and the other candidates there.
    fn explain(&self, history: &[Operation], ops: &[KeyOp]) -> String {
        const PREFIX_SHOWN: usize = 10;
        const CANDIDATES_SHOWN: usize = 40;
        let describe = |op: usize| describe_operation(ops[op].index, &history[ops[op].index]);

        let mut in_best = vec![false; ops.len()];
        for &(op, _) in &self.best {
            in_best[op] = true;
        }
        // The search's states merge unobserved values, so replay the prefix on the real ones.
        let mut value: Option<&str> = None;
        let mut values_after = Vec::with_capacity(self.best.len());
        for &(op, choice) in &self.best {
            // Choice 0 is the only one for a known output, and "applied" for an unknown one.
            if choice == 0 {
                match &history[ops[op].index].input {
                    Input::Get { .. } => {}
                    Input::Put { value: put, .. } => value = Some(put),
                    // The comparison on real values agrees with the search's: the state is
                    // only ever compared with observed values, which keep their identity.
                    Input::Cas { expected, new, .. } => {
                        if value == expected.as_deref() {
                            value = Some(new);
                        }
                    }
                    Input::Delete { .. } => value = None,
                }
            }
            values_after.push(value);
        }
        let open = (0..ops.len()).filter(|&op| self.is_open(op)).count();
        let mut lines = vec![format!(
            "{} operations on this key ({} completed, {open} of unknown outcome) and no order \
             of them, each within its interval, explains every output.",
            ops.len(),
            ops.len() - open,
        )];

        if self.best.is_empty() {
            lines.push(
                "Not even one operation can be linearized first, from the initial state \
                 (absent)."
                    .to_owned(),
            );
        } else {
            let skipped = self.best.len().saturating_sub(PREFIX_SHOWN);
            lines.push(format!(
                "The longest linearizable prefix found has {} operations; {}in linearization \
                 order, with the value after each:",
                self.best.len(),
                if skipped > 0 {
                    format!("its last {PREFIX_SHOWN} ")
                } else {
                    String::new()
                },
            ));
            for (&(op, choice), after) in self.best.iter().zip(&values_after).skip(skipped) {
                let taken = match (ops[op].effect.is_unknown(), choice) {
                    (false, _) => "",
                    (true, 0) => ", taken as applied",
                    (true, _) => ", taken as not applied",
                };
                lines.push(format!(
                    "  {}{taken}  ==> {}",
                    describe(op),
                    show_value(*after)
                ));
            }
        }

        // After the best prefix a completed operation is still pending (else the search would
        // have succeeded); the one returning first is where every continuation got stuck.
        let blocking = (0..ops.len())
            .filter(|&op| !in_best[op] && !self.is_open(op))
            .min_by_key(|&op| self.return_event[op]);
        let Some(blocking) = blocking else {
            return lines.join("\n");
        };
        lines.push(format!(
            "From the value {}, no operation called before the following one returned extends \
             the prefix, so it cannot be linearized within its interval:",
            show_value(value)
        ));
        lines.push(format!("  {}", describe(blocking)));

        let mut candidates: Vec<usize> = (0..ops.len())
            .filter(|&op| {
                op != blocking && !in_best[op] && self.call_event[op] < self.return_event[blocking]
            })
            .collect();
        candidates.sort_by_key(|&op| self.call_event[op]);
        if candidates.is_empty() {
            lines.push("No other operation was called before it returned.".to_owned());
        } else {
            lines.push(
                "Other operations called before it returned and not in the prefix, by call \
                 time:"
                    .to_owned(),
            );
            for &op in candidates.iter().take(CANDIDATES_SHOWN) {
                lines.push(format!("  {}", describe(op)));
            }
            if candidates.len() > CANDIDATES_SHOWN {
                lines.push(format!(
                    "  ... and {} more",
                    candidates.len() - CANDIDATES_SHOWN
                ));
            }
        }
        lines.join("\n")
    }
}

/// Whether an operation that goes from `before` to `after` right after a run of open-ended
/// operations, which went from `run_start` to `before`, depends on that run. If not, the
/// search need not explore this order (partial-order reduction): either the operation could
/// go from `run_start` to `after` directly, and the run was pointless; or it changes nothing
/// both before and after the run, and could have gone first. Both alternatives have the same
/// or more operations left to linearize and lead to the same state; they start from the
/// state before the run, whose candidates with a known return are all explored before any
/// open-ended one, so they were tried before this run was. Open-ended operations are thus
/// only linearized where they explain the next operation, not at every place they could go.
fn needs_run(effect: Effect, open: bool, run_start: State, before: State, after: State) -> bool {
    let direct = effect.successors(run_start, open);
    let pointless = direct.contains(&Some(after)) || (open && after == run_start);
    let could_go_first = after == before && direct.contains(&Some(run_start));
    !(pointless || could_go_first)
}

/// One line for an operation: `#index client c [call, ret] request => response`.
fn describe_operation(index: usize, op: &Operation) -> String {
    let request = match &op.input {
        Input::Get { .. } => "get".to_owned(),
        Input::Put { value, .. } => format!("put {}", show_value(Some(value))),
        Input::Cas { expected, new, .. } => format!(
            "cas {} -> {}",
            show_value(expected.as_deref()),
            show_value(Some(new))
        ),
        Input::Delete { .. } => "delete".to_owned(),
    };
    let response = match (&op.output, op.ret) {
        (_, None) | (Output::Unknown, _) => "unknown".to_owned(),
        (Output::Get { value }, _) => show_value(value.as_deref()),
        (Output::Put, _) => "ok".to_owned(),
        (Output::Cas { succeeded: true }, _) => "succeeded".to_owned(),
        (Output::Cas { succeeded: false }, _) => "failed".to_owned(),
        (Output::Delete { deleted: true }, _) => "deleted".to_owned(),
        (Output::Delete { deleted: false }, _) => "not found".to_owned(),
    };
    let ret = op.ret.map_or_else(|| "?".to_owned(), |ret| ret.to_string());
    format!(
        "#{index} client {} [{}, {ret}] {request} => {response}",
        op.client, op.call
    )
}

/// A value for humans: quoted, long ones shortened; `absent` for a missing key.
fn show_value(value: Option<&str>) -> String {
    const SHOWN_CHARS: usize = 40;
    match value {
        None => "absent".to_owned(),
        Some(value) if value.chars().count() > SHOWN_CHARS => {
            let head: String = value.chars().take(SHOWN_CHARS).collect();
            format!("{head:?}... ({} bytes)", value.len())
        }
        Some(value) => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn op(client: usize, call: u64, ret: u64, input: Input, output: Output) -> Operation {
        Operation {
            client,
            call,
            ret: Some(ret),
            input,
            output,
        }
    }

    fn get(client: usize, call: u64, ret: u64, key: &str, value: Option<&str>) -> Operation {
        let input = Input::Get { key: key.into() };
        let output = Output::Get {
            value: value.map(Into::into),
        };
        op(client, call, ret, input, output)
    }

    fn put(client: usize, call: u64, ret: u64, key: &str, value: &str) -> Operation {
        let input = Input::Put {
            key: key.into(),
            value: value.into(),
        };
        op(client, call, ret, input, Output::Put)
    }

    fn cas(
        client: usize,
        (call, ret): (u64, u64),
        key: &str,
        expected: Option<&str>,
        new: &str,
        succeeded: bool,
    ) -> Operation {
        let input = Input::Cas {
            key: key.into(),
            expected: expected.map(Into::into),
            new: new.into(),
        };
        op(client, call, ret, input, Output::Cas { succeeded })
    }

    fn delete(client: usize, call: u64, ret: u64, key: &str, deleted: bool) -> Operation {
        let input = Input::Delete { key: key.into() };
        op(client, call, ret, input, Output::Delete { deleted })
    }

    /// The same request, but its response never arrived.
    fn lost(op: Operation) -> Operation {
        Operation {
            ret: None,
            output: Output::Unknown,
            ..op
        }
    }

    #[track_caller]
    fn assert_linearizable(history: &[Operation]) {
        let result = check(history);
        assert!(result.is_ok(), "{result}");
    }

    /// Asserts the history is illegal on `key` and returns the explanation.
    #[track_caller]
    fn assert_illegal(history: &[Operation], key: &str) -> String {
        match check(history) {
            CheckResult::Illegal {
                key: found,
                explanation,
            } => {
                assert_eq!(found, key, "illegal on the wrong key:\n{explanation}");
                explanation
            }
            other => panic!("expected a violation on key {key:?}, got: {other}"),
        }
    }

    /// etcd's semantics on a map, to compute what a linearizable store would answer.
    fn apply(store: &mut HashMap<String, String>, input: &Input) -> Output {
        match input {
            Input::Get { key } => Output::Get {
                value: store.get(key).cloned(),
            },
            Input::Put { key, value } => {
                store.insert(key.clone(), value.clone());
                Output::Put
            }
            Input::Cas { key, expected, new } => {
                let succeeded = store.get(key) == expected.as_ref();
                if succeeded {
                    store.insert(key.clone(), new.clone());
                }
                Output::Cas { succeeded }
            }
            Input::Delete { key } => Output::Delete {
                deleted: store.remove(key).is_some(),
            },
        }
    }

    struct Workload {
        clients: usize,
        keys: usize,
        ops: usize,
        /// Distinct values written; few values make many states look alike, which is harder.
        values: usize,
        /// Chance, per thousand, that a response is lost.
        lost_per_mille: u32,
    }

    /// A history of a linearizable store: each client issues requests one after another with
    /// random latencies, each request takes effect at a random instant inside its interval,
    /// and outputs come from applying the requests in the order of those instants. A lost
    /// response hides whether the request took effect (it does with probability 1/2).
    fn simulate(seed: u64, workload: &Workload) -> Vec<Operation> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut history = Vec::with_capacity(workload.ops);
        // (instant of effect, tie-breaker, operation, whether it takes effect)
        let mut effects = Vec::with_capacity(workload.ops);
        let mut clocks = vec![0u64; workload.clients];
        for index in 0..workload.ops {
            let client = index % workload.clients;
            // Strictly after the client's previous return, so that one client's requests
            // never overlap and their instants keep their order.
            let call = clocks[client] + rng.random_range(1..5);
            let ret = call + rng.random_range(1..100);
            clocks[client] = ret;
            let instant = rng.random_range(call..=ret);
            let key = format!("k{}", rng.random_range(0..workload.keys));
            let value = |rng: &mut StdRng| format!("v{}", rng.random_range(0..workload.values));
            let input = match rng.random_range(0..10) {
                0..4 => Input::Get { key },
                4..7 => Input::Put {
                    key,
                    value: value(&mut rng),
                },
                7..9 => {
                    let expected = rng.random_bool(0.8).then(|| value(&mut rng));
                    Input::Cas {
                        key,
                        expected,
                        new: value(&mut rng),
                    }
                }
                _ => Input::Delete { key },
            };
            let is_lost = rng.random_range(0..1000) < workload.lost_per_mille;
            let takes_effect = !is_lost || rng.random_bool(0.5);
            history.push(Operation {
                client,
                call,
                ret: (!is_lost).then_some(ret),
                input,
                output: Output::Unknown,
            });
            effects.push((instant, rng.random::<u64>(), index, takes_effect));
        }
        effects.sort_unstable();
        let mut store = HashMap::new();
        for (_, _, index, takes_effect) in effects {
            if takes_effect {
                let output = apply(&mut store, &history[index].input);
                if history[index].ret.is_some() {
                    history[index].output = output;
                }
            }
        }
        history
    }

    const SMALL: Workload = Workload {
        clients: 8,
        keys: 3,
        ops: 600,
        values: 4,
        lost_per_mille: 20,
    };

    // Operations one after another, each seeing the previous one's effect, are linearizable.
    #[test]
    fn sequential_history_passes() {
        assert_linearizable(&[
            get(0, 0, 1, "k", None),
            put(0, 2, 3, "k", "a"),
            get(1, 4, 5, "k", Some("a")),
            cas(1, (6, 7), "k", Some("a"), "b", true),
            cas(0, (8, 9), "k", Some("a"), "c", false),
            get(0, 10, 11, "k", Some("b")),
            delete(1, 12, 13, "k", true),
            get(0, 14, 15, "k", None),
        ]);
        assert_linearizable(&[]);
    }

    // A read that starts after a put completed must not return the older value.
    #[test]
    fn stale_read_after_completed_put_fails() {
        let explanation = assert_illegal(
            &[
                put(0, 0, 10, "k", "old"),
                put(0, 20, 30, "k", "new"),
                get(1, 40, 50, "k", Some("old")),
            ],
            "k",
        );
        // The explanation names the operation that could not be placed and the prefix.
        assert!(
            explanation.contains("#2 client 1 [40, 50] get => \"old\""),
            "{explanation}"
        );
        assert!(
            explanation.contains("prefix found has 2 operations"),
            "{explanation}"
        );
    }

    // A violation is reported on its own key, whatever happens on the others.
    #[test]
    fn violation_is_reported_on_its_key() {
        assert_illegal(
            &[
                put(0, 0, 10, "a", "1"),
                get(1, 20, 30, "a", Some("1")),
                put(0, 0, 10, "b", "1"),
                get(1, 20, 30, "b", None),
                put(0, 0, 10, "c", "1"),
            ],
            "b",
        );
    }

    // A read overlapping a put may see either the old or the new value.
    #[test]
    fn read_concurrent_with_put_may_see_either_value() {
        for seen in [Some("old"), Some("new")] {
            assert_linearizable(&[
                put(0, 0, 10, "k", "old"),
                put(0, 20, 40, "k", "new"),
                get(1, 25, 35, "k", seen),
            ]);
        }
        // Once a read saw the new value, a later read cannot go back to the old one.
        assert_illegal(
            &[
                put(0, 0, 10, "k", "old"),
                put(0, 20, 100, "k", "new"),
                get(1, 30, 40, "k", Some("new")),
                get(1, 50, 60, "k", Some("old")),
            ],
            "k",
        );
    }

    // Two concurrent CAS from the same expected value cannot both succeed; one can.
    #[test]
    fn concurrent_cas_from_same_value_at_most_one_succeeds() {
        let history = |second_succeeds| {
            vec![
                put(0, 0, 10, "k", "a"),
                cas(1, (20, 40), "k", Some("a"), "b", true),
                cas(2, (25, 45), "k", Some("a"), "c", second_succeeds),
            ]
        };
        assert_illegal(&history(true), "k");
        assert_linearizable(&history(false));
        // CAS on an absent key (expected None) is a create: the second must fail too.
        assert_illegal(
            &[
                cas(1, (0, 10), "k", None, "b", true),
                cas(2, (5, 15), "k", None, "c", true),
            ],
            "k",
        );
    }

    // A lost put may have taken effect at any time after its call, or never.
    #[test]
    fn unknown_put_may_or_may_not_take_effect() {
        // Read later: it took effect.
        assert_linearizable(&[
            put(0, 0, 10, "k", "a"),
            lost(put(1, 20, 0, "k", "b")),
            get(2, 1_000, 1_010, "k", Some("b")),
            get(2, 1_020, 1_030, "k", Some("b")),
        ]);
        // Never read: it did not, or was overwritten.
        assert_linearizable(&[
            lost(put(1, 0, 0, "k", "b")),
            get(2, 10, 20, "k", None),
            put(0, 30, 40, "k", "a"),
            get(2, 50, 60, "k", Some("a")),
        ]);
        // It cannot take effect before it was called.
        assert_illegal(
            &[get(2, 0, 10, "k", Some("b")), lost(put(1, 20, 0, "k", "b"))],
            "k",
        );
        // It takes effect at most once: "b" cannot come back after being overwritten.
        assert_illegal(
            &[
                lost(put(1, 0, 0, "k", "b")),
                get(2, 10, 20, "k", Some("b")),
                put(0, 30, 40, "k", "a"),
                get(2, 50, 60, "k", Some("b")),
            ],
            "k",
        );
    }

    // A read of a value that no request ever wrote is a violation, even among lost writes.
    #[test]
    fn read_of_unwritten_value_fails() {
        let explanation = assert_illegal(
            &[
                put(0, 0, 10, "k", "a"),
                lost(put(1, 5, 0, "k", "b")),
                get(2, 20, 30, "k", Some("z")),
            ],
            "k",
        );
        assert!(explanation.contains("get => \"z\""), "{explanation}");
    }

    // Lost CAS and delete take effect only as the model allows, if at all.
    #[test]
    fn unknown_cas_and_delete() {
        // A lost CAS whose comparison held may have written its value...
        assert_linearizable(&[
            put(0, 0, 10, "k", "a"),
            lost(cas(1, (20, 0), "k", Some("a"), "b", true)),
            get(2, 30, 40, "k", Some("b")),
        ]);
        // ...but not if its comparison could never hold.
        assert_illegal(
            &[
                put(0, 0, 10, "k", "a"),
                lost(cas(1, (20, 0), "k", Some("x"), "b", true)),
                get(2, 30, 40, "k", Some("b")),
            ],
            "k",
        );
        // A lost delete may have removed the key, or not.
        for seen in [None, Some("a")] {
            assert_linearizable(&[
                put(0, 0, 10, "k", "a"),
                lost(delete(1, 20, 0, "k", true)),
                get(2, 30, 40, "k", seen),
            ]);
        }
    }

    // A lost delete can be the only explanation of a read that follows other writes.
    #[test]
    fn lost_delete_explains_read_after_writes() {
        // Only cas, put, lost delete, get works; a search whose memo wrongly prunes a node for
        // having used fewer lost operations than an earlier one misses it.
        assert_linearizable(&[
            cas(0, (2, 6), "k", None, "a", true),
            get(1, 7, 10, "k", None),
            lost(delete(2, 5, 0, "k", true)),
            put(0, 0, 4, "k", "a"),
        ]);
    }

    // A response with a known return but unknown output happened inside its interval, or not.
    #[test]
    fn unknown_output_with_known_return() {
        let write = |ret| Operation {
            output: Output::Unknown,
            ..put(1, 20, ret, "k", "b")
        };
        for seen in [Some("a"), Some("b")] {
            assert_linearizable(&[
                put(0, 0, 10, "k", "a"),
                write(30),
                get(2, 40, 50, "k", seen),
            ]);
        }
        // Its effect, if any, happened before it returned: a read before it returned that saw
        // "a" and a later read that saw "b" after another "a" are contradictory.
        assert_illegal(
            &[
                put(0, 0, 10, "k", "a"),
                write(30),
                put(0, 40, 50, "k", "a"),
                get(2, 60, 70, "k", Some("b")),
            ],
            "k",
        );
    }

    // The search ends successfully when only unknown-outcome requests are left pending.
    #[test]
    fn only_unknown_outcomes_left_pending() {
        assert_linearizable(&[
            lost(put(0, 0, 0, "k", "a")),
            lost(cas(1, (1, 0), "k", None, "b", true)),
            lost(delete(2, 2, 0, "k", true)),
            lost(get(3, 3, 0, "k", None)),
        ]);
        let mut history = vec![put(0, 0, 10, "k", "a")];
        history.extend((0..200).map(|i| lost(put(i % 8, 20 + i as u64, 0, "k", "x"))));
        history.push(get(0, 500, 510, "k", Some("a")));
        assert_linearizable(&history);
    }

    // Delete reports whether the key existed and leaves it absent.
    #[test]
    fn delete_semantics() {
        assert_linearizable(&[
            delete(0, 0, 10, "k", false),
            put(0, 20, 30, "k", "a"),
            delete(1, 40, 50, "k", true),
            get(0, 60, 70, "k", None),
            delete(1, 80, 90, "k", false),
            cas(0, (100, 110), "k", None, "b", true),
            get(1, 120, 130, "k", Some("b")),
        ]);
        // Deleting an absent key cannot report that it existed.
        assert_illegal(&[delete(0, 0, 10, "k", true)], "k");
        // Deleting a present key cannot report that it did not exist.
        assert_illegal(
            &[put(0, 0, 10, "k", "a"), delete(1, 20, 30, "k", false)],
            "k",
        );
        // After a completed delete the old value is gone.
        assert_illegal(
            &[
                put(0, 0, 10, "k", "a"),
                delete(1, 20, 30, "k", true),
                get(0, 40, 50, "k", Some("a")),
            ],
            "k",
        );
        // Two concurrent deletes of one value cannot both have found it.
        assert_illegal(
            &[
                put(0, 0, 10, "k", "a"),
                delete(1, 20, 40, "k", true),
                delete(2, 25, 45, "k", true),
            ],
            "k",
        );
    }

    // A record that cannot be an observation (ret before call, wrong output) is malformed.
    #[test]
    fn malformed_operations_are_reported() {
        let backwards = get(0, 10, 5, "k", None);
        assert!(matches!(
            check(&[backwards]),
            CheckResult::Malformed { index: 0, .. }
        ));
        let mismatched = Operation {
            output: Output::Put,
            ..get(0, 0, 5, "k", None)
        };
        assert!(matches!(
            check(&[put(0, 0, 1, "a", "x"), mismatched]),
            CheckResult::Malformed { index: 1, .. }
        ));
    }

    // Histories of a simulated linearizable store pass, with lost responses and few values.
    #[test]
    fn random_linearizable_histories_pass() {
        for seed in 0..30 {
            let history = simulate(seed, &SMALL);
            let result = check(&history);
            assert!(result.is_ok(), "seed {seed}: {result}");
        }
        // One hot key, all eight clients always concurrent on it.
        let hot = Workload {
            keys: 1,
            ops: 2_000,
            ..SMALL
        };
        for seed in 0..3 {
            let result = check(&simulate(seed, &hot));
            assert!(result.is_ok(), "seed {seed}: {result}");
        }
    }

    // The intended scale, 10 keys × 2,000 operations by 8 clients, passes within the budget.
    #[test]
    fn large_random_history_passes() {
        let large = Workload {
            clients: 8,
            keys: 10,
            ops: 20_000,
            values: 1_000,
            lost_per_mille: 10,
        };
        let seed = 42;
        let result = check(&simulate(seed, &large));
        assert!(result.is_ok(), "seed {seed}: {result}");
    }

    // Changing one read to a value nobody wrote makes a simulated history fail on its key.
    #[test]
    fn corrupted_random_histories_fail() {
        for seed in 0..30 {
            let mut history = simulate(seed, &SMALL);
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| {
                    history[i].ret.is_some() && matches!(history[i].input, Input::Get { .. })
                })
                .collect();
            let victim = reads[rng.random_range(0..reads.len())];
            history[victim].output = Output::Get {
                value: Some("never-written".into()),
            };
            match check(&history) {
                CheckResult::Illegal { key, explanation } => {
                    assert_eq!(
                        key,
                        history[victim].input.key(),
                        "seed {seed}: wrong key:\n{explanation}"
                    );
                    assert!(
                        explanation.contains("never-written"),
                        "seed {seed}: the corrupted read is not named:\n{explanation}"
                    );
                }
                other => panic!("seed {seed}: corrupted read #{victim} not detected: {other}"),
            }
        }
    }

    /// Linearizability by brute force, straight from the definition: try every order in
    /// which each next operation was called before every unplaced completed one returned,
    /// letting an unknown outcome apply or not, and dropping lost requests never placed.
    fn linearizable_by_enumeration(history: &[Operation], state: Option<String>) -> bool {
        if history.iter().all(|op| op.ret.is_none()) {
            return true;
        }
        (0..history.len()).any(|next| {
            // Nothing unplaced returned before this was called (itself included: ret >= call).
            let call = history[next].call;
            if history
                .iter()
                .any(|other| other.ret.is_some_and(|ret| ret < call))
            {
                return false;
            }
            let mut rest = history.to_vec();
            let op = rest.remove(next);
            let mut store: HashMap<String, String> = HashMap::new();
            if let Some(value) = &state {
                store.insert(op.input.key().to_owned(), value.clone());
            }
            let output = apply(&mut store, &op.input);
            let after = store.remove(op.input.key());
            let unknown = op.ret.is_none() || op.output == Output::Unknown;
            ((unknown || output == op.output) && linearizable_by_enumeration(&rest, after))
                || (unknown && linearizable_by_enumeration(&rest, state.clone()))
        })
    }

    // On small random histories, legal and illegal, the search agrees with brute force.
    #[test]
    fn agrees_with_enumeration_on_small_histories() {
        // Many lost responses and unknown outputs exercise every reduction of the search.
        struct Shape {
            max_ops: usize,
            values: usize,
            lost_percent: u32,
            unknown_percent: u32,
            span: u64,
        }
        let shapes = [
            Shape {
                max_ops: 6,
                values: 2,
                lost_percent: 10,
                unknown_percent: 10,
                span: 20,
            },
            Shape {
                max_ops: 8,
                values: 3,
                lost_percent: 30,
                unknown_percent: 5,
                span: 30,
            },
            Shape {
                max_ops: 8,
                values: 2,
                lost_percent: 40,
                unknown_percent: 0,
                span: 15,
            },
        ];
        let names = ["a", "b", "c"];
        let (mut legal, mut illegal) = (0, 0);
        for (seed, shape) in (0u64..).zip(&shapes) {
            let mut rng = StdRng::seed_from_u64(seed);
            for case in 0..1_500 {
                let mut history = Vec::new();
                for client in 0..rng.random_range(1..=shape.max_ops) {
                    let call = rng.random_range(0..shape.span);
                    let ret = call + rng.random_range(0..shape.span / 2);
                    let value =
                        |rng: &mut StdRng| names[rng.random_range(0..shape.values)].to_owned();
                    let mut op = match rng.random_range(0..4) {
                        0 => {
                            let seen = rng.random_bool(0.7).then(|| value(&mut rng));
                            get(client, call, ret, "k", seen.as_deref())
                        }
                        1 => put(client, call, ret, "k", &value(&mut rng)),
                        2 => {
                            let expected = rng.random_bool(0.7).then(|| value(&mut rng));
                            let (new, succeeded) = (value(&mut rng), rng.random_bool(0.5));
                            let times = (call, ret);
                            cas(client, times, "k", expected.as_deref(), &new, succeeded)
                        }
                        _ => delete(client, call, ret, "k", rng.random_bool(0.5)),
                    };
                    if rng.random_range(0..100) < shape.lost_percent {
                        op = lost(op);
                    } else if rng.random_range(0..100) < shape.unknown_percent {
                        op.output = Output::Unknown;
                    }
                    history.push(op);
                }
                let expected = linearizable_by_enumeration(&history, None);
                let result = check(&history);
                assert_eq!(
                    result.is_ok(),
                    expected,
                    "seed {seed} case {case}: enumeration says {expected}, search says \
                     {result}\n{history:#?}"
                );
                if expected {
                    legal += 1;
                } else {
                    illegal += 1;
                }
            }
        }
        // Both verdicts were exercised, many times.
        assert!(
            legal > 1_000 && illegal > 1_000,
            "{legal} legal, {illegal} illegal"
        );
    }

    // A search that runs out of budget says so instead of running on.
    #[test]
    fn budget_exceeded_is_reported() {
        let history = simulate(
            1,
            &Workload {
                keys: 1,
                ops: 2_000,
                ..SMALL
            },
        );
        match check_with_budget(&history, 100) {
            CheckResult::BudgetExceeded { key, max_steps } => {
                assert_eq!((key.as_str(), max_steps), ("k0", 100));
            }
            other => panic!("expected the budget to run out, got: {other}"),
        }
        // A violation found on another key is still reported, being a definite verdict.
        let mut history = history;
        history.push(put(0, 0, 1, "a", "x"));
        history.push(get(0, 2, 3, "a", None));
        assert!(matches!(
            check_with_budget(&history, 100),
            CheckResult::Illegal { key, .. } if key == "a"
        ));
    }
}
