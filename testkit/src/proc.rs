//! Where the CPU time and memory go, from `/proc` (through `procfs`): this
//! process's threads, every other process, the machine as a whole, and this
//! process's RSS. Counters are kernel clock ticks (`ticks_per_second`); a bench
//! takes a `CpuSample` at each end of a phase and groups the differences as its
//! report needs. Linux only, as the benches are.

use procfs::process::Process;
use procfs::{CurrentSI as _, KernelStats};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Kernel clock ticks per second, the unit of every tick count here.
pub fn ticks_per_second() -> f64 {
    procfs::ticks_per_second() as f64
}

/// One thread or process at one instant.
#[derive(Debug, Clone)]
pub struct Task {
    /// Its `comm` (at most 15 bytes: thread names are cut).
    pub name: String,
    /// Its command line, arguments joined by spaces (processes only; a Postgres
    /// backend names its database there).
    pub cmdline: String,
    /// CPU used, user + system, in ticks; for a process including its reaped
    /// children's.
    pub ticks: u64,
}

/// Machine-wide CPU counters over all cores, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Machine {
    /// Not idle and not waiting on I/O.
    pub busy: u64,
    /// Everything (user nice system idle iowait irq softirq steal).
    pub total: u64,
    /// Serving interrupts (irq + softirq): nobody's process time.
    pub irq: u64,
    /// Idle waiting on I/O.
    pub iowait: u64,
}

impl Machine {
    /// The counters now; zeros when `/proc/stat` cannot be read.
    pub fn now() -> Self {
        let Ok(stats) = KernelStats::current() else {
            return Self::default();
        };
        let t = stats.total;
        let iowait = t.iowait.unwrap_or(0);
        let irq = t.irq.unwrap_or(0) + t.softirq.unwrap_or(0);
        // guest time is already inside user.
        let total = t.user + t.nice + t.system + t.idle + iowait + irq + t.steal.unwrap_or(0);
        Self {
            busy: total.saturating_sub(t.idle + iowait),
            total,
            irq,
            iowait,
        }
    }

    /// The counters' growth since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(earlier.busy),
            total: self.total.saturating_sub(earlier.total),
            irq: self.irq.saturating_sub(earlier.irq),
            iowait: self.iowait.saturating_sub(earlier.iowait),
        }
    }
}

/// CPU ticks of a `/proc/…/stat`: user + system, plus reaped children's when
/// `children`.
fn stat_ticks(stat: &procfs::process::Stat, children: bool) -> u64 {
    let own = stat.utime + stat.stime;
    if children {
        own + u64::try_from(stat.cutime + stat.cstime).unwrap_or(0)
    } else {
        own
    }
}

/// This process's threads now: tid → thread.
pub fn threads() -> HashMap<u32, Task> {
    let mut out = HashMap::new();
    let Ok(tasks) = Process::myself().and_then(|p| p.tasks()) else {
        return out;
    };
    for task in tasks.flatten() {
        if let (Ok(tid), Ok(stat)) = (u32::try_from(task.tid), task.stat()) {
            out.insert(
                tid,
                Task {
                    name: stat.comm.clone(),
                    cmdline: String::new(),
                    ticks: stat_ticks(&stat, false),
                },
            );
        }
    }
    out
}

/// Every process but this one now, kernel threads included: pid → process, its
/// ticks including its reaped children's.
pub fn processes() -> HashMap<u32, Task> {
    let me = std::process::id();
    let mut out = HashMap::new();
    let Ok(all) = procfs::process::all_processes() else {
        return out;
    };
    for process in all.flatten() {
        let Ok(pid) = u32::try_from(process.pid) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(stat) = process.stat() {
            out.insert(
                pid,
                Task {
                    name: stat.comm.clone(),
                    cmdline: process.cmdline().unwrap_or_default().join(" "),
                    ticks: stat_ticks(&stat, true),
                },
            );
        }
    }
    out
}

/// CPU ticks (user + system) of process `pid` itself, if it exists.
pub fn own_ticks(pid: i32) -> Option<u64> {
    let stat = Process::new(pid).ok()?.stat().ok()?;
    Some(stat_ticks(&stat, false))
}

/// This process's memory, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident so far (`VmHWM`).
    pub peak_rss_kib: u64,
}

impl Memory {
    /// Now; zeros when `/proc/self/status` cannot be read.
    pub fn now() -> Self {
        Process::myself()
            .and_then(|p| p.status())
            .map(|s| Self {
                rss_kib: s.vmrss.unwrap_or(0),
                peak_rss_kib: s.vmhwm.unwrap_or(0),
            })
            .unwrap_or_default()
    }

    /// Another process's; zeros when its `/proc/<pid>/status` cannot be read
    /// (it has exited).
    pub fn of(pid: i32) -> Self {
        Process::new(pid)
            .and_then(|p| p.status())
            .map(|s| Self {
                rss_kib: s.vmrss.unwrap_or(0),
                peak_rss_kib: s.vmhwm.unwrap_or(0),
            })
            .unwrap_or_default()
    }
}

/// Everything at one instant.
#[derive(Debug, Clone)]
pub struct CpuSample {
    /// When it was taken.
    pub at: Instant,
    /// This process's threads: tid → thread.
    pub threads: HashMap<u32, Task>,
    /// Every other process: pid → process (ticks include reaped children).
    pub processes: HashMap<u32, Task>,
    /// This process's reaped children (child processes it waited for), ticks.
    pub children: u64,
    /// The machine as a whole.
    pub machine: Machine,
    /// This process's memory.
    pub memory: Memory,
}

impl CpuSample {
    /// Takes one now.
    pub fn take() -> Self {
        let children = Process::myself()
            .and_then(|p| p.stat())
            .map_or(0, |s| u64::try_from(s.cutime + s.cstime).unwrap_or(0));
        Self {
            at: Instant::now(),
            threads: threads(),
            processes: processes(),
            children,
            machine: Machine::now(),
            memory: Memory::now(),
        }
    }

    /// Wall time from `earlier` to this sample.
    pub fn wall_since(&self, earlier: &Self) -> Duration {
        self.at.saturating_duration_since(earlier.at)
    }

    /// This process's CPU ticks since `earlier`, summed by the group `group` puts
    /// each thread in (from its tid and name); threads born since count in full.
    pub fn threads_since<G: Ord>(
        &self,
        earlier: &Self,
        group: impl Fn(u32, &str) -> G,
    ) -> BTreeMap<G, u64> {
        let mut out = BTreeMap::new();
        for (tid, task) in &self.threads {
            let before = earlier.threads.get(tid).map_or(0, |t| t.ticks);
            *out.entry(group(*tid, &task.name)).or_default() += task.ticks.saturating_sub(before);
        }
        out
    }

    /// Other processes' CPU ticks since `earlier`, summed by the group `group`
    /// puts each in (`None`: left out); processes born since count in full.
    pub fn processes_since<G: Ord>(
        &self,
        earlier: &Self,
        group: impl Fn(&Task) -> Option<G>,
    ) -> BTreeMap<G, u64> {
        let mut out = BTreeMap::new();
        for (pid, task) in &self.processes {
            if let Some(g) = group(task) {
                let before = earlier.processes.get(pid).map_or(0, |t| t.ticks);
                *out.entry(g).or_default() += task.ticks.saturating_sub(before);
            }
        }
        out
    }

    /// Ticks of the processes named `name` since `earlier`.
    pub fn named_since(&self, earlier: &Self, name: &str) -> u64 {
        self.processes_since(earlier, |t| (t.name == name).then_some(()))
            .into_values()
            .sum()
    }
}
