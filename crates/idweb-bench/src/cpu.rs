//! CPU time of this process's threads, by thread name, from Linux's
//! `/proc/self/task/*/{comm,schedstat}`: how long each thread ran on a CPU
//! and how long it was ready to run but waited for one (nanoseconds).
//!
//! The HTTP benchmark names the threads of each part (server, load
//! generator, helpers) and so tells how much CPU each request cost the
//! server, independently of how much CPU the machine gave it. Elsewhere
//! than on Linux the figures are absent ([`Snapshot::available`] is false).

use std::collections::HashMap;

/// The CPU counters of one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Nanoseconds spent running.
    pub run_ns: u64,
    /// Nanoseconds spent ready to run, waiting for a CPU.
    pub wait_ns: u64,
}

impl Cpu {
    /// `self` minus `before`, saturating.
    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            run_ns: self.run_ns.saturating_sub(before.run_ns),
            wait_ns: self.wait_ns.saturating_sub(before.wait_ns),
        }
    }

    fn add(&mut self, other: Cpu) {
        self.run_ns += other.run_ns;
        self.wait_ns += other.wait_ns;
    }
}

/// The counters of every thread of the process at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Thread id → (name, counters).
    threads: HashMap<u32, (String, Cpu)>,
    available: bool,
}

impl Snapshot {
    /// Reads the counters of every thread now.
    pub fn now() -> Self {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Self::default();
        };
        let mut threads = HashMap::new();
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let (Ok(comm), Ok(sched)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("schedstat")),
            ) else {
                // The thread ended meanwhile.
                continue;
            };
            let mut fields = sched.split_whitespace().map(|f| f.parse::<u64>().ok());
            let (Some(Some(run_ns)), Some(Some(wait_ns))) = (fields.next(), fields.next()) else {
                continue;
            };
            threads.insert(tid, (comm.trim().to_string(), Cpu { run_ns, wait_ns }));
        }
        let available = !threads.is_empty();
        Self { threads, available }
    }

    /// Whether the counters could be read (Linux with scheduler statistics).
    pub fn available(&self) -> bool {
        self.available
    }

    /// The CPU used since `before` by the threads for which `select(name,
    /// is_main_thread)` is true. A thread started since `before` counts
    /// from zero; the time of a thread that ended meanwhile is lost (the
    /// benchmark keeps its threads alive for the whole run).
    pub fn since(&self, before: &Snapshot, select: impl Fn(&str, bool) -> bool) -> Cpu {
        let main = std::process::id();
        let mut total = Cpu::default();
        for (tid, (name, now)) in &self.threads {
            if !select(name, *tid == main) {
                continue;
            }
            let then = before
                .threads
                .get(tid)
                .filter(|(n, _)| n == name)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            total.add(now.since(then));
        }
        total
    }
}

/// The machine's CPU time so far, from `/proc/stat` (all CPUs, in clock
/// ticks): `(stolen, total)`. "Stolen" is the time a virtual machine's
/// CPUs were ready to run but the hypervisor ran something else.
pub fn machine_steal() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let steal = *fields.get(7)?;
    let total = fields.iter().take(8).sum();
    Some((steal, total))
}

/// The share of the machine's CPU time stolen between two readings of
/// [`machine_steal`].
pub fn steal_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (before?, after?);
    let total = t1.checked_sub(t0).filter(|t| *t > 0)?;
    Some(s1.saturating_sub(s0) as f64 / total as f64)
}

/// The CPU counters of the calling thread.
pub fn this_thread() -> Option<Cpu> {
    let sched = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = sched.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(Cpu {
        run_ns: fields.next()??,
        wait_ns: fields.next()??,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_a_share_of_the_machine_time() {
        assert_eq!(steal_share(Some((10, 100)), Some((15, 200))), Some(0.05));
        assert_eq!(steal_share(Some((10, 100)), Some((10, 100))), None);
        assert_eq!(steal_share(None, Some((10, 100))), None);
        let (steal, total) = machine_steal().expect("/proc/stat readable");
        assert!(steal <= total);
    }

    #[test]
    fn a_busy_named_thread_is_counted_under_its_name_only() {
        let before = Snapshot::now();
        assert!(before.available(), "/proc/self/task/*/schedstat unreadable");
        let busy = std::thread::Builder::new()
            .name("cpu-test-busy".into())
            .spawn(|| {
                let start = this_thread().unwrap_or_default();
                let mut x = 0u64;
                // Spin until this thread has run 20 ms on a CPU.
                while this_thread().unwrap_or_default().since(start).run_ns < 20_000_000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                // Keep the thread alive until the snapshot is taken.
                std::thread::park();
                x
            })
            .expect("spawn");
        // The thread parks once it has spun; wait for that (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut after = Snapshot::now();
        while after.since(&before, |n, _| n == "cpu-test-busy").run_ns < 20_000_000
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
            after = Snapshot::now();
        }
        let busy_cpu = after.since(&before, |n, _| n == "cpu-test-busy");
        let none = after.since(&before, |n, _| n == "no-such-thread");
        busy.thread().unpark();
        let _ = busy.join();
        assert!(busy_cpu.run_ns >= 20_000_000, "{busy_cpu:?}");
        assert_eq!(none, Cpu::default());
    }
}
