//! A process-wide limit on reads running at once (`--query.max-concurrent`,
//! `--storage.remote.read-concurrent-limit`), with a queue: as in Prometheus, a read over the
//! limit waits for a slot (first come, first served) instead of failing, until its deadline.
//!
//! Owns the slot count and the queue. Shared by every core (a `Mutex`, held for a few
//! instructions per read, never on the write path). Must not know what a read does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::channel::oneshot;

/// The gate: `limit` slots.
#[derive(Debug)]
pub struct Gate {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    active: usize,
    /// Reads waiting, oldest first; a slot is handed to them directly.
    waiting: VecDeque<oneshot::Sender<Slot>>,
}

/// A held slot; freed (or handed to the next waiting read) when dropped.
#[derive(Debug)]
pub struct Slot {
    gate: Option<Arc<Gate>>,
}

/// Waiting for a slot ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl Gate {
    /// A gate of `limit` slots (at least one).
    pub fn new(limit: usize) -> Arc<Gate> {
        Arc::new(Gate {
            limit: limit.max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// Reads holding a slot now.
    pub fn active(&self) -> usize {
        self.lock().active
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic elsewhere cannot poison it
        // in a way that matters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot: at once if one is free, else when an earlier read frees one, or `TimedOut`
    /// once `deadline` passes.
    pub async fn enter(self: &Arc<Self>, deadline: Instant) -> Result<Slot, TimedOut> {
        let rx = {
            let mut st = self.lock();
            if st.active < self.limit && st.waiting.is_empty() {
                st.active += 1;
                return Ok(Slot {
                    gate: Some(self.clone()),
                });
            }
            let (tx, rx) = oneshot::channel();
            st.waiting.push_back(tx);
            rx
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let timer = glommio::timer::sleep(wait);
        futures::pin_mut!(timer);
        match futures::future::select(rx, timer).await {
            futures::future::Either::Left((Ok(slot), _)) => Ok(slot),
            // The sender went away with the gate: cannot happen while we hold an `Arc`.
            futures::future::Either::Left((Err(_), _)) => Err(TimedOut),
            // Our sender stays queued; handing a slot to it fails and the slot goes on to
            // the next waiter (see `Drop for Slot`).
            futures::future::Either::Right(_) => Err(TimedOut),
        }
    }

    fn release(self: Arc<Self>) {
        loop {
            // The next waiter is taken under the lock, but the slot is handed over without
            // it: a hand-off can drop the slot at once (the waiter gave up in the meantime),
            // and that drop releases again, which must not find the lock held.
            let next = {
                let mut st = self.lock();
                match st.waiting.pop_front() {
                    Some(next) => next,
                    None => {
                        st.active = st.active.saturating_sub(1);
                        return;
                    }
                }
            };
            // The slot changes hands without `active` changing.
            match next.send(Slot {
                gate: Some(self.clone()),
            }) {
                Ok(()) => return,
                Err(mut unwanted) => {
                    // That read gave up waiting: it must not free the slot again; the next
                    // waiter (or the count) gets it.
                    unwanted.gate = None;
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run<G, F>(g: G)
    where
        G: FnOnce() -> F + Send + 'static,
        F: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(g)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn reads_over_the_limit_wait_in_order_and_time_out() {
        run(|| async {
            let gate = Gate::new(2);
            let far = Instant::now() + Duration::from_secs(10);
            let a = gate.enter(far).await.unwrap();
            let b = gate.enter(far).await.unwrap();
            assert_eq!(gate.active(), 2);
            // A third waits; it gets its slot when one is freed.
            let g = gate.clone();
            let third = glommio::spawn_local(async move { g.enter(far).await });
            glommio::timer::sleep(Duration::from_millis(20)).await;
            drop(a);
            let third = third.await.unwrap();
            assert_eq!(gate.active(), 2);
            // A fourth times out while both slots are taken.
            let soon = Instant::now() + Duration::from_millis(30);
            assert_eq!(gate.enter(soon).await.err(), Some(TimedOut));
            // The timed-out waiter's queue entry is skipped, not handed the slot.
            drop(b);
            assert_eq!(gate.active(), 1);
            drop(third);
            assert_eq!(gate.active(), 0);
            let _c = gate.enter(far).await.unwrap();
            assert_eq!(gate.active(), 1);
        });
    }
}
