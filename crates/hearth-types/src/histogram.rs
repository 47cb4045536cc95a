//! A cumulative histogram of fixed buckets: constant memory however many
//! values it counts, so a long-running controller can keep one forever.
//! Rendering it (Prometheus text) is the server's business.

/// Counts of observations at most each bound, plus their sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    /// `(upper bound, observations at most it)`, in bound order.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds.iter().copied().zip(self.counts.iter().copied())
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 3.0, 7.0] {
            h.observe(v);
        }
        assert_eq!(h.buckets().collect::<Vec<_>>(), [(1.0, 1), (5.0, 2)]);
        assert_eq!((h.sum(), h.count()), (10.5, 3));
    }
}
