//! Tensors and images: dense f32 buffers shared through `RArc`, so they cross the plugin ABI
//! without a copy.

use crate::error::{Error, Result};
use abi_stable::std_types::{RArc, RVec};
use sr_abi::{FfiImage, FfiTensor};

/// A dense row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: RArc<RVec<f32>>,
}

impl Tensor {
    /// A tensor of `shape` over `data`; the lengths must agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::input(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            shape,
            data: RArc::new(RVec::from(data)),
        })
    }
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: RArc::new(RVec::from(vec![0.0; n])),
        }
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// Sample `i` of a batch (axis 0), as a batch of 1.
    pub fn sample(&self, i: usize) -> Result<Self> {
        let n = self.shape.first().copied().unwrap_or(0);
        if i >= n {
            return Err(Error::internal(format!(
                "sample {i} of a batch of {n} ({:?})",
                self.shape
            )));
        }
        let per = self.numel() / n;
        let mut shape = self.shape.clone();
        shape[0] = 1;
        Tensor::new(shape, self.data[i * per..(i + 1) * per].to_vec())
    }

    /// Batches of the same shape after axis 0, one after the other along axis 0.
    pub fn stack(parts: &[Tensor]) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| Error::internal("stacking no tensors"))?;
        if first.shape.is_empty()
            || parts
                .iter()
                .any(|p| p.shape.get(1..) != first.shape.get(1..))
        {
            return Err(Error::internal(format!(
                "stacking tensors of different shapes ({:?}, ...)",
                first.shape
            )));
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        let data = parts
            .iter()
            .flat_map(|p| p.data().iter().copied())
            .collect();
        Tensor::new(shape, data)
    }

    /// The same buffer under another shape with as many elements.
    pub fn reshape(&self, shape: Vec<usize>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::input(format!(
                "cannot reshape {:?} ({} values) to {shape:?}",
                self.shape,
                self.numel()
            )));
        }
        Ok(Tensor {
            shape,
            data: self.data.clone(),
        })
    }
    pub fn to_ffi(&self) -> FfiTensor {
        FfiTensor {
            shape: self.shape.iter().map(|&d| d as u64).collect(),
            data: self.data.clone(),
        }
    }
    /// Checks that the shape and the buffer agree (data from a plugin is not trusted).
    pub fn from_ffi(t: &FfiTensor) -> Result<Self> {
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let n: usize = shape.iter().product();
        if n != t.data.len() {
            return Err(Error::input(format!(
                "tensor of shape {shape:?} carries {} values, expected {n}",
                t.data.len()
            )));
        }
        Ok(Tensor {
            shape,
            data: t.data.clone(),
        })
    }
}

/// An image or map: `height x width x channels`, interleaved, f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    data: RArc<RVec<f32>>,
}

impl Image {
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Result<Self> {
        if width * height * channels != data.len() || width == 0 || height == 0 || channels == 0 {
            return Err(Error::input(format!(
                "image {width}x{height}x{channels} cannot hold {} values",
                data.len()
            )));
        }
        Ok(Image {
            width,
            height,
            channels,
            data: RArc::new(RVec::from(data)),
        })
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// The value at (`x`, `y`) in channel `c`.
    pub fn get(&self, x: usize, y: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * self.channels + c]
    }
    pub fn to_ffi(&self) -> FfiImage {
        FfiImage {
            width: self.width as u32,
            height: self.height as u32,
            channels: self.channels as u32,
            data: self.data.clone(),
        }
    }
    pub fn from_ffi(i: &FfiImage) -> Result<Self> {
        let (w, h, c) = (i.width as usize, i.height as usize, i.channels as usize);
        if w * h * c != i.data.len() || w == 0 || h == 0 || c == 0 {
            return Err(Error::input(format!(
                "image {w}x{h}x{c} carries {} values",
                i.data.len()
            )));
        }
        Ok(Image {
            width: w,
            height: h,
            channels: c,
            data: i.data.clone(),
        })
    }
}
