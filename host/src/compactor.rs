//! Auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`), with etcd's
//! meaning. Only the leader runs it, and it compacts through Raft like a client's Compact.
//!
//! - **revision**: every check interval (etcd: fixed at 5 minutes; Cairn's
//!   `--auto-compaction-check-interval`), compact to `current revision - retention`, unless
//!   that is not positive or was already done.
//! - **periodic**: keep about `retention` worth of history. The compactor samples the
//!   revision every tenth of the compaction interval (the retention, at most an hour) and
//!   compacts to the revision it sampled `retention` ago: first once a whole retention has
//!   passed, then every compaction interval.
//!
//! [`Compactor`] reads no clock: `tick(now, revision)` returns what to compact, so its unit
//! tests move time by hand (`server.rs` runs the loop).

use std::collections::VecDeque;
use std::time::Duration;

/// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions, checking at the given interval.
    Revision { keep: i64, every: Duration },
}

impl Policy {
    /// Parses etcd's flags; `Ok(None)` when auto-compaction is off (retention 0). A periodic
    /// retention is a duration (`30m`, `1h`) or a number of hours (`1`), as in etcd.
    pub fn parse(mode: &str, retention: &str, every: Duration) -> Result<Option<Policy>, String> {
        let bad = |why: &str| format!("invalid --auto-compaction-retention {retention:?}: {why}");
        match mode {
            "periodic" => {
                let period = match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours * 3600),
                    Err(_) => crate::config::parse_go_duration(retention).ok_or_else(|| {
                        bad("expected a number of hours or a duration such as 30m")
                    })?,
                };
                Ok((!period.is_zero()).then_some(Policy::Periodic(period)))
            }
            "revision" => {
                let keep: i64 = retention
                    .parse()
                    .map_err(|_| bad("expected a number of revisions"))?;
                if keep < 0 {
                    return Err(bad("must not be negative"));
                }
                Ok((keep > 0).then_some(Policy::Revision { keep, every }))
            }
            other => Err(format!(
                "invalid --auto-compaction-mode {other:?}: expected periodic or revision"
            )),
        }
    }
}

/// The decisions of one leader's term of auto-compaction.
#[derive(Debug)]
pub struct Compactor {
    policy: Policy,
    /// When the compactor (re)started or last compacted, in ms of the caller's clock.
    last_success_ms: u64,
    /// Periodic: the wait before the next compaction (the retention first, then the interval).
    wait: Duration,
    /// Periodic: revisions sampled at each tick, oldest first.
    samples: VecDeque<i64>,
    /// The last revision compacted to.
    done: i64,
}

impl Compactor {
    pub fn new(policy: Policy, now_ms: u64) -> Compactor {
        let wait = match policy {
            Policy::Periodic(period) => period,
            Policy::Revision { every, .. } => every,
        };
        Compactor {
            policy,
            last_success_ms: now_ms,
            wait,
            samples: VecDeque::new(),
            done: 0,
        }
    }

    /// How often [`Compactor::tick`] wants to be called.
    pub fn tick_every(&self) -> Duration {
        match self.policy {
            Policy::Periodic(_) => (self.interval() / 10).max(Duration::from_millis(1)),
            Policy::Revision { every, .. } => every,
        }
    }

    /// Periodic: the compaction interval (the retention, at most an hour).
    fn interval(&self) -> Duration {
        match self.policy {
            Policy::Periodic(period) => period.min(Duration::from_secs(3600)),
            Policy::Revision { every, .. } => every,
        }
    }

    /// One tick at `now_ms` with the store at `revision`: the revision to compact to, if it
    /// is time. The caller proposes it and reports back with [`Compactor::compacted`].
    pub fn tick(&mut self, now_ms: u64, revision: i64) -> Option<i64> {
        match self.policy {
            Policy::Revision { keep, .. } => {
                let target = revision - keep;
                (target > 0 && target != self.done).then_some(target)
            }
            Policy::Periodic(period) => {
                let decision = if now_ms.saturating_sub(self.last_success_ms)
                    >= self.wait.as_millis() as u64
                {
                    self.samples
                        .front()
                        .copied()
                        .filter(|rev| *rev > 0 && *rev != self.done)
                } else {
                    None
                };
                // Enough samples that the oldest is one retention old.
                let keep = (period.as_millis() / self.tick_every().as_millis().max(1)) as usize + 1;
                self.samples.push_back(revision);
                while self.samples.len() > keep {
                    self.samples.pop_front();
                }
                decision
            }
        }
    }

    /// The compaction to `revision` is done (or was already: etcd's `compacted` counts too).
    pub fn compacted(&mut self, now_ms: u64, revision: i64) {
        self.done = revision;
        self.last_success_ms = now_ms;
        self.wait = self.interval();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn flags_parse_as_etcds() {
        let every = Duration::from_secs(300);
        assert_eq!(Policy::parse("periodic", "0", every), Ok(None));
        assert_eq!(
            Policy::parse("periodic", "1", every),
            Ok(Some(Policy::Periodic(Duration::from_secs(3600))))
        );
        assert_eq!(
            Policy::parse("periodic", "30m", every),
            Ok(Some(Policy::Periodic(Duration::from_secs(1800))))
        );
        assert_eq!(
            Policy::parse("periodic", "1h30m", every),
            Ok(Some(Policy::Periodic(Duration::from_secs(5400))))
        );
        assert_eq!(
            Policy::parse("revision", "1000", every),
            Ok(Some(Policy::Revision { keep: 1000, every }))
        );
        assert_eq!(Policy::parse("revision", "0", every), Ok(None));
        for (mode, retention) in [
            ("revision", "1h"),
            ("revision", "-5"),
            ("periodic", "soon"),
            ("hourly", "1"),
        ] {
            assert!(
                Policy::parse(mode, retention, every).is_err(),
                "{mode} {retention}"
            );
        }
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions() {
        let every = Duration::from_secs(300);
        let mut c = Compactor::new(Policy::Revision { keep: 1000, every }, 0);
        assert_eq!(c.tick_every(), every);
        assert_eq!(c.tick(5 * MIN, 900), None, "nothing to compact yet");
        assert_eq!(c.tick(10 * MIN, 5000), Some(4000));
        c.compacted(10 * MIN, 4000);
        assert_eq!(c.tick(15 * MIN, 5000), None, "no writes since: nothing new");
        assert_eq!(c.tick(20 * MIN, 5600), Some(4600));
    }

    #[test]
    fn periodic_mode_compacts_to_what_it_saw_one_retention_ago() {
        // One hour: compaction every hour, samples every 6 minutes.
        let mut c = Compactor::new(Policy::Periodic(Duration::from_secs(3600)), 0);
        assert_eq!(c.tick_every(), Duration::from_secs(360));
        // The store gains 100 revisions a minute; the first tick comes at the start.
        let rev_at = |now: u64| 1 + (now / MIN) as i64 * 100;
        let mut now = 0;
        let mut first = c.tick(now, rev_at(now));
        while first.is_none() {
            now += 6 * MIN;
            first = c.tick(now, rev_at(now));
        }
        assert_eq!(now, 60 * MIN, "not before a whole retention has passed");
        assert_eq!(
            first,
            Some(rev_at(0)),
            "the revision sampled an hour before"
        );
        c.compacted(now, rev_at(0));
        let mut next = None;
        while next.is_none() {
            now += 6 * MIN;
            next = c.tick(now, rev_at(now));
        }
        assert_eq!(now, 120 * MIN, "then every interval");
        // As etcd's: the oldest of the samples kept, one retention plus one tick back.
        assert_eq!(next, Some(rev_at(54 * MIN)));
    }

    #[test]
    fn a_long_retention_compacts_hourly() {
        // Ten hours: samples every 6 minutes, compactions hourly after the first ten hours.
        let mut c = Compactor::new(Policy::Periodic(Duration::from_secs(36_000)), 0);
        assert_eq!(c.tick_every(), Duration::from_secs(360));
        let mut now = 0;
        let mut hits = Vec::new();
        while now < 12 * 60 * MIN {
            now += 6 * MIN;
            if let Some(rev) = c.tick(now, (now / MIN) as i64) {
                c.compacted(now, rev);
                hits.push((now / MIN, rev));
            }
        }
        assert_eq!(hits[0].0, 600, "first after ten hours");
        assert_eq!(hits[1].0 - hits[0].0, 60, "then hourly");
        for (at, rev) in hits {
            assert!(
                at as i64 - rev >= 600 - 6,
                "keeps about ten hours: {at} {rev}"
            );
        }
    }
}
