//! A byte-rate cap the operator may change while the node runs: the crawler's download cap and
//! seeding's upload and download caps are each one of these.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Bytes per second, or no cap.
#[derive(Debug, Default)]
pub struct ByteRate {
    cap: RwLock<Option<(NonZeroU32, Arc<DefaultDirectRateLimiter>)>>,
}

impl ByteRate {
    /// A cap of `bytes_per_s` (none for `None`).
    pub fn new(bytes_per_s: Option<NonZeroU32>) -> Self {
        let r = Self::default();
        r.set(bytes_per_s);
        r
    }

    /// The cap now, bytes per second.
    pub fn get(&self) -> Option<u64> {
        let c = self.cap.read().unwrap_or_else(|e| e.into_inner());
        c.as_ref().map(|(n, _)| u64::from(n.get()))
    }

    /// Sets (`Some`) or removes (`None`) the cap; bursts are up to one second's worth.
    pub fn set(&self, bytes_per_s: Option<NonZeroU32>) {
        let limiter = bytes_per_s.map(|n| (n, Arc::new(RateLimiter::direct(Quota::per_second(n)))));
        *self.cap.write().unwrap_or_else(|e| e.into_inner()) = limiter;
    }

    /// Waits until the cap allows `bytes` more (at once when there is no cap).
    pub async fn spend(&self, bytes: usize) {
        let cap = self.cap.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((burst, limiter)) = cap else { return };
        let burst = burst.get() as usize;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(burst);
            if let Some(n32) = NonZeroU32::new(n as u32) {
                // n never exceeds the burst, so this cannot fail.
                let _ = limiter.until_n_ready(n32).await;
            }
            left -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn holds_back_past_the_cap_and_can_be_lifted() {
        let r = ByteRate::new(NonZeroU32::new(1000));
        assert_eq!(r.get(), Some(1000));
        assert!(r.spend(1000).now_or_never().is_some(), "a second's worth goes at once");
        assert!(r.spend(100).now_or_never().is_none(), "more must wait for the cap");
        r.set(None);
        assert_eq!(r.get(), None);
        assert!(r.spend(1 << 30).now_or_never().is_some(), "no cap, no wait");
        r.set(NonZeroU32::new(10));
        assert!(r.spend(25).now_or_never().is_none(), "spends beyond the burst are split");
    }
}
