//! The shipped configs parse and agree with the reference defaults in code.
use gradstep_pnp::{Algorithm, AlgorithmConfig, Kernel, KernelSpec, Task};

fn configs_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/pnp"))
}

#[test]
fn shipped_configs_parse_and_validate() {
    let mut n = 0;
    for e in std::fs::read_dir(configs_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let c: AlgorithmConfig =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        c.validate().unwrap();
        n += 1;
    }
    assert!(n >= 5, "only {n} configs");
}

#[test]
fn deblur_reference_matches_its_config_file() {
    let text =
        std::fs::read_to_string(configs_dir().join("gs-pgd-deblur-levin-7.65.json")).unwrap();
    let c: AlgorithmConfig = serde_json::from_str(&text).unwrap();
    let mut r = AlgorithmConfig::reference(
        Algorithm::GsPgd,
        Task::Deblur,
        Some(&KernelSpec::Levin(0)),
        7.65,
    );
    let AlgorithmConfig::GsPgd(g) = &r else {
        panic!("not GS-PnP")
    };
    assert!((g.sigma - 13.77).abs() < 1e-9, "σ = 1.8ν = {}", g.sigma);
    r.set_sigma(13.77);
    assert_eq!(c, r);
}

#[test]
fn unknown_fields_are_rejected() {
    let bad = r#"{"algorithm":"hqs","lambda":0.23,"sigma_start":49,"sigma_end":7.65,"iterations":8,"typo":1}"#;
    assert!(serde_json::from_str::<AlgorithmConfig>(bad).is_err());
}

#[test]
fn an_empty_iteration_budget_is_refused_by_name() {
    // The loop steps before it tests the budget, so 0 would quietly run one iteration.
    for (kind, field) in [
        (Algorithm::GsPgd, "max_iter"),
        (Algorithm::ProxDrs, "max_iter"),
        (Algorithm::Hqs, "iterations"),
    ] {
        let mut c = AlgorithmConfig::reference(kind, Task::Denoise, None, 15.0);
        c.validate().unwrap();
        c.set_iterations(0);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(field) && err.contains("at least 1"), "{err}");
    }
}

#[test]
fn matlab_gaussian_and_uniform_kernels() {
    let g = Kernel::gaussian(25, 1.6).unwrap();
    let v = g.values();
    assert!((v.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    // Centre value of fspecial('gaussian', 25, 1.6): 1 / Σ exp(−r²/(2·1.6²)) ≈ 1/(2π·1.6²).
    let centre = v[12 * 25 + 12];
    assert!(
        (centre - 1.0 / (2.0 * std::f64::consts::PI * 2.56)).abs() < 1e-4,
        "{centre}"
    );
    assert_eq!(v[3 * 25 + 7], v[7 * 25 + 3]);
    let u = Kernel::uniform(9).unwrap();
    assert!(u.values().iter().all(|&x| (x - 1.0 / 81.0).abs() < 1e-15));
}

#[test]
fn kernel_lists_parse() {
    let l = KernelSpec::parse_list("levin:0-7,uniform,gaussian").unwrap();
    assert_eq!(l.len(), 10);
    assert_eq!(l[7], KernelSpec::Levin(7));
    assert!(KernelSpec::parse_list("blurry").is_err());
    // A missing benchmark set names its path and how to point at the right folder.
    let err = KernelSpec::Levin(0)
        .load(std::path::Path::new("/no/such/kernels"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/no/such/kernels/levin09.json") && err.contains("--kernel-dir"),
        "{err}"
    );
}

#[test]
fn benchmark_kernel_sets_load() {
    let dir = std::env::var_os("GRADSTEP_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"))
        })
        .join("data/kernels");
    if !dir.join("levin09.json").is_file() {
        if std::env::var("GRADSTEP_REQUIRE_SHARED").as_deref() == Ok("1") {
            panic!("GRADSTEP_REQUIRE_SHARED=1 but {} is missing", dir.display());
        }
        eprintln!(
            "skipping: no kernels at {} (set GRADSTEP_SHARED)",
            dir.display()
        );
        return;
    }
    let levin = gradstep_pnp::kernels::load_kernel_set(&dir.join("levin09.json")).unwrap();
    let sizes: Vec<usize> = levin.iter().map(|k| k.height()).collect();
    assert_eq!(sizes, vec![19, 17, 15, 27, 13, 21, 23, 23]);
    let k12 = gradstep_pnp::kernels::load_kernel_set(&dir.join("kernels12.json")).unwrap();
    assert_eq!(k12.len(), 12);
    assert!(k12
        .iter()
        .all(|k| k.height() == 25 && (k.values().iter().sum::<f64>() - 1.0).abs() < 1e-9));
    assert!(matches!(KernelSpec::Levin(9).load(&dir), Err(e) if e.to_string().contains("index 9")));
}

#[test]
fn denoiser_levels_beyond_255_are_refused_by_field() {
    // 1e308 passed the old "positive and finite" check and overflowed σ² in the algorithms.
    for kind in [Algorithm::GsPgd, Algorithm::ProxDrs, Algorithm::Hqs] {
        let mut c = AlgorithmConfig::reference(kind, Task::Denoise, None, 15.0);
        c.set_sigma(1e308);
        let err = c.validate().unwrap_err().to_string();
        let field = if kind == Algorithm::Hqs {
            "sigma_end"
        } else {
            "sigma"
        };
        assert!(err.starts_with(field) && err.contains("(0, 255]"), "{err}");
        c.set_sigma(255.0);
        c.validate().unwrap();
    }
    let inpaint = r#"{"algorithm": "gs-pgd", "lambda": 0.1, "sigma": 10, "gamma": 0.1, "eta": 0.9,
        "backtracking": false, "max_iter": 3, "tol": null, "warmup": {"sigma": 300, "iterations": 2}}"#;
    let c: AlgorithmConfig = serde_json::from_str(inpaint).unwrap();
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("warmup.sigma"));
}

#[test]
fn kernels_whose_sum_overflows_or_with_nan_entries_are_refused() {
    // Finite entries, infinite sum: normalising made every entry 0.
    let err = Kernel::new(2, 2, vec![1e308; 4]).unwrap_err().to_string();
    assert!(err.contains("sum to inf"), "{err}");
    let err = Kernel::new(1, 3, vec![1.0, f64::NAN, 1.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("entry 1 is NaN"), "{err}");
    let side = Kernel::MAX_SIDE + 1;
    let err = Kernel::new(side, 1, vec![1.0; side])
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 to 1024"), "{err}");
    // Large but summable entries are fine.
    let k = Kernel::new(1, 2, vec![1e300, 3e300]).unwrap();
    assert_eq!(k.values(), [0.25, 0.75]);
}

#[test]
fn one_override_builder_serves_the_command_line_and_the_sweeps() {
    use gradstep_pnp::{GsOutput, Overrides};
    let base = AlgorithmConfig::reference(Algorithm::GsPgd, Task::Deblur, None, 7.65);
    let c = base
        .clone()
        .with_overrides(&Overrides {
            lambda: Some(0.2),
            sigma: Some(12.0),
            max_iter: Some(7),
            tau0: Some(3.0),
            backtracking: Some(false),
            output: Some(GsOutput::X),
            ..Overrides::default()
        })
        .unwrap();
    let AlgorithmConfig::GsPgd(g) = &c else {
        panic!("not GS-PnP")
    };
    assert_eq!(
        (
            g.lambda,
            g.sigma,
            g.max_iter,
            g.tau0,
            g.backtracking,
            g.output
        ),
        (0.2, 12.0, 7, Some(3.0), false, GsOutput::X)
    );
    // No override: the config itself.
    assert_eq!(
        base.clone().with_overrides(&Overrides::default()).unwrap(),
        base
    );
    // A value the algorithm has no use for is refused by name; HQS ignores a tolerance.
    let alpha = Overrides {
        alpha: Some(0.5),
        ..Overrides::default()
    };
    let e = base.with_overrides(&alpha).unwrap_err().to_string();
    assert_eq!(e, "alpha does not apply to gs-pgd");
    let hqs = AlgorithmConfig::reference(Algorithm::Hqs, Task::Deblur, None, 7.65);
    let tol = Overrides {
        tol: Some(1e-3),
        ..Overrides::default()
    };
    assert_eq!(hqs.clone().with_overrides(&tol).unwrap(), hqs);
    // The result is validated.
    let bad = Overrides {
        lambda: Some(-1.0),
        ..Overrides::default()
    };
    let e = hqs.with_overrides(&bad).unwrap_err().to_string();
    assert!(e.contains("lambda must be positive"), "{e}");
}
