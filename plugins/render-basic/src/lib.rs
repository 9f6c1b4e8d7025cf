//! Renderers:
//!
//! - `renderer.edge-overlay`: the SR map drawn over a Canny edge map of the photo, as in the
//!   paper's Figs. 1, 3 and 10: edges in grey, the map in the red channel. For every relevance
//!   branch with an SR map it writes `sr-edges-<branch>.png`; for the photo's own saliency,
//!   `saliency-photo-edges.png`. The edges are those of the photo as the model saw it (the
//!   crop), or of the whole photo without a model.
//! - `renderer.heatmap`: relevance maps (summed over channels) with a colormap and percentile
//!   clipping: signed colormaps (`bwr`, `seismic`) symmetric about 0, unsigned ones (`hot`,
//!   `jet`, `grey`) on |R|. Writes `<prefix>-<branch>.png` (`heatmap-<branch>.png` by default;
//!   srhost makes every branch's `relevance-<branch>.png` with it).

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

/// A colormap: `signed` maps take values in [-1, 1], the others in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colormap {
    Bwr,
    Seismic,
    Hot,
    Jet,
    Grey,
    Turbo,
}

impl Colormap {
    pub fn parse(name: &str) -> Result<Colormap> {
        Ok(match name {
            "bwr" => Colormap::Bwr,
            "seismic" => Colormap::Seismic,
            "hot" => Colormap::Hot,
            "jet" => Colormap::Jet,
            "turbo" => Colormap::Turbo,
            "grey" | "gray" => Colormap::Grey,
            o => {
                return Err(Error::params(format!("unknown colormap `{o}`"))
                    .with_help("signed: bwr, seismic; unsigned: hot, turbo, jet, grey"))
            }
        })
    }

    pub fn signed(self) -> bool {
        matches!(self, Colormap::Bwr | Colormap::Seismic)
    }

    /// RGB in [0, 1] for `v` (in [-1, 1] for signed maps, [0, 1] otherwise).
    pub fn rgb(self, v: f32) -> [f32; 3] {
        let c = |x: f32| x.clamp(0.0, 1.0);
        match self {
            // Blue (-1), white (0), red (+1), linearly.
            Colormap::Bwr => {
                if v >= 0.0 {
                    [1.0, 1.0 - v, 1.0 - v]
                } else {
                    [1.0 + v, 1.0 + v, 1.0]
                }
            }
            // matplotlib's seismic: dark blue, blue, white, red, dark red at -1, -0.5, 0, 0.5, 1.
            Colormap::Seismic => {
                let stops: [(f32, [f32; 3]); 5] = [
                    (-1.0, [0.0, 0.0, 0.3]),
                    (-0.5, [0.0, 0.0, 1.0]),
                    (0.0, [1.0, 1.0, 1.0]),
                    (0.5, [1.0, 0.0, 0.0]),
                    (1.0, [0.5, 0.0, 0.0]),
                ];
                let v = v.clamp(-1.0, 1.0);
                let k = stops.windows(2).position(|w| v <= w[1].0).unwrap_or(3);
                let ((x0, a), (x1, b)) = (stops[k], stops[k + 1]);
                let t = (v - x0) / (x1 - x0);
                [0, 1, 2].map(|i| a[i] + t * (b[i] - a[i]))
            }
            // Black, red, yellow, white.
            Colormap::Hot => [c(3.0 * v), c(3.0 * v - 1.0), c(3.0 * v - 2.0)],
            // Dark blue, blue, cyan, yellow, red, dark red.
            Colormap::Jet => [
                c(1.5 - (4.0 * v - 3.0).abs()),
                c(1.5 - (4.0 * v - 2.0).abs()),
                c(1.5 - (4.0 * v - 1.0).abs()),
            ],
            Colormap::Grey => [c(v); 3],
            // Google's Turbo (Mikhailov 2019), by its published polynomial approximation.
            Colormap::Turbo => {
                let x = v.clamp(0.0, 1.0);
                let poly = |k: [f32; 6]| {
                    c(k[0] + x * (k[1] + x * (k[2] + x * (k[3] + x * (k[4] + x * k[5])))))
                };
                [
                    poly([
                        0.135_721_38,
                        4.615_392_6,
                        -42.660_323,
                        132.131_08,
                        -152.942_39,
                        59.286_38,
                    ]),
                    poly([
                        0.091_402_61,
                        2.194_188_4,
                        4.842_966_6,
                        -14.185_033,
                        4.277_298_6,
                        2.829_566,
                    ]),
                    poly([
                        0.106_673_3,
                        12.641_946,
                        -60.582_047,
                        110.362_77,
                        -89.903_11,
                        27.348_25,
                    ]),
                ]
            }
        }
    }
}

/// The `p`-th percentile (0-100) of `values` (nearest rank).
pub fn percentile(values: &[f32], p: f32) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    let k = (((p / 100.0) * (v.len() - 1) as f32).round() as usize).min(v.len() - 1);
    *v.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1
}

/// A `C x H x W` relevance map summed over channels, colour-mapped: values divided by the
/// `clip`-th percentile of |R| and clipped (signed maps keep the sign; unsigned ones show |R|).
pub fn heatmap_png(r: &sr_core::Tensor, cmap: Colormap, clip: f32) -> Result<Vec<u8>> {
    let (c, h, w) = match r.shape() {
        [1, c, h, w] | [c, h, w] => (*c, *h, *w),
        s => {
            return Err(Error::input(format!(
                "relevance has shape {s:?}, expected [C, H, W]"
            )))
        }
    };
    let d = r.data();
    let summed: Vec<f32> = (0..h * w)
        .map(|i| (0..c).map(|k| d[k * h * w + i]).sum())
        .collect();
    let abs: Vec<f32> = summed.iter().map(|v| v.abs()).collect();
    let scale = percentile(&abs, clip);
    let px: Vec<u8> = summed
        .iter()
        .flat_map(|&v| {
            let u = if scale > 0.0 { v / scale } else { 0.0 };
            let u = if cmap.signed() {
                u.clamp(-1.0, 1.0)
            } else {
                u.abs().min(1.0)
            };
            cmap.rgb(u).map(|x| (x * 255.0).round() as u8)
        })
        .collect();
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_raw(w as u32, h as u32, px)
        .expect("sizes agree")
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::internal(format!("PNG encoding failed: {e}")))?;
    Ok(out.into_inner())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeatmapParams {
    pub colormap: String,
    pub percentile: f32,
    pub prefix: String,
}

impl Default for HeatmapParams {
    fn default() -> Self {
        HeatmapParams {
            colormap: "bwr".into(),
            percentile: 99.5,
            prefix: "heatmap".into(),
        }
    }
}

impl Params for HeatmapParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        (
            "colormap",
            "bwr or seismic (signed, symmetric about 0), hot, turbo, jet or grey (on |R|)",
        ),
        (
            "percentile",
            "|R| at this percentile maps to the colormap's end; larger values clip (0-100]",
        ),
        (
            "prefix",
            "file name before `-<branch>.png` (letters, digits, `_` and `-`)",
        ),
    ];
}

pub struct Heatmap {
    cmap: Colormap,
    clip: f32,
    prefix: String,
}

impl RendererStage for Heatmap {
    type Params = HeatmapParams;
    fn build(p: HeatmapParams) -> Result<Self> {
        if !(p.percentile > 0.0 && p.percentile <= 100.0) {
            return Err(Error::params(format!(
                "`percentile` must lie in (0, 100], got {}",
                p.percentile
            )));
        }
        if p.prefix.is_empty()
            || !p
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::params(format!(
                "`prefix` may hold letters, digits, `_` and `-` only, got `{}`",
                p.prefix
            )));
        }
        Ok(Heatmap {
            cmap: Colormap::parse(&p.colormap)?,
            clip: p.percentile,
            prefix: p.prefix,
        })
    }
}

impl Renderer for Heatmap {
    fn render(&self, input: &RenderInput) -> Result<Vec<Artifact>> {
        input
            .branches
            .iter()
            .map(|b| {
                Ok(Artifact {
                    name: format!("{}-{}.png", self.prefix, b.branch),
                    bytes: heatmap_png(&b.relevance, self.cmap, self.clip)?,
                })
            })
            .collect()
    }
}

pub mod panel;

sr_core::export_plugin! {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    stages: [
        StageDef::renderer::<EdgeOverlay>(
            "edge-overlay",
            env!("CARGO_PKG_VERSION"),
            "The SR map in red over a Canny edge map of the photo (the paper's Fig. 1).",
        ),
        StageDef::renderer::<Heatmap>(
            "heatmap",
            env!("CARGO_PKG_VERSION"),
            "Relevance heatmaps with a colormap (bwr, seismic, hot, turbo, jet, grey) and percentile clipping.",
        ),
        StageDef::renderer::<panel::Panel>(
            "panel",
            env!("CARGO_PKG_VERSION"),
            "One picture per image: photo | relevance | SR map | SR over edges | photo saliency, a row per branch, titled with prediction and ground truth.",
        ),
    ],
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
    fn colormaps_hit_their_end_points() {
        // bwr: -1 blue, 0 white, +1 red; seismic: -1 dark blue (0, 0, 0.3), +1 dark red (0.5, 0, 0).
        assert_eq!(Colormap::Bwr.rgb(-1.0), [0.0, 0.0, 1.0]);
        assert_eq!(Colormap::Bwr.rgb(0.0), [1.0, 1.0, 1.0]);
        assert_eq!(Colormap::Bwr.rgb(1.0), [1.0, 0.0, 0.0]);
        assert_eq!(Colormap::Seismic.rgb(-1.0), [0.0, 0.0, 0.3]);
        assert_eq!(Colormap::Seismic.rgb(0.0), [1.0, 1.0, 1.0]);
        assert_eq!(Colormap::Seismic.rgb(1.0), [0.5, 0.0, 0.0]);
        assert_eq!(Colormap::Hot.rgb(0.0), [0.0, 0.0, 0.0]);
        assert_eq!(Colormap::Hot.rgb(1.0), [1.0, 1.0, 1.0]);
        // jet at 0.5: r = 1.5 - |2 - 3| = 0.5, g = min(1.5 - 0, 1) = 1, b = 1.5 - |2 - 1| = 0.5.
        assert_eq!(Colormap::Jet.rgb(0.5), [0.5, 1.0, 0.5]);
        assert!(Colormap::parse("viridis").is_err());
    }

    #[test]
    fn percentile_clipping_saturates_the_outlier() {
        // One huge value among small ones: with the 50th percentile as the scale, the small
        // ones span the colormap and the outlier clips at red.
        let mut d = vec![0.1f32; 99];
        d.push(100.0);
        assert_eq!(percentile(&d, 50.0), 0.1);
        assert_eq!(percentile(&d, 100.0), 100.0);
        let r = sr_core::Tensor::new(vec![1, 10, 10], d).unwrap();
        let png = heatmap_png(&r, Colormap::Bwr, 50.0).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(9, 9).0, [255, 0, 0]);
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
