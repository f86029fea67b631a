//! The GS training step ([`GsStep::run_on_device`], the trainer's step with Adam's
//! hyper-parameters on the device) captured once in a CUDA graph and replayed
//! (`performance.cuda_graph`): one launch per step instead of ~1,400, and no host read
//! inside the step.
//!
//! A replay runs the captured kernels with every address and every host number fixed at
//! capture, so whatever changes from one step to the next lives in device buffers written
//! before each replay: the clean batch, the noise `ξ`, the levels `σ` (per image,
//! `[B, 1, 1, 1]`, given to the network as a map) and Adam's step count and learning rate
//! ([`DeviceHyper`]); clipping is computed on the device
//! ([`Adam::clip_grad_norm_on_device`]). The loss, the MSE and the gradient norm are read
//! once after the step. One consequence: a non-finite loss is seen after its update was
//! applied; training then stops with [`TrainError::Diverged`] before any checkpoint of the
//! damaged weights is written.
//!
//! The first [`WARM_UP`] steps run eagerly on the capture stream (cuDNN's autotuning and
//! libtorch's lazy allocations must not happen during capture); the next one is captured,
//! then every step replays it. On the CPU the same device-resident step runs eagerly at
//! every step: the tests check it against the ordinary step and for exact resume.
//!
//! The noise is the ordinary step's ([`crate::noise::draw_noise`]), so a run can switch
//! between the two on resume.
use gradstep_model::cuda::CudaGraph;
use gradstep_model::{GradientStepDenoiser, Sigma};
use tch::{Device, Kind, Tensor};

use crate::adam::{Adam, DeviceHyper};
use crate::config::{Objective, TrainConfig, CUDA_GRAPH_GS_ONLY};
use crate::error::{Result, TrainError};
use crate::logging::StepScalars;
use crate::step::{read_step_numbers, GradientSync, GsStep, NoisyBatch, StepTensors};

/// Eager steps on the capture stream before the capture.
pub const WARM_UP: usize = 3;

/// The device buffers a captured step reads.
struct Buffers {
    clean: Tensor,
    noise: Tensor,
    /// `σ` per image, `[B, 1, 1, 1]`.
    sigma: Tensor,
    step: GsStep,
}

impl Buffers {
    /// The step itself ([`GsStep::run_on_device`] on the batch in the buffers).
    fn step(
        &self,
        den: &GradientStepDenoiser,
        adam: &mut Adam,
        hyper: &mut DeviceHyper,
        sync: &mut dyn GradientSync,
    ) -> Result<StepTensors> {
        let s = self.clean.size();
        let batch = NoisyBatch {
            clean: self.clean.shallow_clone(),
            noisy: self.clean.f_add(&self.noise.f_mul(&self.sigma)?)?,
            sigma: Sigma::Map(self.sigma.f_expand([s[0], 1, s[2], s[3]], false)?),
        };
        self.step.run_on_device(den, adam, &batch, hyper, sync)
    }
}

/// A GS training step that is captured in a CUDA graph after [`WARM_UP`] eager steps.
pub struct GraphedStep {
    buffers: Buffers,
    hyper: DeviceHyper,
    lr: f64,
    graph: Option<CudaGraph>,
    eager_steps: usize,
    /// What the captured step leaves behind (its outputs' buffers).
    outputs: Option<StepTensors>,
}

impl GraphedStep {
    /// Buffers for `cfg`'s batch shape on `device`, Adam's step count and learning rate
    /// taken from `adam` (create it after a resume has restored Adam).
    pub fn new(cfg: &TrainConfig, adam: &Adam, device: Device) -> Result<Self> {
        if !matches!(cfg.objective, Objective::Gs) {
            return Err(TrainError::Config(CUDA_GRAPH_GS_ONLY.into()));
        }
        let d = &cfg.data;
        let (b, p) = (d.batch_size, d.patch_size);
        let opts = (Kind::Float, device);
        let graph = if device.is_cuda() {
            Some(CudaGraph::new(device).map_err(TrainError::Config)?)
        } else {
            None
        };
        Ok(GraphedStep {
            buffers: Buffers {
                clean: Tensor::f_zeros([b, d.channels, p, p], opts)?,
                noise: Tensor::f_zeros([b, d.channels, p, p], opts)?,
                sigma: Tensor::f_zeros([b, 1, 1, 1], opts)?,
                step: GsStep::from_config(cfg),
            },
            hyper: adam.device_hyper()?,
            lr: adam.lr(),
            graph,
            eager_steps: 0,
            outputs: None,
        })
    }

    /// Whether the step has been captured (and is now replayed).
    pub fn captured(&self) -> bool {
        self.outputs.is_some()
    }

    /// One training step on `clean` with the step's noise `(ξ, σ)` (from
    /// [`crate::noise::NoisePrefetch`]) at learning rate `lr`; `sync` averages the gradients
    /// (captured with the rest on CUDA: it must enqueue device work only).
    pub fn step(
        &mut self,
        den: &GradientStepDenoiser,
        adam: &mut Adam,
        clean: &Tensor,
        noise: (Tensor, Vec<f64>),
        lr: f64,
        sync: &mut dyn GradientSync,
    ) -> Result<StepScalars> {
        let (xi, sigmas) = noise;
        let b = self.buffers.clean.size()[0] as usize;
        let per_image: Vec<f64> = match sigmas.len() {
            1 => vec![sigmas[0]; b],
            _ => sigmas,
        };
        let levels = Tensor::f_from_slice(&per_image)?
            .f_to_kind(Kind::Float)?
            .f_to_device(self.buffers.sigma.device())?
            .f_view([b as i64, 1, 1, 1])?;
        tch::no_grad(|| -> Result<()> {
            self.buffers.clean.shallow_clone().f_copy_(clean)?;
            self.buffers.noise.shallow_clone().f_copy_(&xi)?;
            self.buffers.sigma.shallow_clone().f_copy_(&levels)?;
            if lr != self.lr {
                let _ = self.hyper.lr.f_fill_(lr)?;
                self.lr = lr;
            }
            Ok(())
        })?;
        adam.set_lr(lr);
        let outputs = self.run(den, adam, sync)?;
        adam.count_device_step();
        let (loss, mse, grad_norm) = read_step_numbers(
            &outputs.loss,
            &outputs.mse,
            &outputs.grad_norm,
            " (in a CUDA-graph step the update is already applied: the weights in memory are not saved)",
        )?;
        Ok(StepScalars {
            loss,
            mse,
            lr,
            grad_norm,
            steps_per_s: 0.0,
            prox: None,
        })
    }

    /// Runs the step: eagerly (CPU, or warm-up), by capture then replay, or by replay.
    fn run(
        &mut self,
        den: &GradientStepDenoiser,
        adam: &mut Adam,
        sync: &mut dyn GradientSync,
    ) -> Result<StepTensors> {
        let (buffers, hyper) = (&self.buffers, &mut self.hyper);
        let Some(graph) = self.graph.as_mut() else {
            return buffers.step(den, adam, hyper, sync);
        };
        let graph_error = |e: String| TrainError::Config(format!("performance.cuda_graph: {e}"));
        if let Some(out) = &self.outputs {
            graph.replay().map_err(graph_error)?;
            return Ok(out.shallow_clone());
        }
        if self.eager_steps < WARM_UP {
            self.eager_steps += 1;
            return graph
                .on_side_stream(|| buffers.step(den, adam, hyper, sync))
                .map_err(graph_error)?;
        }
        let out = graph
            .capture(|| buffers.step(den, adam, hyper, sync))
            .map_err(graph_error)?;
        graph.replay().map_err(graph_error)?;
        self.outputs = Some(out.shallow_clone());
        Ok(out)
    }
}
