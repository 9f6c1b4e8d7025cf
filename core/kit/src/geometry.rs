//! Window geometry: the one place where convolution and pooling output sizes and input windows
//! are computed. Shape inference ([`crate::Graph::infer_shapes`]), the executor, the backward
//! passes and the importers all call it, so the PyTorch/ONNX rules below are written once. (A
//! graph node's window is read off its op: [`crate::Op::conv_window`], [`crate::Op::pool_window`].)
//!
//! Conventions: padding is 4-sided `[top, left, bottom, right]`; axis 0 is height, axis 1 width.

/// The geometry of a 2-D convolution or pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    pub dilation: [usize; 2],
}

/// Output length of a window op along one axis (PyTorch's and ONNX's rule): `len` input values,
/// a window spanning `extent` values, `stride`, padding `p0` before and `p1` after. With `ceil`,
/// a partial last window counts, but only if it starts inside the input or the leading padding.
/// `None` when the window does not fit the padded input, or the stride is 0.
pub fn out_len(
    len: usize,
    extent: usize,
    stride: usize,
    p0: usize,
    p1: usize,
    ceil: bool,
) -> Option<usize> {
    if stride == 0 || extent == 0 {
        return None;
    }
    let span = len.checked_add(p0)?.checked_add(p1)?.checked_sub(extent)?;
    let mut out = if ceil {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    if ceil && (out - 1) * stride >= len + p0 {
        out -= 1;
    }
    Some(out)
}

impl Window {
    /// A pooling-style window: no dilation.
    pub fn pool(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 4]) -> Self {
        Window {
            kernel,
            stride,
            padding,
            dilation: [1, 1],
        }
    }

    /// How many input values the window spans along `axis`: `(k - 1) * d + 1`, saturating (a
    /// dilation whose extent would wrap then fits no input).
    pub fn extent(&self, axis: usize) -> usize {
        self.kernel[axis]
            .saturating_sub(1)
            .saturating_mul(self.dilation[axis])
            .saturating_add(1)
    }

    /// Output length along `axis` for `len` input values ([`out_len`]); `None` when the window
    /// does not fit, or the kernel, stride or dilation is 0.
    pub fn out_len(&self, axis: usize, len: usize, ceil: bool) -> Option<usize> {
        if self.kernel[axis] == 0 || self.dilation[axis] == 0 {
            return None;
        }
        let (p0, p1) = (self.padding[axis], self.padding[axis + 2]);
        out_len(len, self.extent(axis), self.stride[axis], p0, p1, ceil)
    }

    /// Output size `(oh, ow)` for an `h x w` input; `None` when the window does not fit.
    pub fn output_size(&self, h: usize, w: usize, ceil: bool) -> Option<(usize, usize)> {
        Some((self.out_len(0, h, ceil)?, self.out_len(1, w, ceil)?))
    }

    /// The input window of output index `o` along `axis` of a pooling (no dilation) over `len`
    /// values: `(start, end)` clamped to the input, and the extent PyTorch divides an average
    /// by when padding counts (the window clamped to the padded input only).
    pub fn span(&self, axis: usize, o: usize, len: usize) -> (usize, usize, usize) {
        let (k, s, p0, p1) = (
            self.kernel[axis],
            self.stride[axis],
            self.padding[axis],
            self.padding[axis + 2],
        );
        let start = (o * s) as isize - p0 as isize;
        let end_padded = (start + k as isize).min((len + p1) as isize);
        let extent = (end_padded - start).max(0) as usize;
        // A window entirely in the padding (pads as large as the kernel, which ONNX allows) is
        // an empty range at the edge, never a start past its end.
        let lo = start.clamp(0, len as isize) as usize;
        let hi = end_padded.min(len as isize).max(lo as isize) as usize;
        (lo, hi, extent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-derived sizes, PyTorch's formula `floor((len + p0 + p1 - d (k - 1) - 1) / s) + 1`
    /// (ceil with its last-window rule).
    #[test]
    fn output_lengths_follow_pytorch() {
        assert_eq!(out_len(224, 3, 1, 1, 1, false), Some(224));
        assert_eq!(out_len(224, 11, 4, 2, 2, false), Some(55)); // AlexNet conv1
        assert_eq!(out_len(55, 3, 2, 0, 0, false), Some(27)); // AlexNet pool1
        assert_eq!(out_len(7, 2, 2, 0, 0, true), Some(4));
        assert_eq!(out_len(7, 2, 2, 0, 0, false), Some(3));
        // ceil: a last window that would start in the trailing padding is dropped.
        assert_eq!(out_len(4, 2, 2, 0, 1, true), Some(2));
        assert_eq!(out_len(5, 2, 2, 0, 1, true), Some(3));
        assert_eq!(out_len(4, 3, 2, 1, 1, true), Some(3));
        assert_eq!(out_len(2, 3, 1, 0, 0, false), None);
        assert_eq!(out_len(5, 3, 0, 0, 0, false), None);
        assert_eq!(out_len(usize::MAX, 1, 1, 1, 0, false), None);
        // Dilation: extent (3 - 1) * 2 + 1 = 5.
        let w = Window {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [2; 4],
            dilation: [2, 2],
        };
        assert_eq!(w.extent(0), 5);
        assert_eq!(w.output_size(10, 12, false), Some((10, 12)));
        let zero = Window::pool([0, 2], [1, 1], [0; 4]);
        assert_eq!(zero.output_size(4, 4, false), None);
    }

    #[test]
    fn spans_clamp_to_the_input_and_count_padding_to_the_padded_input() {
        let w = Window::pool([3, 3], [2, 2], [1, 1, 1, 1]);
        // o = 0 starts in the padding: input 0..2, extent 3 (padding counts).
        assert_eq!(w.span(0, 0, 5), (0, 2, 3));
        assert_eq!(w.span(0, 1, 5), (1, 4, 3));
        // The last window ends in the trailing padding.
        assert_eq!(w.span(0, 2, 5), (3, 5, 3));
        // A ceil-mode window past the padded input is clamped to it.
        let c = Window::pool([2, 2], [2, 2], [0; 4]);
        assert_eq!(c.span(1, 3, 7), (6, 7, 1));
        // A window entirely in a bottom padding of 7 (kernel 3, 8 rows): outputs 8 and 9
        // start past the input, an empty range at its edge; the extent is what the padding
        // holds.
        let p = Window::pool([3, 3], [1, 1], [0, 0, 7, 0]);
        assert_eq!(p.span(0, 8, 8), (8, 8, 3));
        assert_eq!(p.span(0, 9, 8), (8, 8, 3));
        assert_eq!(p.span(0, 7, 8), (7, 8, 3));
    }
}
