//! Autocast regions are scopes: nested guards restore each level, and a panic unwinding
//! through a guard leaves the state as it found it (issue 16). On the CPU this exercises
//! libtorch's CPU autocast state, which exists in every build that has the shim.
use gradstep_model::autocast::{state, AutocastDevice, AutocastGuard, AutocastState};
use gradstep_model::Precision;
use tch::Kind;

const CPU: AutocastDevice = AutocastDevice::Cpu;

fn cpu_state() -> AutocastState {
    state(CPU).expect("this build has the autocast shim (libtorch with CUDA)")
}

#[test]
fn nested_guards_restore_each_level() {
    let outside = cpu_state();
    assert!(!outside.enabled, "{outside:?}");
    {
        let _bf16 = AutocastGuard::enter(CPU, Precision::Bf16);
        let level1 = AutocastState {
            enabled: true,
            dtype: Kind::BFloat16,
        };
        assert_eq!(cpu_state(), level1);
        {
            let _fp16 = AutocastGuard::enter(CPU, Precision::Fp16);
            assert_eq!(
                cpu_state(),
                AutocastState {
                    enabled: true,
                    dtype: Kind::Half
                }
            );
            {
                let _off = AutocastGuard::disabled(CPU);
                assert_eq!(
                    cpu_state(),
                    AutocastState {
                        enabled: false,
                        dtype: Kind::Half
                    }
                );
                // Float32 opens no region: the state around it stays.
                let _fp32 = AutocastGuard::enter(CPU, Precision::Fp32);
                assert!(!cpu_state().enabled);
            }
            assert_eq!(cpu_state().dtype, Kind::Half);
            assert!(cpu_state().enabled);
        }
        assert_eq!(cpu_state(), level1);
    }
    assert_eq!(cpu_state(), outside);
}

#[test]
fn a_panic_inside_a_guard_leaves_the_state_as_before() {
    let before = cpu_state();
    let caught = std::panic::catch_unwind(|| {
        let _bf16 = AutocastGuard::enter(CPU, Precision::Bf16);
        assert!(cpu_state().enabled);
        let _off = AutocastGuard::disabled(CPU);
        panic!("a failing sweep point");
    });
    assert!(caught.is_err());
    assert_eq!(cpu_state(), before);
    assert!(!cpu_state().enabled);
    // A region opened after the panic is a fresh one, closed as usual.
    {
        let _bf16 = AutocastGuard::enter(CPU, Precision::Bf16);
        assert!(cpu_state().enabled);
    }
    assert_eq!(cpu_state(), before);
}

#[test]
fn autocast_on_the_cpu_changes_an_eligible_operation_and_its_guard_ends_it() {
    // The guard acts on the state libtorch's dispatcher reads: a matmul under a CPU bf16
    // region returns bf16, and float32 again once the guard is gone.
    let a = tch::Tensor::ones([4, 4], (Kind::Float, tch::Device::Cpu));
    {
        let _bf16 = AutocastGuard::enter(CPU, Precision::Bf16);
        assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
    }
    assert_eq!(a.matmul(&a).kind(), Kind::Float);
}

#[test]
fn on_a_gpu_the_denoiser_region_nests_and_closes_like_the_cpu_one() {
    use gradstep_model::autocast::autocast_available;
    if !autocast_available() {
        eprintln!("skipping: no CUDA autocast here");
        return;
    }
    let cuda = || state(AutocastDevice::Cuda).unwrap();
    let before = cuda();
    let caught = std::panic::catch_unwind(|| {
        let _bf16 = AutocastGuard::cuda(Precision::Bf16);
        assert_eq!(
            cuda(),
            AutocastState {
                enabled: true,
                dtype: Kind::BFloat16
            }
        );
        {
            let _fp16 = AutocastGuard::cuda(Precision::Fp16);
            assert_eq!(cuda().dtype, Kind::Half);
        }
        assert_eq!(cuda().dtype, Kind::BFloat16);
        panic!("a failing sweep point under bf16");
    });
    assert!(caught.is_err());
    assert_eq!(cuda(), before);
}
