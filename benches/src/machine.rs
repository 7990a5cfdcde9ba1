//! What machine a benchmark ran on: every figure is quoted with it.

use serde::Serialize;

/// A short description of the machine: CPU model, logical cores and the CPU
/// features that matter for hashing and erasure coding.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub flags: Vec<String>,
}

impl Machine {
    pub fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let cpu = field("model name");
        let wanted = ["sse4_1", "avx2", "avx512f", "avx512vl", "sha_ni", "gfni"];
        let flags = field("flags")
            .split_whitespace()
            .filter(|f| wanted.contains(f))
            .map(str::to_string)
            .collect();
        Self { cpu, cores, flags }
    }

    /// One line for the head of a human-readable report.
    pub fn summary(&self) -> String {
        format!("{} · {} cores · {}", self.cpu, self.cores, self.flags.join(" "))
    }
}
