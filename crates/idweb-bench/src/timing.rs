//! A timed loop measured the same way as `msal/silent_bench.py` measures
//! MSAL Python, so that the two sides of `benches/msal.rs` compare like
//! with like: the number of calls per sample is doubled until one sample
//! lasts at least [`Sampling::min_sample`]; then [`Sampling::samples`]
//! samples of that many calls are timed, and each gives the mean time of
//! one call. The figure reported is the median of those means.

use std::future::Future;
use std::time::{Duration, Instant};

/// How to sample.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// Timed samples.
    pub samples: usize,
    /// Shortest duration of one sample.
    pub min_sample: Duration,
}

/// Per-call times of the samples, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timing {
    /// Calls per sample.
    pub iterations: u64,
    /// Mean time of one call in each sample, sorted.
    pub per_call_ns: Vec<f64>,
}

impl Timing {
    /// The median of the samples.
    pub fn median_ns(&self) -> f64 {
        median(&self.per_call_ns)
    }

    /// The fastest sample.
    pub fn min_ns(&self) -> f64 {
        self.per_call_ns.first().copied().unwrap_or(f64::NAN)
    }

    /// The slowest sample.
    pub fn max_ns(&self) -> f64 {
        self.per_call_ns.last().copied().unwrap_or(f64::NAN)
    }

    /// The samples of `self` and `other` together (same call, two passes).
    pub fn merged(&self, other: &Timing) -> Timing {
        let mut per_call_ns: Vec<f64> = self
            .per_call_ns
            .iter()
            .chain(&other.per_call_ns)
            .copied()
            .collect();
        per_call_ns.sort_by(f64::total_cmp);
        Timing {
            iterations: self.iterations.max(other.iterations),
            per_call_ns,
        }
    }
}

/// The median of sorted `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Times `call` as described in the module documentation. The first call
/// that fails stops the measurement and is returned.
///
/// # Errors
/// What `call` returned.
pub async fn time_async<F, Fut, T, E>(sampling: Sampling, mut call: F) -> Result<Timing, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut iterations = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(call().await?);
        }
        if start.elapsed() >= sampling.min_sample || iterations >= 1 << 40 {
            break;
        }
        iterations *= 2;
    }
    let mut per_call_ns = Vec::with_capacity(sampling.samples);
    for _ in 0..sampling.samples.max(1) {
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(call().await?);
        }
        per_call_ns.push(start.elapsed().as_nanos() as f64 / iterations as f64);
    }
    per_call_ns.sort_by(f64::total_cmp);
    Ok(Timing {
        iterations,
        per_call_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert!(median(&[]).is_nan());
    }

    #[tokio::test]
    async fn every_sample_makes_the_same_number_of_calls() {
        let mut calls = 0u64;
        let sampling = Sampling {
            samples: 5,
            min_sample: Duration::from_micros(200),
        };
        let t = time_async(sampling, || {
            calls += 1;
            std::future::ready(Ok::<_, ()>(calls))
        })
        .await
        .expect("no call fails");
        assert_eq!(t.per_call_ns.len(), 5);
        assert!(t.per_call_ns.windows(2).all(|w| w[0] <= w[1]));
        // Calibration makes 1 + 2 + ... + iterations calls, then 5 samples.
        assert_eq!(calls, (2 * t.iterations - 1) + 5 * t.iterations);
        assert_eq!(t.merged(&t).per_call_ns.len(), 10);
    }

    #[tokio::test]
    async fn a_failing_call_stops_the_measurement() {
        let mut calls = 0u32;
        let sampling = Sampling {
            samples: 3,
            min_sample: Duration::from_millis(1),
        };
        let r = time_async(sampling, || {
            calls += 1;
            std::future::ready(if calls == 3 { Err("third") } else { Ok(()) })
        })
        .await;
        assert_eq!(r, Err("third"));
        assert_eq!(calls, 3);
    }
}
