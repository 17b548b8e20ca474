//! Parallel work whose results are taken in order: chunks decoded on every core and hashed
//! and written in file order, or encoded and appended to a pack in entry order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::StoreError;

/// Items produced ahead of the one to consume next, per worker. Items differ in size by a
/// thousand times (a bias vector against a 2 MB chunk): with two, a worker busy with a large
/// item held the other back after two small ones, and MiniLM's checkout used 1.44 of 2 CPUs.
/// Results waiting (a decoded or encoded chunk each) stay a few dozen MB per core.
const AHEAD_PER_WORKER: usize = 8;

/// Runs `produce` on every item of `work` on one thread per core, and `consume` on the results
/// in item order.
///
/// There is no barrier between groups of items: a worker takes the next item as soon as it is
/// done, so no core waits for the slowest item of a group (with groups of two items per core,
/// an eighth of the cores' time went idle that way). Whichever worker completes the item to
/// consume next consumes it, and whatever follows it that is ready, usually from its own
/// cache; the others go on producing. Workers stay at most `AHEAD_PER_WORKER` items per
/// worker ahead of the consumer, which bounds memory.
///
/// The first error, in item order, is returned, and no more items are started.
pub fn pipelined<W: Sync, T: Send>(
    work: &[W],
    produce: impl Fn(&W) -> Result<T, StoreError> + Sync,
    mut consume: impl FnMut(&W, T) -> Result<(), StoreError> + Send,
) -> Result<(), StoreError> {
    let workers = rayon::current_num_threads().min(work.len());
    if workers <= 1 {
        // One item (a commit, a tree) or one core: a hand-off would cost more than it saves.
        return work.iter().try_for_each(|w| consume(w, produce(w)?));
    }
    let flow = Flow {
        work,
        ahead: AHEAD_PER_WORKER * workers,
        next: AtomicUsize::new(0),
        state: Mutex::new(State { consumed: 0, ready: HashMap::new(), consuming: false, failed: None }),
        moved: Condvar::new(),
        consume: Mutex::new(&mut consume),
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let _stop = StopOnPanic(&flow.state, &flow.moved);
                while let Some(i) = flow.claim() {
                    flow.complete(i, produce(&work[i]));
                }
            });
        }
    });
    let state = flow.state.into_inner().unwrap_or_else(PoisonError::into_inner);
    state.failed.map_or(Ok(()), Err)
}

/// Stops the other workers when a worker panics, which would otherwise leave them waiting
/// for an item it never completes; the scope then passes the panic on.
struct StopOnPanic<'f, T>(&'f Mutex<State<T>>, &'f Condvar);

impl<T> Drop for StopOnPanic<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            state.failed.get_or_insert_with(|| StoreError::Backend("a worker thread panicked".into()));
            self.1.notify_all();
        }
    }
}

/// What the workers share.
struct Flow<'w, W, T, C> {
    work: &'w [W],
    /// How far past the next item to consume a worker may claim.
    ahead: usize,
    /// The next item to claim.
    next: AtomicUsize,
    state: Mutex<State<T>>,
    /// Signalled when items are consumed, or the work stops.
    moved: Condvar,
    /// Held by the worker consuming (only one does at a time, as `State::consuming` says).
    consume: Mutex<&'w mut C>,
}

struct State<T> {
    /// Items consumed so far: the index of the next one to consume.
    consumed: usize,
    /// Results produced and not yet consumed.
    ready: HashMap<usize, Result<T, StoreError>>,
    /// A worker is consuming.
    consuming: bool,
    /// The first error, after which nothing more is started or consumed.
    failed: Option<StoreError>,
}

impl<W, T, C: FnMut(&W, T) -> Result<(), StoreError>> Flow<'_, W, T, C> {
    /// The next item to produce, once it is within `ahead` items of the consumer; None when
    /// there is none left or the work failed.
    fn claim(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.work.len() {
            return None;
        }
        let mut state = self.lock();
        while state.failed.is_none() && i >= state.consumed + self.ahead {
            state = self.moved.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.failed.is_none().then_some(i)
    }

    /// Files item `i`'s result and, unless another worker is consuming, consumes every result
    /// that is next in order.
    fn complete(&self, i: usize, result: Result<T, StoreError>) {
        let mut state = self.lock();
        state.ready.insert(i, result);
        if state.consuming {
            // The consuming worker looks for the next result under this lock before it stops.
            return;
        }
        state.consuming = true;
        while state.failed.is_none() {
            let next = state.consumed;
            let Some(result) = state.ready.remove(&next) else { break };
            drop(state);
            let outcome = result.and_then(|t| {
                let mut consume = self.consume.lock().unwrap_or_else(PoisonError::into_inner);
                consume(&self.work[next], t)
            });
            state = self.lock();
            match outcome {
                Ok(()) => state.consumed = next + 1,
                Err(e) => state.failed = Some(e),
            }
            self.moved.notify_all();
        }
        state.consuming = false;
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_consumed_in_order_however_long_each_takes() {
        let work: Vec<u64> = (0..200).collect();
        let mut seen = Vec::new();
        pipelined(
            &work,
            |&w| {
                // Later items finish first now and then.
                std::thread::sleep(std::time::Duration::from_micros((w * 7919) % 13 * 50));
                Ok(w * 2)
            },
            |&w, t| {
                assert_eq!(t, w * 2);
                seen.push(w);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, work);
    }

    #[test]
    fn a_panicking_worker_stops_the_others_and_the_panic_is_passed_on() {
        let work: Vec<u64> = (0..1000).collect();
        let run = std::panic::catch_unwind(|| {
            pipelined(&work, |&w| if w == 3 { panic!("item 3") } else { Ok(w) }, |_, _| Ok(()))
        });
        assert!(run.is_err(), "the panic was lost");
    }

    /// Runs 1000 items, failing to produce those `bad_item` picks and to consume those
    /// `bad_result` picks; the error, and how many items were produced.
    fn failing_run(bad_item: impl Fn(u64) -> bool + Sync, bad_result: impl Fn(u64) -> bool + Sync) -> (String, usize) {
        let work: Vec<u64> = (0..1000).collect();
        let produced = AtomicUsize::new(0);
        let err = pipelined(
            &work,
            |&w| {
                produced.fetch_add(1, Ordering::Relaxed);
                if bad_item(w) { Err(StoreError::Backend(format!("item {w}"))) } else { Ok(w) }
            },
            |&w, _| if bad_result(w) { Err(StoreError::Backend(format!("consuming {w}"))) } else { Ok(()) },
        )
        .unwrap_err();
        (err.to_string(), produced.load(Ordering::Relaxed))
    }

    #[test]
    fn the_first_error_in_item_order_is_returned_and_work_stops() {
        let (err, produced) = failing_run(|w| w == 30 || w == 31, |_| false);
        assert_eq!(err, "item 30");
        assert!(produced < 100, "workers stop soon after an error: {produced}");
    }

    #[test]
    fn a_consumer_error_stops_the_workers() {
        let (err, produced) = failing_run(|_| false, |w| w == 5);
        assert_eq!(err, "consuming 5");
        assert!(produced < 100, "workers stay a bounded distance ahead: {produced}");
    }
}
