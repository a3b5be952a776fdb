//! Log-linear latency histogram: 64 linear sub-buckets per power of two (about 1.6 %
//! resolution), values in nanoseconds. Each runtime thread records into its own copy (no
//! shared cache line on the hot path); [`snapshot`] sums them. Quantiles report the bucket's
//! lower bound, exactly like floor-client, so the two read the same way.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Number of buckets covering the whole u64 range.
pub const NBUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB as usize;

/// Bucket index of a value.
#[inline]
pub fn bucket_of(v: u64) -> usize {
    if v < SUB {
        v as usize
    } else {
        let e = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = e - SUB_BITS;
        let sub = (v >> shift) & (SUB - 1);
        ((shift as u64 + 1) * SUB + sub) as usize
    }
}

/// Smallest value that falls into bucket `i`.
pub fn bucket_low(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        i
    } else {
        let shift = i / SUB - 1;
        (SUB + i % SUB) << shift
    }
}

struct Hist(Box<[AtomicU64]>);

static ALL: Mutex<Vec<Arc<Hist>>> = Mutex::new(Vec::new());

thread_local! {
    static LOCAL: RefCell<Option<Arc<Hist>>> = const { RefCell::new(None) };
}

/// Records one value into this thread's histogram.
#[inline]
pub fn record(v: u64) {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        let h = l.get_or_insert_with(|| {
            let h = Arc::new(Hist((0..NBUCKETS).map(|_| AtomicU64::new(0)).collect()));
            ALL.lock().unwrap_or_else(|p| p.into_inner()).push(h.clone());
            h
        });
        // One writer per thread: a relaxed load + store is enough.
        let c = &h.0[bucket_of(v)];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    })
}

/// Sum of every thread's buckets.
pub fn snapshot() -> Vec<u64> {
    let mut out = vec![0u64; NBUCKETS];
    for h in ALL.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        for (o, c) in out.iter_mut().zip(h.0.iter()) {
            *o += c.load(Ordering::Relaxed);
        }
    }
    out
}

/// Quantile `q` (0..=1) of summed buckets, as the lower bound of the bucket that holds it.
pub fn quantile(b: &[u64], q: f64) -> u64 {
    let total: u64 = b.iter().sum();
    if total == 0 {
        return 0;
    }
    let target = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, c) in b.iter().enumerate() {
        acc += c;
        if acc >= target {
            return bucket_low(i);
        }
    }
    bucket_low(b.len() - 1)
}

/// Percentile of a sorted slice (nearest rank, rounded), 0 when empty.
pub fn pct_sorted(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// Non-zero buckets as `idx:count` words (the worker → parent wire form).
pub fn encode(b: &[u64]) -> String {
    let mut s = String::new();
    for (i, &c) in b.iter().enumerate() {
        if c > 0 {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&format!("{i}:{c}"));
        }
    }
    s
}

/// Adds `idx:count` words into `into`. Malformed words are ignored.
pub fn merge_encoded(into: &mut [u64], words: &str) {
    for w in words.split_whitespace() {
        if let Some((i, c)) = w.split_once(':') {
            if let (Ok(i), Ok(c)) = (i.parse::<usize>(), c.parse::<u64>()) {
                if i < into.len() {
                    into[i] += c;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bracket_their_values() {
        for v in [0u64, 1, 63, 64, 65, 127, 128, 129, 1000, 123_456, 10_000_000_000, u64::MAX / 2] {
            let b = bucket_of(v);
            assert!(bucket_low(b) <= v, "{v}");
            assert!(bucket_low(b + 1) > v, "{v}");
        }
        assert_eq!(bucket_of(u64::MAX), NBUCKETS - 1);
    }

    #[test]
    fn resolution_is_under_two_percent() {
        for v in [1_000u64, 47_700, 1_234_567, 85_000_000] {
            let low = bucket_low(bucket_of(v));
            assert!((v - low) as f64 / v as f64 <= 1.0 / 64.0, "{v} -> {low}");
        }
    }

    #[test]
    fn quantiles() {
        let mut b = vec![0u64; NBUCKETS];
        for v in 1..=1000u64 {
            b[bucket_of(v * 1000)] += 1;
        }
        let p50 = quantile(&b, 0.5);
        assert!((490_000..=500_000).contains(&p50), "{p50}");
        let p99 = quantile(&b, 0.99);
        assert!((975_000..=990_000).contains(&p99), "{p99}");
        assert_eq!(quantile(&b, 1.0), bucket_low(bucket_of(1_000_000)));
        assert_eq!(quantile(&vec![0; NBUCKETS], 0.5), 0);
        assert_eq!(pct_sorted(&[1, 2, 3, 4, 5], 0.5), 3);
        assert_eq!(pct_sorted(&[], 0.5), 0);
    }

    #[test]
    fn record_snapshot_and_wire_form() {
        record(5_000);
        record(5_000);
        std::thread::spawn(|| record(7_000_000)).join().unwrap();
        let s = snapshot();
        assert!(s[bucket_of(5_000)] >= 2);
        assert!(s[bucket_of(7_000_000)] >= 1);
        let mut m = vec![0u64; NBUCKETS];
        merge_encoded(&mut m, &encode(&s));
        merge_encoded(&mut m, "3:4 bogus 99999999:1");
        assert_eq!(m[3], s[3] + 4);
        assert_eq!(m[bucket_of(5_000)], s[bucket_of(5_000)]);
    }
}
