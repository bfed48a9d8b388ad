//! Several instances on one fleet: registration throughput with three
//! instances against one, paired A B A B in the same run on the same machine,
//! and the failover time after `kill -9` of one of three.
//!
//! Each round seeds a fresh database with `--providers` Graph mail providers
//! over ten tenants (by SQL), starts the simulator in this process and the
//! `subkeeper` binary as separate processes on the wall clock (the processes
//! and the lease settings are those of `tests/fleet/cluster.rs`, with the
//! production lease TTL and heartbeat), and measures:
//!
//! - **registration**: from the start of the first process until every provider
//!   has a live subscription at the simulator;
//! - **CPU**: seconds of CPU the subkeeper processes used until then;
//! - **failover** (three-instance rounds): from `kill -9` of one instance until
//!   every provider is owned by a live instance again.
//!
//! ```sh
//! cargo bench --bench instances                       # 3,000 providers, 2 pairs
//! cargo bench --bench instances -- --providers 10000 --pairs 1
//! cargo bench --bench instances -- --providers 100000 --pairs 1 --one-only
//! ```
//! `--one-only` runs the one-instance rounds alone: with the simulator in
//! another process, the peak RSS it reports is the service's alone.
//! Needs Postgres and NATS as the integration tests do (scripts/test-services).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/fleet/cluster.rs"]
mod cluster;

use cluster::Cluster;
use std::time::{Duration, Instant};

struct Args {
    providers: usize,
    pairs: usize,
    one_only: bool,
}

fn args() -> Args {
    let mut args = Args {
        providers: 3_000,
        pairs: 2,
        one_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--providers" => args.providers = it.next().unwrap().parse().unwrap(),
            "--pairs" => args.pairs = it.next().unwrap().parse().unwrap(),
            "--one-only" => args.one_only = true,
            // cargo bench passes --bench.
            _ => {}
        }
    }
    args
}

/// What one round measured.
struct Round {
    instances: usize,
    registration: Duration,
    cpu_seconds: f64,
    /// The largest peak RSS (`VmHWM`) of the subkeeper processes when every
    /// provider was registered, MiB.
    peak_rss_mib: f64,
    failover: Option<Duration>,
}

fn cpu_seconds(pids: &[i32]) -> f64 {
    let tick = subkeeper_testkit::proc::ticks_per_second();
    pids.iter()
        .filter_map(|p| subkeeper_testkit::proc::own_ticks(*p))
        .map(|t| t as f64 / tick)
        .sum()
}

async fn round(providers: usize, instances: usize) -> Round {
    let mut cluster = Cluster::new(providers).await;
    let production = |c: &mut subkeeper::Config| {
        c.lease_ttl_seconds = 15;
        c.lease_heartbeat_seconds = 5;
        // No renewal falls due during a round.
        c.renewal_lookahead_minutes = 24 * 60;
        c.renewal_jitter_seconds = 300;
    };
    let started = Instant::now();
    for _ in 0..instances {
        cluster.spawn_instance_with(production);
    }
    for n in 0..instances {
        cluster.wait_ready(n).await;
    }
    let pids: Vec<i32> = cluster.instances.iter().map(|i| i.pid()).collect();
    // Counting the simulator's subscriptions copies them: less often for a
    // large fleet, so the bench does not take the service's CPU.
    let poll = Duration::from_millis((providers as u64 / 200).clamp(50, 1000));
    loop {
        if cluster.live().len() >= providers {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "registration took over 30 minutes"
        );
        tokio::time::sleep(poll).await;
    }
    let registration = started.elapsed();
    let cpu = cpu_seconds(&pids);
    let peak_rss_mib = pids
        .iter()
        .map(|p| subkeeper_testkit::proc::Memory::of(*p).peak_rss_kib)
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    let mut failover = None;
    if instances > 1 {
        let victim = cluster.instance_id(1).await;
        cluster.instances[1].signal("KILL");
        let killed = Instant::now();
        loop {
            let owners = cluster.owners().await;
            if !owners.contains_key(&Some(victim)) && !owners.contains_key(&None) {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(120),
                "failover took over 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        failover = Some(killed.elapsed());
    }
    cluster.stop().await;
    Round {
        instances,
        registration,
        cpu_seconds: cpu,
        peak_rss_mib,
        failover,
    }
}

fn main() {
    let args = args();
    actix_rt::System::new().block_on(async move {
        let mut rounds = Vec::new();
        for pair in 0..args.pairs {
            let sizes: &[usize] = if args.one_only { &[1] } else { &[1, 3] };
            for &instances in sizes {
                let r = round(args.providers, instances).await;
                println!(
                    "pair {pair}: {} instance(s): registered {} in {:.2} s ({:.0}/s), {:.1} CPU s, peak RSS per process ≤ {:.0} MiB{}",
                    r.instances,
                    args.providers,
                    r.registration.as_secs_f64(),
                    args.providers as f64 / r.registration.as_secs_f64(),
                    r.cpu_seconds,
                    r.peak_rss_mib,
                    r.failover
                        .map(|f| format!(", failover after kill -9 {:.2} s", f.as_secs_f64()))
                        .unwrap_or_default()
                );
                rounds.push(r);
            }
        }
        let mean = |n: usize| {
            let picked: Vec<f64> = rounds
                .iter()
                .filter(|r| r.instances == n)
                .map(|r| r.registration.as_secs_f64())
                .collect();
            picked.iter().sum::<f64>() / picked.len() as f64
        };
        if args.one_only {
            return;
        }
        println!(
            "registration time, three instances ÷ one: {:.2} (mean of {} pairs)",
            mean(3) / mean(1),
            args.pairs
        );
    });
}
