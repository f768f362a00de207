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
//! A process that is stopping (ferry got SIGINT, SIGTERM or SIGHUP) calls [`stop_retrying`]:
//! waits between tries end at once and no new try starts, so an outage cannot hold an orderly
//! stop for the whole deadline.
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
/// Shortest time between two retry warnings of one sink.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Whether [`stop_retrying`] was called, and the waits it wakes.
static STOPPING: Mutex<bool> = Mutex::new(false);
static STOPPING_CHANGED: Condvar = Condvar::new();

/// Ends every retry in this process: waiting operations fail at once with their last error,
/// and no operation retries from now on. For a process that is stopping.
pub fn stop_retrying() {
    *STOPPING.lock().unwrap_or_else(PoisonError::into_inner) = true;
    STOPPING_CHANGED.notify_all();
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
            Ok(value) => value
                .trim()
                .parse::<u32>()
                .map(|seconds| RetryPolicy::with_deadline(Duration::from_secs(seconds.into())))
                .map_err(|_| SinkError::Setting {
                    name: DEADLINE_ENV,
                    reason: format!("{value:?} is not a whole number of seconds"),
                }),
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
}

impl<E> GaveUp<E> {
    /// " (gave up after 7 tries in 121 s)" when the operation was retried, " (not retried:
    /// stopping)" when a stop ended it, else "".
    pub(crate) fn retried_suffix(&self) -> String {
        if self.stopped {
            format!(" (retrying ended after {} tries: stopping)", self.tries)
        } else if self.tries > 1 {
            format!(
                " (gave up after {} tries in {:.0} s)",
                self.tries,
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
        }
    }

    /// Runs `attempt` (given the 1-based try number) until it succeeds, fails with an error
    /// `transient` rejects, or the policy's deadline has passed.
    pub(crate) fn run<T, E: fmt::Display>(
        &self,
        op: &str,
        key: &str,
        transient: impl Fn(&E) -> bool,
        mut attempt: impl FnMut(u32) -> Result<T, E>,
    ) -> Result<T, GaveUp<E>> {
        let started = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match attempt(tries) {
                Ok(value) => {
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
            let wait = self.policy.backoff(tries);
            let gave_up = |error, stopped| GaveUp {
                error,
                tries,
                elapsed: started.elapsed(),
                stopped,
            };
            if !transient(&error) || started.elapsed() + wait > self.policy.deadline {
                return Err(gave_up(error, false));
            }
            self.warn(op, key, &error, tries);
            if wait_unless_stopping(wait) {
                return Err(gave_up(error, true));
            }
        }
    }

    fn warn(&self, op: &str, key: &str, error: &dyn fmt::Display, tries: u32) {
        let message = format!(
            "{}: {op} {key} failed ({error}); retrying for up to {} s",
            self.location,
            self.policy.deadline.as_secs()
        );
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= WARNING_INTERVAL) {
            *last = Some(Instant::now());
            log::warn!("{message}");
        } else {
            log::debug!("{message} (try {tries})");
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

    #[test]
    fn transient_failures_are_retried_until_success() {
        let retrier = Retrier::new(quick(10_000), "test");
        let result = retrier.run(
            "put",
            "k",
            |_: &&str| true,
            |n| {
                if n < 4 { Err("busy") } else { Ok(n) }
            },
        );
        assert_eq!(result.unwrap(), 4);
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let retrier = Retrier::new(quick(10_000), "test");
        let gave_up = retrier
            .run("put", "k", |_: &&str| false, |_| Err::<(), _>("denied"))
            .unwrap_err();
        assert_eq!((gave_up.error, gave_up.tries), ("denied", 1));
        assert_eq!(gave_up.retried_suffix(), "");
    }

    #[test]
    fn the_deadline_ends_retries_of_a_lasting_failure() {
        let retrier = Retrier::new(quick(50), "test");
        let started = Instant::now();
        let gave_up = retrier
            .run("get", "k", |_: &&str| true, |_| Err::<(), _>("down"))
            .unwrap_err();
        assert!(gave_up.tries > 1, "retried: {}", gave_up.tries);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(gave_up.retried_suffix().contains("gave up after"));
    }

    #[test]
    fn a_zero_deadline_tries_once() {
        let retrier = Retrier::new(RetryPolicy::with_deadline(Duration::ZERO), "test");
        let gave_up = retrier
            .run("get", "k", |_: &&str| true, |_| Err::<(), _>("down"))
            .unwrap_err();
        assert_eq!(gave_up.tries, 1);
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
