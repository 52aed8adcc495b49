//! Whether a message reached its next hop: a one-time outcome shared by everyone who waits for
//! it.
//!
//! A [`Delivery`] starts pending and settles once: delivered (the broker's PUBACK, or the spool's
//! flush), or abandoned (its [`Settle`] was dropped unsettled: a spooled message deleted by the
//! `drop_oldest` policy, a message nobody will wait for, a ledger torn down at exit). Waiting costs
//! a waker per waiting task and nothing else: a connection's writer waits on its oldest answer's
//! delivery from its one task, instead of a task and a timer per answer.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct State {
    /// `None` while pending; then delivered (`true`) or abandoned (`false`).
    outcome: Option<bool>,
    wakers: Vec<Waker>,
}

/// The waiting side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Delivery(Arc<Mutex<State>>);

/// The settling side, held by whoever will know the outcome. Dropping it unsettled abandons the
/// delivery.
#[derive(Debug)]
pub struct Settle(Arc<Mutex<State>>);

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Delivery {
    /// A pending delivery and the means to settle it.
    #[must_use]
    pub fn pending() -> (Settle, Self) {
        let state = Arc::new(Mutex::new(State::default()));
        (Settle(state.clone()), Self(state))
    }

    /// `None` while pending; `Some(true)` once delivered, `Some(false)` once abandoned.
    #[must_use]
    pub fn outcome(&self) -> Option<bool> {
        lock(&self.0).outcome
    }

    /// True once delivered.
    #[must_use]
    pub fn is_delivered(&self) -> bool {
        self.outcome() == Some(true)
    }

    /// Ready with the outcome once settled; until then `cx`'s task is woken when it settles
    /// (registered once however often the same task polls).
    pub fn poll_settled(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = lock(&self.0);
        if let Some(outcome) = state.outcome {
            return Poll::Ready(outcome);
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits until settled: true when delivered, false when abandoned.
    pub async fn settled(&self) -> bool {
        poll_fn(|cx| self.poll_settled(cx)).await
    }
}

impl Settle {
    /// Settles the delivery as delivered and wakes its waiters.
    pub fn delivered(self) {
        self.settle(true);
    }

    fn settle(&self, outcome: bool) {
        let wakers = {
            let mut state = lock(&self.0);
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.settle(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_see_the_one_outcome_and_late_waiters_see_it_at_once() {
        let (settle, delivery) = Delivery::pending();
        assert_eq!(delivery.outcome(), None);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let d = delivery.clone();
                tokio::spawn(async move { d.settled().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()), "settled before its PUBACK");
        settle.delivered();
        for w in waiters {
            assert!(tokio::time::timeout(Duration::from_secs(5), w).await.unwrap().unwrap());
        }
        assert!(delivery.is_delivered());
        assert!(delivery.clone().settled().await);
    }

    #[tokio::test]
    async fn a_settle_dropped_unsettled_abandons_the_delivery() {
        let (settle, delivery) = Delivery::pending();
        let waiter = tokio::spawn({
            let d = delivery.clone();
            async move { d.settled().await }
        });
        tokio::task::yield_now().await;
        drop(settle);
        assert!(!tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap());
        assert_eq!(delivery.outcome(), Some(false));
        assert!(!delivery.is_delivered());
    }

    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn one_task_polling_often_is_registered_and_woken_once() {
        let (settle, delivery) = Delivery::pending();
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            assert!(delivery.poll_settled(&mut cx).is_pending());
        }
        assert_eq!(lock(&delivery.0).wakers.len(), 1);
        settle.delivered();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(delivery.poll_settled(&mut cx), Poll::Ready(true));
    }
}
