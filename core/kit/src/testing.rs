//! Test support for plugin authors: run your stages the way `srhost` runs them, in your own
//! `cargo test`, without building a host or loading a `.so`.
//!
//! [`PluginTest`] builds a stage from TOML parameters as a pipeline gives them: the table is
//! checked against the stage's declared keys first ([`crate::stage::check_params`]: the same
//! "unknown key ... did you mean" errors `srhost check` prints). The stage is then created and called
//! through the stable ABI, as from a `.so`: every call crosses `catch_unwind` and the ABI's data
//! types. Its outputs are checked against the contracts the host enforces ([`crate::contract`]).
//! So a panic, a map out of [0, 1] or a file name outside the image's folder fails the test
//! exactly as it would fail an image in `srhost`.
//!
//! ```ignore
//! sr_core::export_plugin! { name: "my-plugin", version: "0.1.0", stages: [ /* ... */ ] }
//!
//! #[test]
//! fn runs_as_srhost_runs_it() {
//!     let t = sr_core::testing::PluginTest::new(SR_STAGES); // made by export_plugin!
//!     let img = sr_core::testing::sample_image(64, 48);
//!     let map = t.saliency("my-saliency", "gamma = 2.0", &img).unwrap();
//!     assert_eq!((map.width, map.height), (64, 48));
//!     let e = t.saliency("my-saliency", "gama = 2.0", &img).unwrap_err();
//!     assert!(e.message.contains("did you mean `gamma`?"));
//! }
//! ```

use crate::error::{Error, Result};
use crate::ffi::{ModelImport, RelevanceImport, RendererImport, SaliencyImport};
use crate::stage::{
    check_params, kind_name, Artifact, Explanation, Model, RenderInput, Renderer, Saliency,
    StageDef, StageInfo, StageKind,
};
use crate::tensor::{Image, Tensor};
use abi_stable::std_types::RStr;

/// A plugin's stages, run as `srhost` runs them (see the module docs).
pub struct PluginTest<'a> {
    stages: &'a [StageDef],
}

impl<'a> PluginTest<'a> {
    /// The stages a plugin exports: `SR_STAGES`, which [`crate::export_plugin!`] defines next
    /// to its invocation.
    pub fn new(stages: &'a [StageDef]) -> Self {
        PluginTest { stages }
    }

    /// What the stage `kind.name` declares (its parameters with their defaults and docs).
    pub fn info(&self, kind: StageKind, name: &str) -> Result<StageInfo> {
        self.stages
            .iter()
            .map(StageDef::info)
            .find(|i| i.kind == kind && i.name == name)
            .ok_or_else(|| {
                Error::params(format!(
                    "this plugin has no {} stage `{name}`",
                    kind_name(kind)
                ))
                .with_help(format!(
                    "its stages: {}",
                    self.stages
                        .iter()
                        .map(|d| d.info().key())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Check `params` (a TOML table as text) against the stage's declared keys, as
    /// `srhost check` does, and return the text handed to the stage.
    fn checked(&self, kind: StageKind, name: &str, params: &str) -> Result<String> {
        let info = self.info(kind, name)?;
        let table: toml::Table = toml::from_str(params).map_err(|e| {
            Error::params(format!(
                "parameters of `{}`: not TOML: {}",
                info.key(),
                e.message()
            ))
        })?;
        check_params(&info, &table).map_err(|e| {
            Error::params(format!("`{}.{}`: {}", info.key(), e.key, e.message)).with_help(e.help)
        })?;
        Ok(params.to_string())
    }

    /// Build the model stage `name` through the ABI.
    pub fn model(&self, name: &str, params: &str) -> Result<Box<dyn Model>> {
        let p = self.checked(StageKind::Model, name, params)?;
        let m = crate::sdk::create_model(self.stages, RStr::from(name), RStr::from(p.as_str()))
            .into_result()
            .map_err(Error::from)?;
        Ok(Box::new(ModelImport(m)))
    }

    /// Build the saliency stage `name` through the ABI.
    pub fn saliency_stage(&self, name: &str, params: &str) -> Result<Box<dyn Saliency>> {
        let p = self.checked(StageKind::Saliency, name, params)?;
        let s = crate::sdk::create_saliency(self.stages, RStr::from(name), RStr::from(p.as_str()))
            .into_result()
            .map_err(Error::from)?;
        Ok(Box::new(SaliencyImport(s)))
    }

    /// Run the saliency stage `name` on `image`: the map, checked as the host checks it (one
    /// channel, the input's size, values in [0, 1]).
    pub fn saliency(&self, name: &str, params: &str, image: &Image) -> Result<Image> {
        let map = self.saliency_stage(name, params)?.saliency(image)?;
        crate::contract::saliency_of(&map, image, &format!("saliency.{name}"))?;
        Ok(map)
    }

    /// Run the renderer `name` on `input`: its files, each name checked as the host checks it
    /// (a plain relative path).
    pub fn render(&self, name: &str, params: &str, input: &RenderInput) -> Result<Vec<Artifact>> {
        let p = self.checked(StageKind::Renderer, name, params)?;
        let r = crate::sdk::create_renderer(self.stages, RStr::from(name), RStr::from(p.as_str()))
            .into_result()
            .map_err(Error::from)?;
        let files = RendererImport(r).render(input)?;
        for f in &files {
            crate::contract::artifact_name(name, &f.name)?;
        }
        Ok(files)
    }

    /// Bind the relevance stage `name` to `model` and run it on `input` (`N x C x H x W`) for
    /// `targets`, the model shared through the ABI as the host shares it: the explanation,
    /// checked (the input's shape, finite values, one statistics row per target).
    pub fn relevance(
        &self,
        name: &str,
        params: &str,
        model: std::sync::Arc<dyn Model>,
        input: &Tensor,
        targets: &[usize],
    ) -> Result<Explanation> {
        use crate::stage::{Relevance, Request};
        let p = self.checked(StageKind::Relevance, name, params)?;
        let r = crate::sdk::create_relevance(self.stages, RStr::from(name), RStr::from(p.as_str()))
            .into_result()
            .map_err(Error::from)?;
        let e = RelevanceImport(r)
            .bind(model)?
            .explain(&Request::new(input, targets))?;
        crate::contract::explanation(&e, input.shape(), targets, &format!("relevance.{name}"))?;
        Ok(e)
    }
}

/// A deterministic `w x h` RGB test image in [0, 1]: a diagonal colour ramp with a bright
/// square in its lower left quarter (something for a saliency method to find).
pub fn sample_image(w: usize, h: usize) -> Image {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f32 / w.max(2) as f32, y as f32 / h.max(2) as f32);
            let inside = x >= w / 8 && x < w / 8 + w / 5 && y >= h / 2 && y < h / 2 + h / 5;
            if inside {
                data.extend_from_slice(&[1.0, 0.9, 0.1]);
            } else {
                data.extend_from_slice(&[0.3 + 0.2 * u, 0.3 + 0.2 * v, 0.4]);
            }
        }
    }
    Image::new(w.max(1), h.max(1), 3, data).expect("sizes agree")
}

/// An image file as the host reads a photo: decoded to 8-bit RGB, then scaled to [0, 1].
#[cfg(feature = "decode")]
pub fn load_image(path: &std::path::Path) -> Result<Image> {
    crate::preprocess::to_image(&crate::preprocess::load_photo(path)?)
}

/// A [`RenderInput`] for one photo, without a model (no branches, no saliency): fill in what
/// your renderer draws.
pub fn render_input(name: &str, photo: Image) -> RenderInput {
    RenderInput {
        image_name: name.to_string(),
        photo,
        model_input: None,
        label: String::new(),
        branches: vec![],
        photo_saliency: None,
        truth: None,
    }
}
