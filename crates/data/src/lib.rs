//! Images in, tensors out: the one image loader and writer, PSNR / SSIM, and (for
//! training) patch sampling and validation sets.
#![deny(missing_docs)]

mod error;
pub mod image_io;
pub mod metrics;

pub use error::{DataError, Result};
pub use image_io::{load_image, save_image};
pub use metrics::{psnr, ssim};
