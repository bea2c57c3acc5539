//! A CPU limit per instance for the scaling run: a cgroup v1 `cpu` group with a CFS quota
//! (`cpu.cfs_quota_us` over `cpu.cfs_period_us`), the instance's process moved into it, and the
//! group removed when the limit is dropped (after its process has exited).

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};

/// Where the cgroup v1 `cpu` controller is mounted.
const CPU_CONTROLLER: &str = "/sys/fs/cgroup/cpu";
/// The CFS period, in microseconds (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// A process limited to some cores; the group goes when this is dropped.
pub(crate) struct CpuLimit {
    group: PathBuf,
}

impl CpuLimit {
    /// Limits process `pid` to `cores` (0.5 is half a core) in a group named after it.
    pub(crate) fn apply(pid: u32, name: &str, cores: f64) -> Result<Self> {
        let root = PathBuf::from(CPU_CONTROLLER);
        ensure!(
            root.join("cpu.cfs_quota_us").exists(),
            "--cpu-quota needs the cgroup v1 cpu controller at {CPU_CONTROLLER}"
        );
        let group = root.join(format!("rendezvous-bench-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&group)
            .with_context(|| format!("creating {} (is this root?)", group.display()))?;
        let limit = Self { group };
        let write = |file: &str, value: String| {
            std::fs::write(limit.group.join(file), &value)
                .with_context(|| format!("writing {value} to {}", limit.group.join(file).display()))
        };
        write("cpu.cfs_period_us", PERIOD_US.to_string())?;
        write(
            "cpu.cfs_quota_us",
            ((cores * PERIOD_US as f64).round() as u64)
                .max(1000)
                .to_string(),
        )?;
        // Every thread of the process moves with it.
        write("cgroup.procs", pid.to_string())?;
        Ok(limit)
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        // A group with a process left in it cannot be removed: hand any survivor back to the
        // root group first.
        if let Ok(procs) = std::fs::read_to_string(self.group.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(PathBuf::from(CPU_CONTROLLER).join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.group);
    }
}
