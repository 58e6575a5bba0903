//! A criterion measurement of the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so
//! that figures hold on a shared, loaded machine (also used by kilo-net-linux's benches): wall time there
//! includes the time other processes hold the cores. On an idle machine the two agree for this
//! single-threaded code, as upstream's baseline (wall time, idle machine) assumes.

use criterion::Throughput;
use criterion::measurement::{Measurement, ValueFormatter};

/// Nanoseconds this thread has spent on a CPU.
pub fn thread_cpu_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The measurement: thread CPU time in nanoseconds.
pub struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NanosFormatter
    }
}

struct NanosFormatter;

impl ValueFormatter for NanosFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else if typical < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    /// Per CPU second: bytes in GB/s, bits in Gbit/s (values are nanoseconds, so bytes per
    /// nanosecond are GB/s), elements per second.
    fn scale_throughputs(
        &self,
        _: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per_iteration, unit, scale) = match throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (*n, "GB/s", 1.0),
            Throughput::Bits(n) => (*n, "Gbit/s", 1.0),
            Throughput::Elements(n) => (*n, "elem/s", 1e9),
            Throughput::ElementsAndBytes { elements, .. } => (*elements, "elem/s", 1e9),
        };
        values.iter_mut().for_each(|v| *v = per_iteration as f64 * scale / *v);
        unit
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}
