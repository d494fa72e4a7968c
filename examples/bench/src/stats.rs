//! Throughput and latency summaries.

use std::time::Duration;

use serde::Serialize;

/// One timed run of a workload.
#[derive(Debug, Clone)]
pub struct Run {
    pub operations: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }
}

/// Several runs of one workload, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Median over the runs, operations per second.
    pub per_second: f64,
    /// Every run's operations per second.
    pub runs_per_second: Vec<f64>,
    /// Latency percentiles over all runs, milliseconds.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Summary {
    pub fn of(runs: &[Run]) -> Self {
        let runs_per_second: Vec<f64> = runs.iter().map(Run::per_second).collect();
        let mut latencies: Vec<Duration> = runs
            .iter()
            .flat_map(|r| r.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        Self {
            per_second: median(&runs_per_second),
            runs_per_second,
            p50_ms: millis(percentile(&latencies, 0.50)),
            p95_ms: millis(percentile(&latencies, 0.95)),
            p99_ms: millis(percentile(&latencies, 0.99)),
        }
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub fn median_duration(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
