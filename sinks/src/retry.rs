//! How remote sinks retry an operation that failed for a transient reason.
//!
//! One policy for every remote backend ([`s3`](crate::s3), [`nfs`](crate::nfs)): an operation
//! that fails transiently (a refused or dropped connection, a timeout, a busy server) is tried
//! again after an exponential, jittered backoff, until it succeeds, fails permanently, or
//! [`RetryPolicy::deadline`] has passed since its first try. The deadline bounds the wait, not
//! the number of tries, so a server restart that takes a few seconds is ridden out and a
//! server that stays away fails the operation after a known time. A try already running when
//! the deadline passes is not cut short (each backend bounds one try by its own timeout).
//!
//! The last try starts before the deadline: the wait before it is cut short to fit. A sink
//! whose operation gave up at the deadline is taken to be away: its next operations are tried
//! once, without retries, until one succeeds, so the cleanup after a failure (releasing a lock)
//! does not wait out another deadline.
//!
//! A process that is stopping (ferry got SIGINT, SIGTERM or SIGHUP) calls [`stop_retrying`]:
//! waits between tries end at once, no new try starts, and a backend awaiting a reply gives up
//! on it ([`stopping`]), so an outage or a server that stopped answering cannot hold an orderly
//! stop.
//!
//! While a sink retries, the user hears about it: the first transient failure is logged as a
//! warning naming the location, the operation and the failure, and later ones at most every
//! [`WARNING_INTERVAL`], so many uploader threads meeting one outage print one line, not one
//! each.

use std::fmt;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::SinkError;

/// Environment variable overriding [`RetryPolicy::DEFAULT_DEADLINE`], in whole seconds
/// (`0`: never retry).
pub const DEADLINE_ENV: &str = "FERRY_RETRY_TIMEOUT";
/// Largest [`DEADLINE_ENV`] value: a day.
pub const MAX_DEADLINE_SECONDS: u64 = 86_400;
/// Shortest time between two retry warnings of one sink.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Whether [`stop_retrying`] was called, and the waits it wakes.
static STOPPING: Mutex<bool> = Mutex::new(false);
static STOPPING_CHANGED: Condvar = Condvar::new();

/// Wakes the requests awaiting [`stopping`].
static STOPPING_NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Ends every retry in this process: waiting operations fail at once with their last error,
/// requests in flight are abandoned, and no operation retries from now on. For a process that
/// is stopping.
pub fn stop_retrying() {
    *STOPPING.lock().unwrap_or_else(PoisonError::into_inner) = true;
    STOPPING_CHANGED.notify_all();
    STOPPING_NOTIFY.notify_waiters();
}

/// Whether [`stop_retrying`] has been called.
pub fn is_stopping() -> bool {
    *STOPPING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Completes once [`stop_retrying`] has been called (at once if it already was): a request
/// races its reply against this.
pub async fn stopping() {
    let notified = STOPPING_NOTIFY.notified();
    tokio::pin!(notified);
    // Registered before the check, so a stop between the two is not missed.
    notified.as_mut().enable();
    if is_stopping() {
        return;
    }
    notified.await;
}

/// Waits `duration` unless [`stop_retrying`] is (or gets) called; true if it was.
fn wait_unless_stopping(duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    let mut stopping = STOPPING.lock().unwrap_or_else(PoisonError::into_inner);
    while !*stopping {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stopping = STOPPING_CHANGED
            .wait_timeout(stopping, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

/// When a transiently failing operation is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// No new try starts once this much time has passed since the first one.
    pub deadline: Duration,
    /// Wait before the second try; each later wait doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy::with_deadline(RetryPolicy::DEFAULT_DEADLINE)
    }
}

impl RetryPolicy {
    /// Default time spent retrying one operation.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

    /// The default backoff with another deadline.
    pub fn with_deadline(deadline: Duration) -> RetryPolicy {
        RetryPolicy {
            deadline,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }

    /// The default policy, with the deadline from [`DEADLINE_ENV`] when it is set.
    pub fn from_env() -> Result<RetryPolicy, SinkError> {
        match std::env::var(DEADLINE_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(RetryPolicy::default()),
            Ok(value) if value.is_empty() => Ok(RetryPolicy::default()),
            Ok(value) => match value.trim().parse::<u64>() {
                Ok(seconds) if seconds <= MAX_DEADLINE_SECONDS => {
                    Ok(RetryPolicy::with_deadline(Duration::from_secs(seconds)))
                }
                Ok(_) => Err(SinkError::Setting {
                    name: DEADLINE_ENV,
                    reason: format!(
                        "{value} seconds is too long (at most {MAX_DEADLINE_SECONDS}, a day)"
                    ),
                }),
                Err(_) => Err(SinkError::Setting {
                    name: DEADLINE_ENV,
                    reason: format!("{value:?} is not a whole number of seconds"),
                }),
            },
            Err(std::env::VarError::NotUnicode(_)) => Err(SinkError::Setting {
                name: DEADLINE_ENV,
                reason: "the value is not UTF-8".to_owned(),
            }),
        }
    }

    /// The wait after the `failures`-th failure (1-based): doubling from `first_backoff`,
    /// capped at `max_backoff`, then scaled by a random factor in [0.5, 1] so threads failing
    /// together do not retry in lockstep.
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .first_backoff
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        doubled
            .min(self.max_backoff)
            .mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// An operation that failed for good: its last error, and how hard it was tried.
#[derive(Debug)]
pub(crate) struct GaveUp<E> {
    pub(crate) error: E,
    pub(crate) tries: u32,
    pub(crate) elapsed: Duration,
    /// Retrying ended because the process is stopping.
    pub(crate) stopped: bool,
    /// The last failure was transient (the operation was given up, not refused).
    pub(crate) transient: bool,
}

impl<E> GaveUp<E> {
    /// " (gave up after 7 tries in 121 s)" when the operation was retried or its failure was
    /// transient, " (retrying ended after 2 tries: stopping)" when a stop ended it, else "".
    pub(crate) fn retried_suffix(&self) -> String {
        if self.stopped {
            format!(" (retrying ended after {} tries: stopping)", self.tries)
        } else if self.tries > 1 || self.transient {
            let tries = match self.tries {
                1 => "1 try".to_owned(),
                n => format!("{n} tries"),
            };
            format!(
                " (gave up after {tries} in {:.0} s)",
                self.elapsed.as_secs_f64()
            )
        } else {
            String::new()
        }
    }
}

/// A [`RetryPolicy`] applied by one sink, with that sink's warning throttle.
pub(crate) struct Retrier {
    policy: RetryPolicy,
    /// The sink's location, for warnings.
    location: String,
    last_warning: Mutex<Option<Instant>>,
    /// Set when an operation gave up at the deadline, cleared by the next success: while set,
    /// operations are tried once.
    away: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Retrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retrier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Retrier {
    pub(crate) fn new(policy: RetryPolicy, location: impl Into<String>) -> Retrier {
        Retrier {
            policy,
            location: location.into(),
            last_warning: Mutex::new(None),
            away: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Runs `attempt` (given the 1-based try number) until it succeeds, fails with an error
    /// `transient` rejects, or the policy's deadline has passed (see the module docs);
    /// `describe` says what a failure was, for warnings.
    pub(crate) fn run<T, E>(
        &self,
        op: &str,
        key: &str,
        transient: impl Fn(&E) -> bool,
        describe: impl Fn(&E) -> String,
        mut attempt: impl FnMut(u32) -> Result<T, E>,
    ) -> Result<T, GaveUp<E>> {
        use std::sync::atomic::Ordering;
        let started = Instant::now();
        let retries = !self.away.load(Ordering::SeqCst);
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match attempt(tries) {
                Ok(value) => {
                    self.away.store(false, Ordering::SeqCst);
                    if tries > 1 {
                        log::info!(
                            "{}: {op} {key} succeeded on try {tries}, after {:.1} s",
                            self.location,
                            started.elapsed().as_secs_f64()
                        );
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            let is_transient = transient(&error);
            let gave_up = |error, stopped| GaveUp {
                error,
                tries,
                elapsed: started.elapsed(),
                stopped,
                transient: is_transient,
            };
            if !is_transient {
                return Err(gave_up(error, false));
            }
            if is_stopping() {
                return Err(gave_up(error, true));
            }
            let left = self.policy.deadline.saturating_sub(started.elapsed());
            if !retries || left.is_zero() {
                if retries {
                    // Given up at the deadline: the sink is away until an operation succeeds.
                    self.away.store(true, Ordering::SeqCst);
                }
                return Err(gave_up(error, false));
            }
            self.warn(op, key, &describe(&error), tries);
            if wait_unless_stopping(self.policy.backoff(tries).min(left)) {
                return Err(gave_up(error, true));
            }
        }
    }

    /// The policy's deadline.
    pub(crate) fn deadline(&self) -> Duration {
        self.policy.deadline
    }

    /// Whether an operation gave up at the deadline and none has succeeded since.
    pub(crate) fn is_away(&self) -> bool {
        self.away.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Warns that `op` on `key` has waited `waited` for a reply (a server that stopped
    /// answering), throttled like retry warnings.
    pub(crate) fn warn_no_reply(&self, op: &str, key: &str, waited: Duration, limit: Duration) {
        self.throttled(format!(
            "{}: {op} {key}: no reply for {} s; waiting up to {} s",
            self.location,
            waited.as_secs(),
            limit.as_secs()
        ));
    }

    fn warn(&self, op: &str, key: &str, error: &str, tries: u32) {
        let message = format!(
            "{}: {op} {key} failed ({error}); retrying for up to {} s",
            self.location,
            self.policy.deadline.as_secs()
        );
        if !self.throttled(message.clone()) {
            log::debug!("{message} (try {tries})");
        }
    }

    /// Logs `message` as a warning unless this sink warned less than [`WARNING_INTERVAL`]
    /// ago; whether it did.
    fn throttled(&self, message: String) -> bool {
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= WARNING_INTERVAL) {
            *last = Some(Instant::now());
            log::warn!("{message}");
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(deadline_ms: u64) -> RetryPolicy {
        RetryPolicy {
            deadline: Duration::from_millis(deadline_ms),
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    /// Runs an operation whose tries all fail with `error`, classified by `transient`.
    fn failing(retrier: &Retrier, transient: bool, error: &'static str) -> GaveUp<&'static str> {
        retrier
            .run(
                "get",
                "k",
                |_| transient,
                |e: &&str| e.to_string(),
                |_| Err::<(), _>(error),
            )
            .unwrap_err()
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let retrier = Retrier::new(quick(10_000), "test");
        let result = retrier.run(
            "put",
            "k",
            |_: &&str| true,
            |e| e.to_string(),
            |n| if n < 4 { Err("busy") } else { Ok(n) },
        );
        assert_eq!(result.unwrap(), 4);
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let retrier = Retrier::new(quick(10_000), "test");
        let gave_up = failing(&retrier, false, "denied");
        assert_eq!((gave_up.error, gave_up.tries), ("denied", 1));
        assert_eq!(gave_up.retried_suffix(), "");
    }

    #[test]
    fn the_deadline_ends_retries_of_a_lasting_failure_and_is_used_up() {
        let deadline = Duration::from_millis(60);
        let retrier = Retrier::new(
            RetryPolicy {
                deadline,
                first_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_secs(8),
            },
            "test",
        );
        let gave_up = failing(&retrier, true, "down");
        assert!(gave_up.tries > 1, "retried: {}", gave_up.tries);
        // The wait before the last try is cut to fit: the retries end at the deadline, not
        // at the first backoff that would overshoot it.
        assert!(gave_up.elapsed >= deadline, "{:?}", gave_up.elapsed);
        assert!(gave_up.elapsed < Duration::from_secs(5));
        assert!(gave_up.retried_suffix().contains("gave up after"));
    }

    #[test]
    fn a_sink_that_gave_up_is_tried_once_until_an_operation_succeeds() {
        let retrier = Retrier::new(quick(20), "test");
        assert!(failing(&retrier, true, "down").tries > 1);
        // Away: the next operation (say, releasing a lock) does not wait out a new deadline.
        assert_eq!(failing(&retrier, true, "down").tries, 1);
        let back = retrier.run("get", "k", |_: &&str| true, |e| e.to_string(), |_| Ok(()));
        assert!(back.is_ok());
        assert!(failing(&retrier, true, "down").tries > 1, "retries again");
    }

    #[test]
    fn a_zero_deadline_tries_once() {
        let retrier = Retrier::new(RetryPolicy::with_deadline(Duration::ZERO), "test");
        assert_eq!(failing(&retrier, true, "down").tries, 1);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let policy = RetryPolicy::with_deadline(Duration::from_secs(60));
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= policy.first_backoff / 2 && first <= policy.first_backoff);
            let late = policy.backoff(40);
            assert!(late >= policy.max_backoff / 2 && late <= policy.max_backoff);
        }
    }
}
