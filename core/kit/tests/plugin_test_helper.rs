//! `sr_core::testing::PluginTest` refuses what srhost refuses: deliberately wrong stages (a map
//! out of [0, 1], a map of the wrong size, a panic, a file outside the image's folder) fail
//! through it with the host's errors, and a good stage passes.

use serde::{Deserialize, Serialize};
use sr_core::testing::{render_input, sample_image, PluginTest};
use sr_core::{
    Artifact, Image, Params, RenderInput, Renderer, RendererStage, Result, Saliency, SaliencyStage,
    StageDef,
};

/// What the test saliency stage does wrong.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Mode {
    mode: String,
}

impl Params for Mode {
    const DOCS: &'static [(&'static str, &'static str)] =
        &[("mode", "good, too-bright, half-size or panic")];
}

struct Faulty(String);

impl SaliencyStage for Faulty {
    type Params = Mode;
    fn build(p: Mode) -> Result<Self> {
        Ok(Faulty(p.mode))
    }
}

impl Saliency for Faulty {
    fn saliency(&self, input: &Image) -> Result<Image> {
        let (w, h) = (input.width, input.height);
        match self.0.as_str() {
            "too-bright" => Image::new(w, h, 1, vec![1.5; w * h]),
            "half-size" => Image::new(w / 2, h / 2, 1, vec![0.5; (w / 2) * (h / 2)]),
            "panic" => panic!("deliberately"),
            _ => Image::new(w, h, 1, vec![0.5; w * h]),
        }
    }
}

struct Escaping;

impl RendererStage for Escaping {
    type Params = sr_core::NoParams;
    fn build(_: sr_core::NoParams) -> Result<Self> {
        Ok(Escaping)
    }
}

impl Renderer for Escaping {
    fn render(&self, input: &RenderInput) -> Result<Vec<Artifact>> {
        Ok(vec![Artifact {
            name: format!("../{}.png", input.image_name),
            bytes: vec![],
        }])
    }
}

const STAGES: &[StageDef] = &[
    StageDef::saliency::<Faulty>("faulty", "0.1.0", "test"),
    StageDef::renderer::<Escaping>("escaping", "0.1.0", "test"),
];

#[test]
fn a_good_map_passes_and_bad_ones_fail_with_the_hosts_errors() {
    let t = PluginTest::new(STAGES);
    let img = sample_image(20, 10);
    let map = t.saliency("faulty", "mode = \"good\"", &img).unwrap();
    assert_eq!((map.width, map.height), (20, 10));
    let e = t
        .saliency("faulty", "mode = \"too-bright\"", &img)
        .unwrap_err();
    assert!(
        e.message.contains("values must lie in [0, 1], found 1.5"),
        "{e}"
    );
    let e = t
        .saliency("faulty", "mode = \"half-size\"", &img)
        .unwrap_err();
    assert!(
        e.message.contains("the map is 10x5, its input 20x10"),
        "{e}"
    );
    let e = t.saliency("faulty", "mode = \"panic\"", &img).unwrap_err();
    assert!(e.message.contains("panicked: deliberately"), "{e}");
    let e = t.saliency("faulty", "mood = \"good\"", &img).unwrap_err();
    assert!(
        e.message.contains("`saliency.faulty.mood`: unknown key")
            && e.help.contains("did you mean `mode`?"),
        "{e}"
    );
}

#[test]
fn a_renderer_file_outside_the_images_folder_fails() {
    let t = PluginTest::new(STAGES);
    let e = t
        .render("escaping", "", &render_input("coffee", sample_image(8, 8)))
        .unwrap_err();
    assert!(
        e.message
            .contains("`../coffee.png`, which is not a plain relative file name"),
        "{e}"
    );
}
