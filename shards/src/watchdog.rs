//! A guard against a core that sleeps through its own wake-ups.
//!
//! glommio parks an idle core on its main io_uring, with a poll on the latency ring, where
//! network receives, accepts and timers complete. We found an idle receiver whose core stayed
//! parked for half an hour with a 50 ms timer due, a SIGTERM unanswered and a client's
//! request unread: the latency ring's events never woke the main ring (glommio issues #326
//! and #494 report the same symptom on other kernels). The cause is below our code, so this
//! module makes it harmless rather than impossible:
//!
//! - every core runs a heartbeat task that records the time every [`BEAT`];
//! - a watchdog thread signals (SIGUSR2, whose handler does nothing) every core whose last
//!   beat is older than [`STALE`]. The signal ends the core's `io_uring_enter` with EINTR,
//!   the kernel runs the core's pending completion work on the way out, and the executor
//!   reaps every ring before it parks again. A core that is merely busy gets one harmless
//!   EINTR.
//!
//! Owns the beats, the signal and the thread. Must not touch shard state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a core's heartbeat task records that it runs.
pub const BEAT: Duration = Duration::from_millis(100);

/// A beat older than this means the core is parked through a due timer (or busy).
pub const STALE: Duration = Duration::from_secs(1);

/// The signal that interrupts a parked core.
const SIGNAL: libc::c_int = libc::SIGUSR2;

struct Beat {
    /// Milliseconds since `Watchdog::epoch` of the last beat; `u64::MAX` before the first.
    last_ms: AtomicU64,
    /// The core thread's kernel thread id once it beat; 0 before, and after it stopped.
    thread: AtomicU64,
    /// The beat a signal was last sent for (one warning per stall, not one per signal).
    signalled_for: AtomicU64,
}

/// The cores' heartbeats and what the watchdog did about them.
pub struct Watchdog {
    epoch: Instant,
    beats: Vec<Beat>,
    /// Cores woken by a signal because their heartbeat was stale.
    pub wakeups: AtomicU64,
    started: AtomicBool,
}

impl Watchdog {
    pub fn new(cores: usize) -> Self {
        Watchdog {
            epoch: Instant::now(),
            beats: (0..cores)
                .map(|_| Beat {
                    last_ms: AtomicU64::new(u64::MAX),
                    thread: AtomicU64::new(0),
                    signalled_for: AtomicU64::new(u64::MAX),
                })
                .collect(),
            wakeups: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Installs the no-op signal handler and starts the watchdog thread (once per process).
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A handler must exist: a signal whose action is "ignore" is dropped without
        // interrupting anything. The flag it sets is never read.
        signal_hook::flag::register(SIGNAL, Arc::new(AtomicBool::new(false)))?;
        let dog = self.clone();
        std::thread::Builder::new()
            .name("sluice-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(STALE / 4);
                dog.check();
            })?;
        Ok(())
    }

    /// Signals every core whose heartbeat is stale.
    fn check(&self) {
        let now = self.now_ms();
        for (core, b) in self.beats.iter().enumerate() {
            let last = b.last_ms.load(Ordering::Acquire);
            let thread = b.thread.load(Ordering::Acquire);
            if last == u64::MAX
                || thread == 0
                || now.saturating_sub(last) < STALE.as_millis() as u64
            {
                continue;
            }
            // tgkill, not pthread_kill: a core thread that ended between the load and the call
            // makes this fail with ESRCH instead of touching a freed pthread_t, and the
            // process id keeps a reused thread id from being another process' thread.
            // SAFETY: a raw system call with integer arguments.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    thread as libc::pid_t,
                    SIGNAL,
                )
            };
            if rc == 0 {
                self.wakeups.fetch_add(1, Ordering::Relaxed);
                if b.signalled_for.swap(last, Ordering::AcqRel) != last {
                    tracing::warn!(
                        core,
                        stale_ms = now - last,
                        "core missed its heartbeat (parked through a wake-up, or busy): \
                         interrupted it"
                    );
                }
            }
        }
    }

    /// The heartbeat of `core`: run it on that core's executor for as long as it lives.
    pub async fn heartbeat(self: Arc<Self>, core: usize) {
        let Some(b) = self.beats.get(core) else {
            return;
        };
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        b.thread.store(me as u64, Ordering::Release);
        // Dropped with the executor's tasks when the core stops: no signals after that.
        let _retire = Retire(b);
        loop {
            b.last_ms.store(self.now_ms(), Ordering::Release);
            glommio::timer::sleep(BEAT).await;
        }
    }
}

/// Stops the watchdog from signalling a core whose heartbeat ended.
struct Retire<'a>(&'a Beat);

impl Drop for Retire<'_> {
    fn drop(&mut self) {
        self.0.thread.store(0, Ordering::Release);
        self.0.last_ms.store(u64::MAX, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread blocked in a system call, standing in for a parked core, is interrupted once
    /// its beat is stale, and only then.
    #[test]
    fn a_stale_core_is_interrupted_and_a_fresh_one_is_not() {
        let dog = Arc::new(Watchdog::new(1));
        // The handler only; the thread would also check every quarter second.
        signal_hook::flag::register(SIGNAL, Arc::new(AtomicBool::new(false))).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let parked = std::thread::spawn(move || {
            // SAFETY: gettid and pause have no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let rc = unsafe { libc::pause() };
            (rc, std::io::Error::last_os_error().raw_os_error())
        });
        let tid = rx.recv().unwrap();
        let b = &dog.beats[0];
        b.thread.store(tid as u64, Ordering::Release);
        b.last_ms.store(dog.now_ms(), Ordering::Release);
        dog.check();
        assert_eq!(dog.wakeups.load(Ordering::Relaxed), 0, "fresh beat");
        std::thread::sleep(Duration::from_millis(50));
        assert!(!parked.is_finished());

        b.last_ms.store(0, Ordering::Release);
        std::thread::sleep(STALE);
        dog.check();
        assert_eq!(dog.wakeups.load(Ordering::Relaxed), 1);
        assert_eq!(parked.join().unwrap(), (-1, Some(libc::EINTR)));

        // A retired core (its heartbeat ended) is left alone.
        drop(Retire(b));
        dog.check();
        assert_eq!(dog.wakeups.load(Ordering::Relaxed), 1);
    }
}
