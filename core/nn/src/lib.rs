//! `sr-nn`: srhost's numeric engine. It runs a model's graph IR ([`sr_core::Graph`]) on the
//! CPU and walks it backwards for relevance methods; stages that need no model math (saliency,
//! renderers) depend on the plugin kit `sr-core` alone.
//!
//! - [`exec`]: the executor (`forward`, `trace`);
//! - [`ops`]: the kernels, by family (convolution, dense, pooling, normalisation, the rules'
//!   fused element-wise steps, buffers);
//! - [`propagate`]: the modified backward pass every relevance method runs, with its
//!   [`propagate::LayerRule`] callback, planned once per model ([`propagate::Plan`]);
//! - [`prepared`]: what a relevance method derives from a model when it binds to it
//!   ([`Prepared`]);
//! - [`attribution`]: the attribution recipe ([`Attributor`]): trace, target checks, seed,
//!   backward pass and per-sample statistics;
//! - [`alloc`]: the allocator `srhost` and the benches use, which keeps large freed buffers.

pub mod alloc;
pub mod attribution;
pub mod exec;
pub mod ops;
pub mod prepared;
pub mod propagate;
pub mod randomize;

pub use attribution::Attributor;
pub use exec::Executor;
pub use prepared::{LayerWeights, Prepared};

use candle_core::{DType, Device, Tensor as CTensor};
use sr_core::{Error, Result, Tensor};

/// An sr-core tensor as a candle tensor (one copy).
pub fn to_candle(t: &Tensor) -> Result<CTensor> {
    CTensor::from_slice(t.data(), t.shape(), &Device::Cpu)
        .map_err(|e| Error::internal(e.to_string()))
}

/// A candle tensor as an sr-core tensor (one copy).
pub fn from_candle(t: &CTensor) -> Result<Tensor> {
    let shape = t.dims().to_vec();
    let data = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| Error::internal(e.to_string()))?;
    Tensor::new(shape, data)
}
