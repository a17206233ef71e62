//! Preallocated boxes for the hot path's rare branches: a task's first histograms, a
//! location's, a location's lock-free pair for single long values. The hot path takes one
//! without waiting and without allocating; the aggregator thread refills the list on its next
//! pass (every 100 ms). A branch that finds none left records what it can elsewhere and
//! counts the rest in `dropped_long_values`.

use std::sync::Mutex;

use crate::hist;
use crate::queues::WaitHist;
use crate::tables::{LocationHists, TaskHists};

/// A list of spare boxes of `T`, kept at `want`.
pub(crate) struct Spares<T> {
    free: Mutex<Vec<Box<T>>>,
    want: usize,
    make: fn() -> T,
}

impl<T> std::fmt::Debug for Spares<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spares")
            .field("want", &self.want)
            .finish_non_exhaustive()
    }
}

impl<T> Spares<T> {
    /// A full list of `want` boxes, with room for as many again given back.
    pub(crate) fn new(want: usize, make: fn() -> T) -> Self {
        let mut free = Vec::with_capacity(want * 2);
        free.extend((0..want).map(|_| Box::new(make())));
        Spares {
            free: Mutex::new(free),
            want,
            make,
        }
    }

    /// Hot path (rare branch): a spare box, without waiting or allocating. `None` when none
    /// is left or another thread holds the list this instant.
    #[inline]
    pub(crate) fn take(&self) -> Option<Box<T>> {
        self.free.try_lock().ok()?.pop()
    }

    /// Hot path (rare branch): give a box back for reuse (it must be as new). Kept when the
    /// list has room without growing, else freed.
    pub(crate) fn give_back(&self, b: Box<T>) {
        if let Ok(mut free) = self.free.try_lock() {
            if free.len() < free.capacity() {
                free.push(b);
            }
        }
    }

    /// Cold (aggregator thread): bring the list back to `want` boxes, allocating outside the
    /// lock.
    pub(crate) fn refill(&self) {
        let have = hist::lock(&self.free).len();
        if have >= self.want {
            return;
        }
        let fresh: Vec<Box<T>> = (have..self.want).map(|_| Box::new((self.make)())).collect();
        let mut free = hist::lock(&self.free);
        for b in fresh {
            if free.len() < free.capacity() {
                free.push(b);
            }
        }
    }

    /// Boxes on the list now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        hist::lock(&self.free).len()
    }
}

/// The spares the hot path draws on.
#[derive(Debug)]
pub(crate) struct HotSpares {
    pub(crate) task_hists: Spares<TaskHists>,
    pub(crate) location_hists: Spares<LocationHists>,
    pub(crate) single_long: Spares<[WaitHist; 2]>,
}

impl Default for HotSpares {
    fn default() -> Self {
        // A few of each: at most this many tasks (locations) get their first histograms within
        // one aggregator pass before the list is refilled.
        HotSpares {
            task_hists: Spares::new(16, || TaskHists {
                poll: hist::new_coarse(),
                sched: hist::new_coarse(),
            }),
            location_hists: Spares::new(4, || LocationHists {
                poll: hist::new_fine(),
                sched: hist::new_fine(),
            }),
            single_long: Spares::new(8, || [WaitHist::new(), WaitHist::new()]),
        }
    }
}

impl HotSpares {
    /// Cold (aggregator thread): refill every list.
    pub(crate) fn refill(&self) {
        self.task_hists.refill();
        self.location_hists.refill();
        self.single_long.refill();
    }
}

#[cfg(test)]
mod tests {
    use super::Spares;

    #[test]
    fn boxes_are_taken_until_none_is_left_then_refilled() {
        let s = Spares::new(2, || 7u64);
        assert_eq!(s.take().as_deref(), Some(&7));
        let b = s.take().unwrap();
        assert!(s.take().is_none(), "two boxes, two takes");
        s.give_back(b);
        assert_eq!(s.len(), 1);
        s.refill();
        assert_eq!(s.len(), 2);
        // Given back past the room the list was made with: freed, not kept.
        for _ in 0..4 {
            s.give_back(Box::new(1));
        }
        assert_eq!(s.len(), 4, "room for twice `want`");
    }
}
