//! `render.panel`: one picture per image that shows the whole SR story side by side, as the
//! paper's Figs. 3 and 10-12: photo (as the model saw it) | relevance | SR map | SR map over
//! the photo's edges | saliency of the photo, one row per relevance branch, titled with the
//! predicted label, the ground truth when `run.labels` gives one, and WRONG in red when they
//! differ. Text is drawn with DejaVu Sans (assets/fonts, Bitstream Vera licence).

use crate::{edges, heatmap_png, overlay, Colormap};
use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};
use sr_core::{Artifact, Error, Image, Params, RenderInput, Renderer, RendererStage, Result};

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PanelParams {
    /// Colormap of the relevance column.
    pub colormap: String,
    /// Percentile of |R| that saturates the relevance colormap.
    pub percentile: f32,
    /// Side of each tile in pixels (the maps are resampled to it).
    pub tile: usize,
}

impl Default for PanelParams {
    fn default() -> Self {
        PanelParams {
            colormap: "bwr".into(),
            percentile: 99.5,
            tile: 224,
        }
    }
}

impl Params for PanelParams {
    const DOCS: &'static [(&'static str, &'static str)] = &[
        (
            "colormap",
            "colormap of the relevance column (as heatmap's; default bwr)",
        ),
        (
            "percentile",
            "|R| at this percentile saturates the relevance colormap (default 99.5)",
        ),
        (
            "tile",
            "side of each picture in pixels, 32-1024 (default 224)",
        ),
    ];
}

pub struct Panel {
    cmap: Colormap,
    clip: f32,
    tile: u32,
    font: FontRef<'static>,
}

impl RendererStage for Panel {
    type Params = PanelParams;
    fn build(p: PanelParams) -> Result<Self> {
        if !(32..=1024).contains(&p.tile) {
            return Err(Error::params(format!(
                "`tile` must lie in 32..=1024, got {}",
                p.tile
            )));
        }
        if !(p.percentile > 0.0 && p.percentile <= 100.0) {
            return Err(Error::params(format!(
                "`percentile` must lie in (0, 100], got {}",
                p.percentile
            )));
        }
        Ok(Panel {
            cmap: Colormap::parse(&p.colormap)?,
            clip: p.percentile,
            tile: p.tile as u32,
            font: FontRef::try_from_slice(FONT)
                .map_err(|e| Error::internal(format!("the panel font: {e}")))?,
        })
    }
}

const TITLE: u32 = 34;
const CAPTION: u32 = 20;
const GAP: u32 = 4;

fn to_rgb(img: &Image) -> RgbImage {
    let c = img.channels;
    let px: Vec<u8> = (0..img.width * img.height)
        .flat_map(|i| {
            let g = |k: usize| img.data()[i * c + k.min(c - 1)];
            [g(0), g(1), g(2)].map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        })
        .collect();
    RgbImage::from_raw(img.width as u32, img.height as u32, px).expect("sizes agree")
}

fn decode(png: &[u8]) -> Result<RgbImage> {
    image::load_from_memory(png)
        .map(|i| i.to_rgb8())
        .map_err(|e| Error::internal(format!("panel tile: {e}")))
}

impl Panel {
    fn text(&self, canvas: &mut RgbImage, x: u32, y: u32, size: f32, color: [u8; 3], s: &str) {
        imageproc::drawing::draw_text_mut(
            canvas,
            Rgb(color),
            x as i32,
            y as i32,
            PxScale::from(size),
            &self.font,
            s,
        );
    }

    fn put(&self, canvas: &mut RgbImage, tile: &RgbImage, col: u32, y: u32) {
        let t = image::imageops::resize(
            tile,
            self.tile,
            self.tile,
            image::imageops::FilterType::Triangle,
        );
        image::imageops::overlay(canvas, &t, (GAP + col * (self.tile + GAP)) as i64, y as i64);
    }
}

impl Renderer for Panel {
    fn render(&self, input: &RenderInput) -> Result<Vec<Artifact>> {
        let base = input.model_input.as_ref().unwrap_or(&input.photo);
        let edge = edges(base, 50.0, 100.0);
        let cols = 5u32;
        let rows = input.branches.len().max(1) as u32;
        let row_h = CAPTION + self.tile + GAP;
        let (w, h) = (GAP + cols * (self.tile + GAP), TITLE + rows * row_h);
        let mut canvas = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
        // Title: image, prediction, ground truth.
        let mut title = format!(
            "{}: predicted {}",
            input.image_name,
            if input.label.is_empty() {
                "-"
            } else {
                &input.label
            }
        );
        let wrong = matches!(&input.truth, Some(t) if *t != input.label);
        if let Some(t) = &input.truth {
            title.push_str(&format!(" | truth {t}"));
        }
        self.text(&mut canvas, GAP + 2, 8, 18.0, [0, 0, 0], &title);
        if wrong {
            let tw = imageproc::drawing::text_size(PxScale::from(18.0), &self.font, &title).0;
            self.text(&mut canvas, GAP + 12 + tw, 8, 18.0, [200, 0, 0], "WRONG");
        }
        let photo = to_rgb(base);
        let saliency = input.photo_saliency.as_ref().map(to_rgb);
        let captions = [
            "photo (model input)",
            "relevance",
            "SR map",
            "SR map over edges",
            "photo saliency",
        ];
        let branches: Vec<Option<&sr_core::BranchMaps>> = if input.branches.is_empty() {
            vec![None]
        } else {
            input.branches.iter().map(Some).collect()
        };
        for (r, b) in branches.iter().enumerate() {
            let y = TITLE + r as u32 * row_h;
            for (c, cap) in captions.iter().enumerate() {
                let cap = if c == 1 {
                    b.map(|b| format!("{}: {cap}", b.branch))
                        .unwrap_or(cap.to_string())
                } else {
                    cap.to_string()
                };
                self.text(
                    &mut canvas,
                    GAP + c as u32 * (self.tile + GAP) + 2,
                    y + 3,
                    13.0,
                    [60, 60, 60],
                    &cap,
                );
            }
            let ty = y + CAPTION;
            self.put(&mut canvas, &photo, 0, ty);
            if let Some(b) = b {
                self.put(
                    &mut canvas,
                    &decode(&heatmap_png(&b.relevance, self.cmap, self.clip)?)?,
                    1,
                    ty,
                );
                if let Some(sr) = &b.sr {
                    self.put(&mut canvas, &to_rgb(sr), 2, ty);
                    self.put(&mut canvas, &decode(&overlay(&edge, sr, 0.5)?)?, 3, ty);
                }
            }
            if let Some(s) = &saliency {
                self.put(&mut canvas, s, 4, ty);
            }
        }
        let mut out = std::io::Cursor::new(Vec::new());
        canvas
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| Error::internal(format!("PNG encoding failed: {e}")))?;
        Ok(vec![Artifact {
            name: "panel.png".into(),
            bytes: out.into_inner(),
        }])
    }
}
