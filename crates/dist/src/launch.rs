//! Who this process is in a data-parallel run, read from the launcher's variables:
//! torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, or Slurm's
//! `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` with the first host of the step's node
//! list (`SLURM_STEP_NODELIST`, else `SLURM_JOB_NODELIST`) as the rendezvous host.
//!
//! The Slurm host-list syntax (`node[01-04,7],gpu5`) is expanded here by hand: it is a few
//! lines, and the alternative (`scontrol show hostnames`) needs Slurm's binaries on the path
//! of every rank.
use crate::error::DistError;

/// The torchrun default, also used when Slurm gives no job id.
const DEFAULT_PORT: u16 = 29500;

/// Which launcher's variables described this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// torchrun (or `gradstep train --nproc`, which sets the same variables).
    Torchrun,
    /// `srun`.
    Slurm,
}

/// One rank's place in the run and where the ranks meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// The rank on this node: the CUDA device index (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    /// The host of rank 0's TCPStore.
    pub master_addr: String,
    pub master_port: u16,
}

impl LaunchEnv {
    /// Reads the process environment; `Ok(None)` when no launcher set it (one process).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`LaunchEnv::from_env`], from `var` (the tests' environment). torchrun's variables
    /// win over Slurm's, so that torchrun inside a Slurm allocation works; Slurm's count
    /// only inside a job step (`SLURM_STEP_ID` set: `srun`), not in the batch script itself,
    /// whose `SLURM_NTASKS` counts tasks it does not run.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        if let (Some(rank), Some(world)) = (var("RANK"), var("WORLD_SIZE")) {
            let rank = number("RANK", &rank)?;
            let world_size = number("WORLD_SIZE", &world)?;
            let local_rank = match var("LOCAL_RANK") {
                Some(v) => number("LOCAL_RANK", &v)?,
                None => rank,
            };
            let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
            let master_port = match var("MASTER_PORT") {
                Some(v) => port("MASTER_PORT", &v)?,
                None => DEFAULT_PORT,
            };
            return Self::checked(LaunchEnv {
                launcher: Launcher::Torchrun,
                rank,
                world_size,
                local_rank,
                master_addr,
                master_port,
            })
            .map(Some);
        }
        let (Some(rank), Some(_step)) = (var("SLURM_PROCID"), var("SLURM_STEP_ID")) else {
            return Ok(None);
        };
        let rank = number("SLURM_PROCID", &rank)?;
        let world_size = match var("SLURM_STEP_NUM_TASKS").or_else(|| var("SLURM_NTASKS")) {
            Some(v) => number("SLURM_NTASKS", &v)?,
            None => 1,
        };
        let local_rank = match var("SLURM_LOCALID") {
            Some(v) => number("SLURM_LOCALID", &v)?,
            None => 0,
        };
        let master_addr = match var("MASTER_ADDR") {
            Some(addr) => addr,
            None => {
                let list = var("SLURM_STEP_NODELIST")
                    .or_else(|| var("SLURM_JOB_NODELIST"))
                    .unwrap_or_else(|| "127.0.0.1".into());
                expand_hostlist(&list)?.swap_remove(0)
            }
        };
        let master_port = match (var("MASTER_PORT"), var("SLURM_JOB_ID")) {
            (Some(v), _) => port("MASTER_PORT", &v)?,
            // The same port for every task of the job, away from the ephemeral range and
            // different between jobs sharing a node (Lightning derives it the same way).
            (None, Some(job)) => 15000 + (number("SLURM_JOB_ID", &job)? % 10000) as u16,
            (None, None) => DEFAULT_PORT,
        };
        Self::checked(LaunchEnv {
            launcher: Launcher::Slurm,
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        })
        .map(Some)
    }

    fn checked(env: LaunchEnv) -> Result<LaunchEnv, DistError> {
        if env.world_size == 0 {
            return Err(DistError::LaunchVariable {
                name: "WORLD_SIZE",
                value: "0".into(),
                problem: "the world has at least one rank".into(),
            });
        }
        if env.rank >= env.world_size {
            return Err(DistError::LaunchVariable {
                name: "RANK",
                value: env.rank.to_string(),
                problem: format!("not below the world size {}", env.world_size),
            });
        }
        Ok(env)
    }
}

fn number(name: &'static str, value: &str) -> Result<usize, DistError> {
    value.trim().parse().map_err(|_| DistError::LaunchVariable {
        name,
        value: value.into(),
        problem: "not a non-negative integer".into(),
    })
}

fn port(name: &'static str, value: &str) -> Result<u16, DistError> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(DistError::LaunchVariable {
            name,
            value: value.into(),
            problem: "not a TCP port (1–65535)".into(),
        }),
    }
}

/// Expands a Slurm host list: `node[01-04,7],gpu5` → node01 … node04, node7, gpu5
/// (zero padding kept; several bracket groups in one name give their product).
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, DistError> {
    let bad = |problem: &str| DistError::HostList {
        list: list.into(),
        problem: problem.into(),
    };
    let mut hosts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut names = Vec::new();
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or_else(|| bad("unbalanced ']'"))?,
            ',' if depth == 0 => {
                names.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(bad("unbalanced '['"));
    }
    names.push(&list[start..]);
    for name in names.into_iter().map(str::trim).filter(|n| !n.is_empty()) {
        expand_name(name, &mut hosts).map_err(|p| bad(&p))?;
    }
    if hosts.is_empty() {
        return Err(bad("no host"));
    }
    Ok(hosts)
}

/// Appends the hosts of one name with bracket groups, left to right.
fn expand_name(name: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = name.find('[') else {
        out.push(name.to_string());
        return Ok(());
    };
    let close = open + name[open..].find(']').ok_or("unbalanced '['")?;
    let (prefix, ranges, rest) = (&name[..open], &name[open + 1..close], &name[close + 1..]);
    for range in ranges.split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let width = lo.len();
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{range:?} is not a number range"))
        };
        let (lo_n, hi_n) = (parse(lo)?, parse(hi)?);
        if hi_n < lo_n {
            return Err(format!("{range:?} runs backwards"));
        }
        for n in lo_n..=hi_n {
            expand_name(&format!("{prefix}{n:0width$}{rest}"), out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<LaunchEnv>, DistError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn hostlists_expand_with_padding_and_products() {
        assert_eq!(
            expand_hostlist("node[01-04,7],gpu5").unwrap(),
            ["node01", "node02", "node03", "node04", "node7", "gpu5"]
        );
        assert_eq!(
            expand_hostlist("r[1-2]n[08-09]").unwrap(),
            ["r1n08", "r1n09", "r2n08", "r2n09"]
        );
        assert_eq!(expand_hostlist("solo").unwrap(), ["solo"]);
        assert!(expand_hostlist("node[3-1]").is_err());
        assert!(expand_hostlist("node[1-2").is_err());
        assert!(expand_hostlist("").is_err());
    }

    #[test]
    fn torchrun_variables_win_over_slurm() {
        let got = env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29400"),
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_ID", "0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            LaunchEnv {
                launcher: Launcher::Torchrun,
                rank: 1,
                world_size: 2,
                local_rank: 1,
                master_addr: "10.0.0.1".into(),
                master_port: 29400,
            }
        );
    }

    #[test]
    fn slurm_step_gives_rank_and_first_host_and_job_port() {
        let got = env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_NODELIST", "gpu[007-010]"),
            ("SLURM_JOB_ID", "123456"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(got.launcher, Launcher::Slurm);
        assert_eq!((got.rank, got.world_size, got.local_rank), (5, 8, 1));
        assert_eq!(got.master_addr, "gpu007");
        assert_eq!(got.master_port, 15000 + 3456);
    }

    #[test]
    fn no_launcher_is_one_process_and_bad_values_are_named() {
        assert_eq!(env(&[]).unwrap(), None);
        // The batch script of an sbatch job (no step) is not a rank.
        assert_eq!(
            env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]).unwrap(),
            None
        );
        let err = env(&[("RANK", "2"), ("WORLD_SIZE", "2")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "launch environment: RANK=\"2\": not below the world size 2"
        );
        let err = env(&[("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_PORT", "x")]).unwrap_err();
        assert!(err.to_string().contains("MASTER_PORT"), "{err}");
    }
}
