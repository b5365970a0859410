//! Cells with a board command in flight: the monitor leaves them alone until it ends.

use super::*;

/// Marks a cell as having a board command in flight for as long as it lives (also when the
/// operation returns early with an error or its future is dropped).
pub(crate) struct InFlight<'a, B> {
    locker: &'a Locker<B>,
    number: u16,
}

impl<'a, B> InFlight<'a, B> {
    pub(crate) fn new(locker: &'a Locker<B>, number: u16) -> Self {
        locker.flight(number, true);
        Self { locker, number }
    }
}

impl<B> Drop for InFlight<'_, B> {
    fn drop(&mut self) {
        self.locker.flight(self.number, false);
    }
}

impl<B> Locker<B> {
    /// Counts commands in flight per cell (a second, refused open of the same cell must not
    /// clear the first one's mark); ending one bumps the epoch.
    fn flight(&self, number: u16, on: bool) {
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            *f.entry(number).or_insert(0) += 1;
        } else {
            if let Some(n) = f.get_mut(&number) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    f.remove(&number);
                }
            }
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
