//! What stands between an unauthenticated caller and the password hash: the pool that bounds how many argon2
//! hashes run at once (each takes 19 MiB and a core for tens of milliseconds), and the record of failed logins
//! that slows a guessing source and a guessed user down with growing waits, and then locks the user, as
//! Keystone's `lockout_failure_attempts` / `lockout_duration` do.
//!
//! Both live in this process's memory: a restart forgets the failures (a lockout is short anyway), and the
//! record is bounded so that guesses at random user names cannot grow it without end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::error::CloudError;
use crate::timing::LoginPolicy;

/// Who a login's failures count against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The user, by id if it exists, else by the name or id given (unknown names are tracked the same way,
    /// so a lockout does not tell which names exist).
    User(String),
    Source(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
    /// No attempt of this subject is let through before this instant.
    blocked_until: Option<Instant>,
    /// The block is a lockout, not a wait.
    locked: bool,
}

impl Failures {
    fn new(now: Instant) -> Failures {
        Failures { count: 0, last: now, blocked_until: None, locked: false }
    }
}

/// Why a login is refused before its password is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The user is locked out.
    Locked { retry_after: Duration },
    /// The user must wait before their next attempt.
    UserWaits { retry_after: Duration },
    /// The source must wait before its next attempt.
    SourceWaits { retry_after: Duration },
}

impl Refusal {
    pub fn into_error(self) -> CloudError {
        match self {
            Refusal::Locked { retry_after } => CloudError::Unauthorized(format!(
                "The account is locked after repeated failed logins; try again in {} s.",
                secs(retry_after)
            )),
            Refusal::UserWaits { retry_after } => CloudError::TooManyRequests {
                message: format!(
                    "Too many failed logins for this user; wait {} s before the next attempt.",
                    secs(retry_after)
                ),
                retry_after_secs: secs(retry_after),
            },
            Refusal::SourceWaits { retry_after } => CloudError::TooManyRequests {
                message: format!(
                    "Too many failed logins from this address; wait {} s before the next attempt.",
                    secs(retry_after)
                ),
                retry_after_secs: secs(retry_after),
            },
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Locked { .. } => "the user is locked out",
            Refusal::UserWaits { .. } => "the user must wait after failed logins",
            Refusal::SourceWaits { .. } => "the source address must wait after failed logins",
        }
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The failed logins of recent users and sources: a pure record, given the time by its caller.
#[derive(Debug)]
pub struct FailedLogins {
    policy: LoginPolicy,
    failures: HashMap<Subject, Failures>,
}

impl FailedLogins {
    pub fn new(policy: LoginPolicy) -> FailedLogins {
        FailedLogins { policy, failures: HashMap::new() }
    }

    /// Whether a login of `user` from `source` may check its password now.
    pub fn check(&self, user: &Subject, source: &Subject, now: Instant) -> Result<(), Refusal> {
        let waiting = |subject: &Subject| {
            let f = self.failures.get(subject)?;
            let left = f.blocked_until?.checked_duration_since(now).filter(|d| !d.is_zero())?;
            Some((left, f.locked))
        };
        match (waiting(user), waiting(source)) {
            (Some((retry_after, true)), _) => Err(Refusal::Locked { retry_after }),
            (Some((retry_after, false)), _) => Err(Refusal::UserWaits { retry_after }),
            (None, Some((retry_after, _))) => Err(Refusal::SourceWaits { retry_after }),
            (None, None) => Ok(()),
        }
    }

    /// Records a failed password check.
    pub fn failed(&mut self, user: Subject, source: Subject, now: Instant) {
        if self.failures.len() + 2 > self.policy.max_tracked {
            self.make_room(now);
        }
        let p = &self.policy;
        for subject in [user, source] {
            let entry = self.failures.entry(subject.clone()).or_insert(Failures::new(now));
            if entry.locked && entry.blocked_until > Some(now) {
                // Guesses that were already hashing when the lockout began do not lift it.
                entry.last = now;
                continue;
            }
            if now.duration_since(entry.last) >= p.forget_after {
                *entry = Failures::new(now);
            }
            entry.count += 1;
            entry.last = now;
            let free = match subject {
                Subject::User(_) => p.free_failures_per_user,
                Subject::Source(_) => p.free_failures_per_source,
            };
            entry.locked = matches!(subject, Subject::User(_)) && entry.count >= p.lockout_failure_attempts;
            entry.blocked_until = if entry.locked {
                // The count starts again once the lockout is over.
                entry.count = 0;
                Some(now + p.lockout_duration)
            } else {
                entry.count.checked_sub(free).filter(|beyond| *beyond > 0).map(|beyond| {
                    let doubled = p.first_delay.saturating_mul(1u32 << (beyond - 1).min(20));
                    now + doubled.min(p.max_delay)
                })
            };
        }
    }

    /// Forgets quiet subjects; if that is not enough, those not blocked now, and only then blocked ones, so
    /// that a flood of new names does not lift a lockout.
    fn make_room(&mut self, now: Instant) {
        let forget_after = self.policy.forget_after;
        self.failures.retain(|_, f| now.duration_since(f.last) < forget_after || f.blocked_until > Some(now));
        let excess = (self.failures.len() + 2).saturating_sub(self.policy.max_tracked);
        let mut victims: Vec<Subject> = self
            .failures
            .iter()
            .filter(|(_, f)| f.blocked_until <= Some(now))
            .map(|(k, _)| k.clone())
            .take(excess)
            .collect();
        if victims.len() < excess {
            let more: Vec<Subject> =
                self.failures.keys().filter(|k| !victims.contains(k)).take(excess - victims.len()).cloned().collect();
            victims.extend(more);
        }
        for victim in victims {
            self.failures.remove(&victim);
        }
    }

    /// Records a successful login: the user's failures are forgotten. The source's are not, so a guesser
    /// cannot clear its record by logging in to an account of its own between guesses.
    pub fn succeeded(&mut self, user: &Subject) {
        self.failures.remove(user);
    }

    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

/// Runs password hashes on `workers` threads of its own, with at most `queue` more waiting; beyond that a
/// login is refused at once (503 with Retry-After) instead of holding memory for it. The threads are its own,
/// not the runtime's blocking pool, because the allocator keeps each hash's 19 MiB in the arena of the
/// thread that ran it: on a few fixed threads that is a few arenas, on whatever blocking threads happen to
/// run it, up to the allocator's limit of arenas.
#[derive(Debug)]
pub struct HashPool {
    jobs: std::sync::mpsc::Sender<Job>,
    admitted: Arc<AtomicUsize>,
    limit: usize,
}

type Job = Box<dyn FnOnce() + Send>;

impl HashPool {
    /// Starts the worker threads; they end when the pool is dropped.
    pub fn new(workers: usize, queue: usize) -> HashPool {
        let (jobs, queued) = std::sync::mpsc::channel::<Job>();
        let queued = Arc::new(Mutex::new(queued));
        for n in 0..workers.max(1) {
            let queued = queued.clone();
            let spawned = std::thread::Builder::new().name(format!("password-hash-{n}")).spawn(move || {
                loop {
                    let job = queued.lock().expect("the hash queue is never poisoned").recv();
                    match job {
                        // A panicking job answers its caller with an error (its sender is dropped) and
                        // leaves the worker running.
                        Ok(job) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))),
                        Err(_) => break,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-hash thread");
            }
        }
        HashPool { jobs, admitted: Arc::new(AtomicUsize::new(0)), limit: workers.max(1) + queue }
    }

    /// A pool sized for this machine: one worker per core, at most 4 (19 MiB each, and logins need no
    /// more), two waiting per worker.
    pub fn for_this_machine() -> HashPool {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
        HashPool::new(workers, 2 * workers)
    }

    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, CloudError> {
        let busy = || CloudError::Busy {
            message: "Too many password checks are in progress; try again shortly.".into(),
            retry_after_secs: 1,
        };
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        /// Counts the job out however it ends: run, panicked, or dropped unrun.
        struct Admitted(Arc<AtomicUsize>);
        impl Drop for Admitted {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let admitted = Admitted(self.admitted.clone());
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = work();
            // Counted out before the caller hears, so a caller that asks next finds room.
            drop(admitted);
            let _ = done.send(result);
        });
        if self.jobs.send(job).is_err() {
            return Err(CloudError::Internal("no password-hash thread is running".into()));
        }
        result.await.map_err(|_| CloudError::Internal("a password hash failed".into()))
    }
}

/// The guard of one cloud's logins.
#[derive(Debug)]
pub struct LoginGuard {
    pub pool: HashPool,
    failures: Mutex<FailedLogins>,
}

impl LoginGuard {
    pub fn new(policy: LoginPolicy) -> LoginGuard {
        LoginGuard { pool: HashPool::for_this_machine(), failures: Mutex::new(FailedLogins::new(policy)) }
    }

    pub fn check(&self, user: &Subject, source: &Subject) -> Result<(), Refusal> {
        self.failures.lock().expect("the failed-login record is never poisoned").check(user, source, Instant::now())
    }

    pub fn failed(&self, user: Subject, source: Subject) {
        self.failures.lock().expect("the failed-login record is never poisoned").failed(user, source, Instant::now())
    }

    pub fn succeeded(&self, user: &Subject) {
        self.failures.lock().expect("the failed-login record is never poisoned").succeeded(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LoginPolicy {
        LoginPolicy {
            free_failures_per_user: 1,
            lockout_failure_attempts: 3,
            lockout_duration: Duration::from_secs(60),
            free_failures_per_source: 2,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            forget_after: Duration::from_secs(600),
            max_tracked: 100,
        }
    }

    fn user(name: &str) -> Subject {
        Subject::User(name.into())
    }

    fn source(last: u8) -> Subject {
        Subject::Source(IpAddr::from([192, 0, 2, last]))
    }

    /// Replays failures (`f user source at-second`) and checks (`? user source at-second => answer`).
    fn replay(script: &str) {
        let start = Instant::now();
        let mut record = FailedLogins::new(policy());
        for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (u, s) = (user(words[1]), source(words[2].parse().unwrap()));
            let at = start + Duration::from_secs(words[3].parse().unwrap());
            match words[0] {
                "f" => record.failed(u, s, at),
                "ok" => record.succeeded(&u),
                "?" => {
                    let got = match record.check(&u, &s, at) {
                        Ok(()) => "pass".to_string(),
                        Err(Refusal::Locked { retry_after }) => format!("locked {}", secs(retry_after)),
                        Err(Refusal::UserWaits { retry_after }) => format!("user waits {}", secs(retry_after)),
                        Err(Refusal::SourceWaits { retry_after }) => format!("wait {}", secs(retry_after)),
                    };
                    assert_eq!(got, words[5..].join(" "), "{line}");
                }
                other => panic!("unknown step {other}"),
            }
        }
    }

    #[test]
    fn a_guessed_user_waits_longer_after_each_failure_then_is_locked_whatever_password_comes_next() {
        replay(
            "f alice 1 0
             ? alice 2 0 => pass
             f alice 2 0
             ? alice 3 0 => user waits 1
             ? alice 3 1 => pass
             f alice 3 1
             ? alice 4 10 => locked 51
             f alice 5 11
             ? alice 4 12 => locked 49
             ? bob 4 10 => pass
             ? alice 4 61 => pass",
        );
    }

    #[test]
    fn a_success_forgets_the_users_failures() {
        replay(
            "f alice 1 0
             f alice 2 0
             ok alice 1 2
             f alice 3 2
             ? alice 4 2 => pass",
        );
    }

    #[test]
    fn a_guessing_source_waits_longer_after_each_failure_beyond_its_free_ones() {
        replay(
            "f a 7 0
             f b 7 0
             ? c 7 0 => pass
             f c 7 0
             ? d 7 0 => wait 1
             ? d 8 0 => pass
             f d 7 1
             ? e 7 1 => wait 2
             f e 7 3
             f f 7 7
             f g 7 15
             ? h 7 15 => wait 8
             f h 7 23
             ? i 7 23 => wait 8",
        );
    }

    #[test]
    fn a_success_does_not_clear_the_sources_record() {
        replay(
            "f a 7 0
             f b 7 0
             f c 7 0
             ok mine 7 0
             ? mine 7 0 => wait 1",
        );
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_while() {
        replay(
            "f alice 1 0
             f alice 1 0
             f alice 1 700
             ? alice 2 700 => pass
             ? x 1 700 => pass",
        );
    }

    #[test]
    fn the_record_stays_bounded() {
        let start = Instant::now();
        let mut record = FailedLogins::new(policy());
        for n in 0..1000u32 {
            record.failed(
                user(&format!("guess-{n}")),
                source((n % 250) as u8),
                start + Duration::from_millis(n.into()),
            );
        }
        assert!(record.tracked() <= 100, "{}", record.tracked());
    }

    #[tokio::test]
    async fn the_hash_pool_refuses_beyond_its_queue() {
        let pool = std::sync::Arc::new(HashPool::new(1, 1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = std::sync::Arc::new(Mutex::new(wait));
        let blocked = |pool: std::sync::Arc<HashPool>, wait: std::sync::Arc<Mutex<std::sync::mpsc::Receiver<()>>>| {
            tokio::spawn(async move { pool.run(move || wait.lock().unwrap().recv().unwrap()).await })
        };
        let first = blocked(pool.clone(), wait.clone());
        let second = blocked(pool.clone(), wait.clone());
        while pool.admitted.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        let third = pool.run(|| ()).await;
        assert!(matches!(third, Err(CloudError::Busy { retry_after_secs: 1, .. })), "{third:?}");
        release.send(()).unwrap();
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        assert!(pool.run(|| 7).await.is_ok_and(|n| n == 7), "the pool takes work again");
        let panicked = pool.run(|| -> u8 { panic!("a broken hash") }).await;
        assert!(matches!(panicked, Err(CloudError::Internal(_))), "{panicked:?}");
        assert!(pool.run(|| 8).await.is_ok_and(|n| n == 8), "the worker survived the panic");
        assert_eq!(pool.admitted.load(Ordering::Acquire), 0, "every job was counted out");
    }
}
