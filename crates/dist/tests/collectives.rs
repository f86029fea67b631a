//! Two ranks on this machine (threads of the test process, Gloo over loopback, a TCPStore on
//! a free port): the collectives give the right numbers, and a missing or lost rank is
//! named within the timeout.
use std::net::TcpListener;
use std::time::{Duration, Instant};

use gradstep_dist::{Backend, DistError, ProcessGroup, ReduceOp, Rendezvous};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rendezvous() -> Rendezvous {
    Rendezvous::Tcp {
        host: "127.0.0.1".into(),
        port: free_port(),
    }
}

/// Runs `body(rank, group)` on two ranks at once and returns their results by rank.
fn two_ranks<T: Send + 'static>(timeout: Duration, body: fn(usize, ProcessGroup) -> T) -> Vec<T> {
    let at = rendezvous();
    let handles: Vec<_> = (0..2)
        .map(|rank| {
            let at = at.clone();
            std::thread::spawn(move || {
                let group = ProcessGroup::new(&at, rank, 2, Backend::Gloo, timeout).unwrap();
                assert_eq!((group.rank(), group.world_size()), (rank, 2));
                body(rank, group)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn all_reduce_sum_max_average_and_broadcast_on_two_ranks() {
    let results = two_ranks(Duration::from_secs(60), |rank, group| {
        let r = rank as f32;
        // A large flat bucket (1 Mi floats) and a small one in the same call.
        let big = Tensor::full(
            [1 << 20],
            f64::from(r) + 1.0,
            (Kind::Float, tch::Device::Cpu),
        );
        let small = Tensor::from_slice(&[r, 10.0 * r, -r]);
        group
            .all_reduce(&[big.shallow_clone(), small.shallow_clone()], ReduceOp::Sum)
            .unwrap();
        let max = Tensor::from_slice(&[r, 5.0 - r]);
        group
            .all_reduce(&[max.shallow_clone()], ReduceOp::Max)
            .unwrap();
        let avg = Tensor::from_slice(&[r * 4.0, 1.0]);
        group
            .all_reduce(&[avg.shallow_clone()], ReduceOp::Average)
            .unwrap();
        let bcast = Tensor::from_slice(&[r + 7.0]);
        group.broadcast(&[bcast.shallow_clone()], 1).unwrap();
        group.barrier().unwrap();
        (
            big.min().double_value(&[]),
            big.max().double_value(&[]),
            Vec::<f64>::try_from(&small).unwrap(),
            Vec::<f64>::try_from(&max).unwrap(),
            Vec::<f64>::try_from(&avg).unwrap(),
            bcast.double_value(&[0]),
        )
    });
    for (big_min, big_max, small, max, avg, bcast) in results {
        assert_eq!((big_min, big_max), (3.0, 3.0));
        assert_eq!(small, [1.0, 10.0, -1.0]);
        assert_eq!(max, [1.0, 5.0]);
        assert_eq!(avg, [2.0, 1.0]);
        assert_eq!(bcast, 8.0);
    }
}

#[test]
fn a_rank_that_never_joins_is_named_within_the_timeout() {
    let start = Instant::now();
    let err = match ProcessGroup::new(&rendezvous(), 0, 2, Backend::Gloo, Duration::from_secs(3)) {
        Err(e) => e,
        Ok(_) => panic!("a world of 2 formed with one rank"),
    };
    let elapsed = start.elapsed();
    assert!(
        matches!(err, DistError::RanksMissing { ref missing, .. } if missing == &[1]),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("rank(s) [1] of 2 did not join within 3s"),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn a_rank_that_leaves_is_named_by_the_next_collective() {
    let results = two_ranks(Duration::from_secs(5), |rank, group| {
        let t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
        group
            .all_reduce(&[t.shallow_clone()], ReduceOp::Sum)
            .unwrap();
        if rank == 1 {
            // Rank 1 goes away (its connections close) while rank 0 reduces again.
            drop(group);
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        let err = group
            .all_reduce(&[t.shallow_clone()], ReduceOp::Sum)
            .unwrap_err();
        Some((err, start.elapsed()))
    });
    let (err, elapsed) = results[0].as_ref().unwrap();
    assert!(
        matches!(err, DistError::RankLost { missing, .. } if missing == &[1]),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("all-reduce failed on rank 0: rank(s) [1] stopped answering"),
        "{err}"
    );
    assert!(*elapsed < Duration::from_secs(20), "{elapsed:?}");
}

#[test]
fn an_unreachable_master_is_one_line() {
    // Nothing listens on this port and rank 1 is not the host.
    let at = rendezvous();
    let err = match ProcessGroup::new(&at, 1, 2, Backend::Gloo, Duration::from_secs(2)) {
        Err(e) => e,
        Ok(_) => panic!("joined a store nobody hosts"),
    };
    let line = err.to_string();
    assert!(
        line.starts_with(&format!("rendezvous at {at} failed: ")),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
}
