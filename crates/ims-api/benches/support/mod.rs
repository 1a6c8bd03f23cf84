//! Helpers the benches share. Each bench is its own crate and uses a subset of them.
#![allow(dead_code)]

/// `name` from the environment as a number, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of a thread in ns: `schedstat` (ns), else `stat` utime + stime (10 ms ticks).
pub fn task_cpu_ns(task: &std::path::Path) -> u64 {
    if let Some(ns) = std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    {
        return ns;
    }
    let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
        return 0;
    };
    let Some(rest) = stat.rfind(')').map(|at| &stat[at + 2..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    (field(11).unwrap_or(0) + field(12).unwrap_or(0)) * 10_000_000
}
