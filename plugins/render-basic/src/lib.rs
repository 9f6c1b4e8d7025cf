//! `renderer.edge-overlay`: the SR map drawn over a Canny edge map of the photo, as in the
//! paper's Figs. 1, 3 and 10: edges in grey, the map in the red channel.
//!
//! For every relevance branch with an SR map it writes `sr-edges-<branch>.png`; for the photo's
//! own saliency, `saliency-photo-edges.png`. The edges are those of the photo as the model saw
//! it (the crop), or of the whole photo without a model.

use serde::{Deserialize, Serialize};
use sr_core::{
    Artifact, Error, Image, Params, RenderInput, Renderer, RendererStage, Result, StageDef,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeOverlayParams {
    /// Canny's low hysteresis threshold, on the 0-255 gradient magnitude.
    pub low: f32,
    /// Canny's high threshold.
    pub high: f32,
    /// Grey level of the edges (0-1).
    pub edge_level: f32,
}

impl Default for EdgeOverlayParams {
    fn default() -> Self {
        EdgeOverlayParams {
            low: 50.0,
            high: 100.0,
            edge_level: 0.6,
        }
    }
}

impl Params for EdgeOverlayParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        (
            "low",
            "Canny low threshold (gradient magnitude, 0-255 scale)",
        ),
        ("high", "Canny high threshold (>= low)"),
        ("edge_level", "grey level of the edges, 0-1"),
    ];
}

pub struct EdgeOverlay(EdgeOverlayParams);

impl RendererStage for EdgeOverlay {
    type Params = EdgeOverlayParams;
    fn build(p: EdgeOverlayParams) -> Result<Self> {
        if !(p.low > 0.0 && p.high >= p.low) {
            return Err(Error::params(format!(
                "Canny thresholds need 0 < low <= high, got low = {}, high = {}",
                p.low, p.high
            )));
        }
        if !(0.0..=1.0).contains(&p.edge_level) {
            return Err(Error::params(format!(
                "`edge_level` must lie in [0, 1], got {}",
                p.edge_level
            )));
        }
        Ok(EdgeOverlay(p))
    }
}

/// Canny edges of an RGB image in [0, 1], as a `w x h` mask.
///
/// imageproc's hysteresis walks off the image (and panics) when a zero gradient counts as an
/// edge, i.e. with a threshold of 0 on a flat image: thresholds are kept strictly positive,
/// and images under 3 pixels a side have no edges.
pub fn edges(photo: &Image, low: f32, high: f32) -> Vec<bool> {
    if photo.width < 3 || photo.height < 3 {
        return vec![false; photo.width * photo.height];
    }
    let low = low.max(1e-3);
    let high = high.max(low);
    let grey: Vec<u8> = (0..photo.width * photo.height)
        .map(|i| {
            let c = photo.channels;
            let v: f32 =
                (0..c.min(3)).map(|k| photo.data()[i * c + k]).sum::<f32>() / c.min(3) as f32;
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect();
    let g = image::GrayImage::from_raw(photo.width as u32, photo.height as u32, grey)
        .expect("sizes agree");
    imageproc::edges::canny(&g, low, high)
        .into_raw()
        .into_iter()
        .map(|v| v > 0)
        .collect()
}

/// The overlay: edges in grey, `map` (one channel in [0, 1]) in red.
pub fn overlay(edges: &[bool], map: &Image, edge_level: f32) -> Result<Vec<u8>> {
    if edges.len() != map.width * map.height {
        return Err(Error::input(format!(
            "edge map and saliency map sizes differ ({} vs {}x{})",
            edges.len(),
            map.width,
            map.height
        )));
    }
    let px: Vec<u8> = (0..edges.len())
        .flat_map(|i| {
            let e = if edges[i] { edge_level } else { 0.0 };
            let s = map.data()[i * map.channels].clamp(0.0, 1.0);
            [s.max(e), e * (1.0 - s), e * (1.0 - s)].map(|v| (v * 255.0).round() as u8)
        })
        .collect();
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_raw(map.width as u32, map.height as u32, px)
        .expect("sizes agree")
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::internal(format!("PNG encoding failed: {e}")))?;
    Ok(out.into_inner())
}

impl Renderer for EdgeOverlay {
    fn render(&self, input: &RenderInput) -> Result<Vec<Artifact>> {
        let base = input.model_input.as_ref().unwrap_or(&input.photo);
        let e = edges(base, self.0.low, self.0.high);
        let mut out = vec![];
        for b in &input.branches {
            if let Some(sr) = &b.sr {
                out.push(Artifact {
                    name: format!("sr-edges-{}.png", b.branch),
                    bytes: overlay(&e, sr, self.0.edge_level)?,
                });
            }
        }
        if let Some(s) = &input.photo_saliency {
            out.push(Artifact {
                name: "saliency-photo-edges.png".into(),
                bytes: overlay(&e, s, self.0.edge_level)?,
            });
        }
        Ok(out)
    }
}

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [StageDef::renderer::<EdgeOverlay>(
        "edge-overlay",
        env!("CARGO_PKG_VERSION"),
        "The SR map in red over a Canny edge map of the photo (the paper's Fig. 1).",
    )],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_images_have_no_edges_and_do_not_panic() {
        let flat = Image::new(32, 24, 3, vec![0.5; 32 * 24 * 3]).unwrap();
        assert!(edges(&flat, 50.0, 100.0).iter().all(|&e| !e));
        let black = Image::new(8, 8, 3, vec![0.0; 8 * 8 * 3]).unwrap();
        assert!(edges(&black, 0.0, 0.0).iter().all(|&e| !e));
    }

    #[test]
    fn a_step_has_an_edge_along_it_and_the_map_goes_red() {
        // Left half black, right half white: the edge runs down the middle columns.
        let (w, h) = (40, 30);
        let step = Image::new(
            w,
            h,
            3,
            (0..w * h * 3)
                .map(|i| if (i / 3) % w >= w / 2 { 1.0 } else { 0.0 })
                .collect(),
        )
        .unwrap();
        let e = edges(&step, 50.0, 100.0);
        for y in 5..h - 5 {
            assert!(
                (w / 2 - 2..w / 2 + 2).any(|x| e[y * w + x]),
                "no edge in row {y}"
            );
            assert!(
                !e[y * w + 3] && !e[y * w + w - 4],
                "spurious edge in row {y}"
            );
        }
        let map = Image::new(w, h, 1, vec![1.0; w * h]).unwrap();
        let png = overlay(&e, &map, 0.6).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.get_pixel(3, 15).0, [255, 0, 0]);
    }

    #[test]
    fn thresholds_are_checked() {
        let e = EdgeOverlay::build(EdgeOverlayParams {
            low: 80.0,
            high: 40.0,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.message.contains("0 < low <= high"), "{e}");
        assert!(EdgeOverlay::build(EdgeOverlayParams {
            low: 0.0,
            ..Default::default()
        })
        .is_err());
    }
}
