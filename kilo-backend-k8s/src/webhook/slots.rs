//! The connection slots of one listener: at most `max` connections at once. When all are taken,
//! a new connection evicts the oldest one that has not sent a request yet (a client idling in the
//! TLS handshake or in its first request's headers), so that idle connections cannot keep a real
//! client out; when every connection is serving, the listener waits for one to end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, oneshot};

/// The slots of one listener.
#[derive(Debug)]
pub(super) struct Slots {
    max: usize,
    state: Mutex<State>,
    freed: Notify,
}

#[derive(Debug, Default)]
struct State {
    live: usize,
    next: u64,
    /// The connections that have not sent a request yet, oldest first, with their eviction.
    idle: BTreeMap<u64, oneshot::Sender<()>>,
}

/// One connection's slot, released when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

impl Slots {
    /// Slots for at most `max` connections (at least one).
    pub(super) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots { max: max.max(1), state: Mutex::default(), freed: Notify::new() })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a connection may be accepted: a slot is free, or one can be evicted.
    pub(super) async fn ready(&self) {
        loop {
            let freed = self.freed.notified();
            {
                let state = self.state();
                if state.live < self.max || !state.idle.is_empty() {
                    return;
                }
            }
            freed.await;
        }
    }

    /// Takes a slot for a new connection, evicting the oldest idle connection when all are
    /// taken. The receiver fires when this connection is evicted in turn.
    pub(super) fn take(self: &Arc<Slots>) -> (Slot, oneshot::Receiver<()>) {
        let mut state = self.state();
        if state.live >= self.max
            && let Some((_, evict)) = state.idle.pop_first()
        {
            let _ = evict.send(());
        }
        let (evict, evicted) = oneshot::channel();
        let id = state.next;
        state.next += 1;
        state.live += 1;
        state.idle.insert(id, evict);
        (Slot { slots: Arc::clone(self), id }, evicted)
    }

    /// How many connections are live (evicted ones count until they are gone).
    #[cfg(test)]
    fn live(&self) -> usize {
        self.state().live
    }
}

impl Slot {
    /// Marks the connection as serving (it sent a request): it is no longer evicted.
    pub(super) fn busy(&self) {
        self.slots.state().idle.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.state();
        state.idle.remove(&self.id);
        state.live = state.live.saturating_sub(1);
        drop(state);
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn when_full_the_oldest_idle_connection_is_evicted_and_serving_ones_never_are() {
        let slots = Slots::new(2);
        let (first, mut first_evicted) = slots.take();
        let (second, mut second_evicted) = slots.take();
        second.busy();
        slots.ready().await;
        let (third, mut third_evicted) = slots.take();
        assert_eq!(first_evicted.try_recv(), Ok(()));
        assert!(second_evicted.try_recv().is_err());
        drop(first);
        assert_eq!(slots.live(), 2);
        third.busy();
        // Both serving: the next connection waits until one ends.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), slots.ready());
        assert!(waiting.await.is_err());
        drop(second);
        slots.ready().await;
        assert!(third_evicted.try_recv().is_err());
        drop(third);
        assert_eq!(slots.live(), 0);
    }
}
