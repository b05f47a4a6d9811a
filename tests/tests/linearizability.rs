//! Linearizability of Cairn's KV under faults: concurrent clients do gets, puts and
//! compare-and-swap txns on a few keys of a 3-member cluster while a seeded nemesis kills
//! (kill -9) and pauses (SIGSTOP) members: the faults that need real processes. Partitions,
//! drops, delays and in-process restarts run in `tests/tests/schedules.rs`, hundreds of
//! schedules per run. Every operation is recorded with its invocation and completion time
//! (`cairn_tests::recorder`); `cairn_tests::linearizability` checks the history.
//!
//! `CAIRN_LIN_SEED=<n>` replays a run (the seed is printed, and named on failure);
//! `CAIRN_LIN_SECONDS` sets how long the nemesis runs (default 15). On failure the whole
//! history (with the member each request went to and the revisions it answered), the faults
//! and every member's log are written to a directory named in the failure message
//! (`CAIRN_LIN_KEEP` chooses it); `CAIRN_LOG_LEVEL=debug` makes the member logs verbose.

use std::time::{Duration, Instant};

use cairn_tests::cluster::connect;
use cairn_tests::converge::wait_converged;
use cairn_tests::linearizability::{CheckResult, Operation, check};
use cairn_tests::recorder::{Clients, Recorded, Trace};
use cairn_tests::{Cluster, Flavor, with_timeout};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: usize = 4;
const CLIENTS: usize = 6;
/// A client gives up on a request after this long and records its outcome as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

fn seed() -> u64 {
    std::env::var("CAIRN_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn nemesis_seconds() -> u64 {
    std::env::var("CAIRN_LIN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

/// The faults, one at a time, each followed by a quiet moment.
async fn nemesis(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seconds: u64,
    start: Instant,
) -> Vec<String> {
    let mut log = Vec::new();
    let at = || format!("t={:.3}s", start.elapsed().as_secs_f64());
    let end = Instant::now() + Duration::from_secs(seconds);
    let size = cluster.members.len();
    while Instant::now() < end {
        let victim = rng.random_range(0..size);
        let hold = Duration::from_millis(rng.random_range(500..2500));
        if rng.random_bool(0.5) {
            log.push(format!("{} kill -9 m{victim} for {hold:?}", at()));
            cluster.members[victim].kill9();
            tokio::time::sleep(hold).await;
            cluster.members[victim].restart();
        } else {
            log.push(format!("{} SIGSTOP m{victim} for {hold:?}", at()));
            cluster.members[victim].pause();
            tokio::time::sleep(hold).await;
            cluster.members[victim].resume();
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1000))).await;
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_is_linearizable_under_kills_and_pauses() {
    // Proves gets, puts and compare-and-swaps stay linearizable while members are killed
    // and paused (outcomes the clients could not learn count as unknown).
    let seed = seed();
    println!("linearizability seed: {seed} (CAIRN_LIN_SEED={seed} replays it)");
    let seconds = nemesis_seconds();
    with_timeout(Duration::from_secs(seconds + 240), "linearizability run", async {
        let mut cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
        let clients = Clients::start(CLIENTS, KEYS, OP_TIMEOUT, &cluster.endpoints(), seed);
        let start = clients.started();
        let mut rng = StdRng::seed_from_u64(seed);
        let faults = nemesis(&mut cluster, &mut rng, seconds, start).await;
        // A quiet end, so the last operations complete against a healthy cluster.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let recorded = clients.stop().await.expect("clients");
        let history: Vec<Operation> = recorded.iter().map(|(op, _)| op.clone()).collect();
        let completed = history.iter().filter(|op| op.ret.is_some()).count();
        println!(
            "{} operations ({completed} completed), faults: {faults:?}",
            history.len()
        );
        assert!(
            completed > 200,
            "too few operations completed ({completed}) for the check to mean anything (seed {seed})"
        );
        let result = tokio::task::spawn_blocking(move || check(&history))
            .await
            .expect("checker panicked");
        if !matches!(result, CheckResult::Ok) {
            let kept = keep_evidence(seed, &cluster, &recorded, &faults);
            panic!("seed {seed}: {result}\nfaults: {faults:?}\nevidence kept in {kept}");
        }
        wait_converged(&cluster, Duration::from_secs(60)).await;
        // A final read on every member agrees with the others (HashKV above says the state
        // does; this checks the members answer reads).
        for m in &cluster.members {
            let mut c = connect(&m.endpoint()).await;
            c.get("lin/0", None).await.expect("read after the run");
        }
    })
    .await;
}

/// Writes the history (sorted by call, with traces), the faults and the member logs to a
/// directory that outlives the test; returns its path.
fn keep_evidence(seed: u64, cluster: &Cluster, recorded: &Recorded, faults: &[String]) -> String {
    let dir = std::env::var("CAIRN_LIN_KEEP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("cairn-lin-{seed}")));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return format!("(nowhere: cannot create {}: {e})", dir.display());
    }
    let mut ops: Vec<&(Operation, Trace)> = recorded.iter().collect();
    ops.sort_by_key(|(op, _)| (op.input.key().to_owned(), op.call));
    let ms = |ns: u64| format!("{:.3}", ns as f64 / 1e6);
    let mut text = String::new();
    for (op, t) in ops {
        let ret = op.ret.map_or("-".to_owned(), ms);
        text.push_str(&format!(
            "{} {} c{} m{} {:?} => {:?} rev={} mod_rev={} {}\n",
            ms(op.call),
            ret,
            op.client,
            t.member,
            op.input,
            op.output,
            t.revision,
            t.mod_revision,
            t.error
        ));
    }
    let mut written = std::fs::write(dir.join("history.txt"), text)
        .and_then(|()| std::fs::write(dir.join("faults.txt"), faults.join("\n")));
    for m in &cluster.members {
        written =
            written.and_then(|()| std::fs::write(dir.join(format!("{}.log", m.name)), m.log()));
    }
    match written {
        Ok(()) => dir.display().to_string(),
        Err(e) => format!("{} (incomplete: {e})", dir.display()),
    }
}
