//! What srhost holds every stage's output to. The host checks each call's output with these
//! before it writes anything, and [`crate::testing`] checks the same in a plugin's own tests, so
//! a plugin that passes its tests is not refused by the host.

use crate::error::{Error, Result};
use crate::stage::Explanation;
use crate::tensor::{Image, Tensor};

/// A saliency map: one channel, finite values in [0, 1]. `what` names the map in the error
/// (`saliency of the photo`, `SR map of lrp`).
pub fn saliency_map(map: &Image, what: &str) -> Result<()> {
    if map.channels != 1 {
        return Err(Error::input(format!(
            "{what}: a saliency map must have 1 channel, got {}",
            map.channels
        )));
    }
    if let Some(v) = map.data().iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(Error::input(format!(
            "{what}: saliency values must lie in [0, 1], found {v}"
        )));
    }
    Ok(())
}

/// A saliency map for an `input` image: [`saliency_map`], and the input's width and height.
pub fn saliency_of(map: &Image, input: &Image, what: &str) -> Result<()> {
    saliency_map(map, what)?;
    if (map.width, map.height) != (input.width, input.height) {
        return Err(Error::input(format!(
            "{what}: the map is {}x{}, its input {}x{}",
            map.width, map.height, input.width, input.height
        )));
    }
    Ok(())
}

/// An explanation of an input of shape `input_shape` for `targets`: a map of the input's shape
/// with finite values, and one statistics row per target. `what` names the stage.
pub fn explanation(
    e: &Explanation,
    input_shape: &[usize],
    targets: &[usize],
    what: &str,
) -> Result<()> {
    if e.relevance.shape() != input_shape {
        return Err(Error::input(format!(
            "{what}: the relevance has shape {:?}, the input {input_shape:?}",
            e.relevance.shape()
        )));
    }
    if e.stats.len() != targets.len() {
        return Err(Error::input(format!(
            "{what}: {} statistics rows for {} targets",
            e.stats.len(),
            targets.len()
        )));
    }
    if let Some(i) = e.relevance.data().iter().position(|v| !v.is_finite()) {
        return Err(Error::input(format!(
            "{what}: the relevance map holds {} at index {i}",
            e.relevance.data()[i]
        ))
        .with_help("a map with NaN or infinite values would make every later number meaningless"));
    }
    Ok(())
}

/// A renderer's file name: a plain relative path (no `..`, no root, no drive), so it stays in
/// the image's output folder.
/// A model's output for a batch of `n`: `n x classes` (at least one class), every value finite.
/// `what` names the model in errors.
pub fn logits(y: &Tensor, n: usize, what: &str) -> Result<()> {
    let classes = match y.shape() {
        [m, c] if *m == n && *c >= 1 => *c,
        s => {
            return Err(Error::input(format!(
                "{what}: the output has shape {s:?}, expected [{n}, classes] for a batch of {n}"
            ))
            .with_help(
                "with an ONNX model, `model.output` names the output holding the class scores",
            ))
        }
    };
    if let Some(i) = y.data().iter().position(|v| !v.is_finite()) {
        return Err(Error::input(format!(
            "{what}: class {} of sample {} scores {} (not finite)",
            i % classes,
            i / classes,
            y.data()[i]
        ))
        .with_help("the weights or the input hold a value that is not finite"));
    }
    Ok(())
}

pub fn artifact_name(renderer: &str, name: &str) -> Result<()> {
    let rel = std::path::Path::new(name);
    if name.is_empty()
        || rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::input(format!(
            "renderer `{renderer}` produced `{name}`, which is not a plain relative file name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn logits_of_another_batch_size_or_not_finite_are_refused() {
        let y = Tensor::new(vec![2, 10], vec![0.5; 20]).unwrap();
        assert!(logits(&y, 2, "m").is_ok());
        // A batch-2 output for one image is not 20 classes.
        let e = logits(&y, 1, "m").unwrap_err();
        assert!(
            e.message
                .contains("the output has shape [2, 10], expected [1, classes]"),
            "{e}"
        );
        let mut v = vec![0.5; 10];
        v[7] = f32::NAN;
        let e = logits(&Tensor::new(vec![1, 10], v).unwrap(), 1, "m").unwrap_err();
        assert_eq!(e.message, "m: class 7 of sample 0 scores NaN (not finite)");
    }

    #[test]
    fn maps_out_of_range_or_of_the_wrong_size_are_refused() {
        let input = Image::new(4, 3, 3, vec![0.5; 36]).unwrap();
        let good = Image::new(4, 3, 1, vec![0.25; 12]).unwrap();
        assert!(saliency_of(&good, &input, "m").is_ok());
        let wide = Image::new(3, 4, 1, vec![0.25; 12]).unwrap();
        assert!(saliency_of(&wide, &input, "m")
            .unwrap_err()
            .message
            .contains("the map is 3x4, its input 4x3"));
        let nan = Image::new(4, 3, 1, vec![f32::NAN; 12]).unwrap();
        assert!(saliency_map(&nan, "m").is_err());
        let rgb = Image::new(4, 3, 3, vec![0.5; 36]).unwrap();
        assert!(saliency_map(&rgb, "m")
            .unwrap_err()
            .message
            .contains("1 channel"));
    }

    #[test]
    fn explanations_must_match_the_input_and_be_finite() {
        let stats = vec![crate::RelevanceStats {
            target: 0,
            relevance_sum: 0.0,
            target_score: 1.0,
        }];
        let ok = Explanation {
            relevance: Tensor::new(vec![1, 3, 2, 2], vec![0.1; 12]).unwrap(),
            stats: stats.clone(),
        };
        assert!(explanation(&ok, &[1, 3, 2, 2], &[0], "r").is_ok());
        assert!(explanation(&ok, &[1, 3, 2, 3], &[0], "r").is_err());
        assert!(explanation(&ok, &[1, 3, 2, 2], &[0, 1], "r").is_err());
        let mut v = vec![0.1; 12];
        v[5] = f32::INFINITY;
        let inf = Explanation {
            relevance: Tensor::new(vec![1, 3, 2, 2], v).unwrap(),
            stats,
        };
        assert!(explanation(&inf, &[1, 3, 2, 2], &[0], "r")
            .unwrap_err()
            .message
            .contains("inf at index 5"));
    }

    #[test]
    fn artifact_names_stay_inside_the_folder() {
        for good in ["panel.png", "maps/sr.png"] {
            assert!(artifact_name("r", good).is_ok(), "{good}");
        }
        for bad in ["", "../x.png", "/etc/x", "a/../../x", "."] {
            assert!(artifact_name("r", bad).is_err(), "{bad}");
        }
    }
}
