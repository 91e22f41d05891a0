//! A one-shot signal for the tasks of one serving thread: the accept loop
//! fires it at shutdown and every idle connection waiting on it wakes. Its
//! state is thread-local (`Cell`/`RefCell`), so waiting on it between two
//! requests of a keep-alive connection costs no atomic operation and no lock,
//! unlike a channel shared by every thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct LocalSignal {
    fired: Cell<bool>,
    /// Wakers of pending waits; a slot is `None` when free.
    waiters: RefCell<Vec<Option<Waker>>>,
}

impl LocalSignal {
    /// Fires the signal: every wait, pending or future, completes.
    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.waiters.borrow_mut().iter_mut().filter_map(Option::take) {
            w.wake();
        }
    }

    /// Completes once the signal has fired.
    pub fn wait(&self) -> Wait<'_> {
        Wait { signal: self, slot: None }
    }
}

pub struct Wait<'a> {
    signal: &'a LocalSignal,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        match self.slot {
            Some(i) => match &mut waiters[i] {
                Some(w) => w.clone_from(cx.waker()),
                slot => *slot = Some(cx.waker().clone()),
            },
            None => {
                let i = match waiters.iter().position(Option::is_none) {
                    Some(i) => {
                        waiters[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        waiters.push(Some(cx.waker().clone()));
                        waiters.len() - 1
                    }
                };
                drop(waiters);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Ok(mut waiters) = self.signal.waiters.try_borrow_mut() {
                waiters[i] = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn pending_waits_wake_once_and_slots_are_reused() {
        let signal = LocalSignal::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(signal.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        {
            let mut b = Box::pin(signal.wait());
            assert!(b.as_mut().poll(&mut cx).is_pending());
        }
        let mut c = Box::pin(signal.wait());
        assert!(c.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.waiters.borrow().len(), 2, "the dropped wait's slot was reused");
        signal.fire();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(signal.wait()).as_mut().poll(&mut cx).is_ready(), "a wait after firing is ready");
    }
}
