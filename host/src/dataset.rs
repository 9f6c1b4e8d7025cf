//! The images of a run: collected from files, folders (recursively) and globs, each given an
//! output folder named from its path (deterministic, collision-free, never `.`/`..` and never
//! outside `run.output`), each file once; ImageNet-style ground truth; and the shard a process
//! takes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

/// Extensions srhost can decode (the decoders compiled into `image`): only these are
/// collected from folders.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Names an image folder may not take at the top of `run.output`: the run-wide files.
const RESERVED: &[&str] = &[
    "metrics.csv",
    "metrics.json",
    "report.html",
    "report-data.js",
    "run.json",
];

/// One image of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub path: PathBuf,
    /// The output folder, relative to `run.output` (`/`-separated components).
    pub name: String,
    /// The folder the image was found under (a listed folder, a glob's fixed prefix, or the
    /// file's own folder): `name` is its path relative to this.
    pub root: PathBuf,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The files of one `run.images` entry, each with its root: a file, a folder (its images,
/// recursively unless `recursive` is false) or a glob (its matching files).
pub fn expand(p: &str, recursive: bool) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    if p.contains(['*', '?', '[']) {
        // The glob's root: its leading components without a wildcard.
        let root: PathBuf = Path::new(p)
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
            .collect();
        let mut v: Vec<(PathBuf, PathBuf)> = glob::glob(p)
            .map_err(|e| format!("bad glob `{p}`: {e}"))?
            .filter_map(|r| r.ok())
            .filter(|q| q.is_file())
            .map(|q| (q, root.clone()))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(format!("the glob `{p}` matches no file"));
        }
        return Ok(v);
    }
    let path = PathBuf::from(p);
    if path.is_dir() {
        let mut v = vec![];
        walk(&path, recursive, &mut v).map_err(|e| format!("cannot list `{p}`: {e}"))?;
        v.sort();
        if v.is_empty() {
            return Err(format!(
                "the folder `{p}` holds no image ({}{})",
                IMAGE_EXTENSIONS.join(", "),
                if recursive {
                    ", searched recursively"
                } else {
                    ""
                }
            ));
        }
        Ok(v.into_iter().map(|q| (q, path.clone())).collect())
    } else if path.is_file() {
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(vec![(path, root)])
    } else {
        Err(format!("no such file or folder: `{p}`"))
    }
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let t = e.file_type()?;
        // Hidden entries (a run's own `.runs`, editors' files) are not images.
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if t.is_dir() && recursive {
            walk(&p, recursive, out)?;
        } else if (t.is_file() || (t.is_symlink() && p.is_file())) && is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// A path component as a folder name: letters, digits and `._-` kept, anything else `_`; never
/// empty, `.`, `..` or hidden (a leading `.` becomes `_`).
fn clean(c: &str) -> String {
    let mut s: String = c
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "._-".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

/// `path` without its extension, relative to `root` (to the current directory's view of it
/// when `path` is not under `root`), as cleaned components.
fn relative_parts(path: &Path, root: &Path) -> Vec<String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts: Vec<String> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    if let Some(last) = parts.last_mut() {
        let p = Path::new(last.as_str());
        if let Some(stem) = p.file_stem() {
            *last = stem.to_string_lossy().into_owned();
        }
    }
    if parts.is_empty() {
        parts.push("image".into());
    }
    parts.iter().map(|c| clean(c)).collect()
}

/// The images of a run in a stable order (by output name), each file once (by its canonical
/// path), each with a folder name of its own.
///
/// A name is the image's path relative to its root without the extension (`val/n01440764/
/// ILSVRC2012_val_00000293`). Where two images in different folders would share one, they get
/// as many of their parent folders in front as tell them apart (`a/coffee`, `b/coffee`); then
/// images still colliding get their extensions (`coffee_png`, `coffee_jpg`), then a counter
/// (`coffee~2`). Every process that lists the same files names them alike.
pub fn entries(files: Vec<(PathBuf, PathBuf)>) -> Vec<Entry> {
    let mut seen = std::collections::HashSet::new();
    let files: Vec<(PathBuf, PathBuf)> = files
        .into_iter()
        .filter(|(p, _)| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .collect();
    let mut names: Vec<Vec<String>> = files.iter().map(|(p, r)| relative_parts(p, r)).collect();
    let ext = |p: &Path| {
        clean(
            &p.extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default(),
        )
    };
    // Images in different folders: as many of their parent folders as tell them apart.
    for group in collisions(&names) {
        let parents: Vec<Vec<String>> = group
            .iter()
            .map(|&i| {
                files[i]
                    .0
                    .parent()
                    .map(|p| {
                        p.components()
                            .filter_map(|c| match c {
                                Component::Normal(s) => Some(clean(&s.to_string_lossy())),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let exact = group.iter().all(|&i| names[i] == names[group[0]]);
        if !exact || parents.iter().all(|p| *p == parents[0]) {
            continue;
        }
        let deepest = parents.iter().map(Vec::len).max().unwrap_or(0);
        for depth in 1..=deepest {
            let tried: Vec<Vec<String>> = group
                .iter()
                .zip(&parents)
                .map(|(&i, p)| {
                    let mut n = p[p.len().saturating_sub(depth)..].to_vec();
                    n.extend(names[i].iter().cloned());
                    n
                })
                .collect();
            let mut distinct = tried.clone();
            distinct.sort();
            distinct.dedup();
            if distinct.len() == tried.len() || depth == deepest {
                for (&i, n) in group.iter().zip(tried) {
                    names[i] = n;
                }
                break;
            }
        }
    }
    // In one folder: the extension (`coffee_png`, `coffee_jpg`).
    for group in collisions(&names) {
        for i in group {
            if let Some(last) = names[i].last_mut() {
                last.push('_');
                last.push_str(&ext(&files[i].0));
            }
        }
    }
    // Still the same (names that differ only in cleaned characters): a counter, in path order.
    for group in collisions(&names) {
        let mut group = group;
        group.sort_by(|&a, &b| files[a].0.cmp(&files[b].0));
        for (k, i) in group.into_iter().enumerate().skip(1) {
            if let Some(last) = names[i].last_mut() {
                last.push_str(&format!("~{}", k + 1));
            }
        }
    }
    let mut out: Vec<Entry> = files
        .into_iter()
        .zip(names)
        .map(|((path, root), mut parts)| {
            if parts.len() == 1 && RESERVED.contains(&parts[0].as_str()) {
                parts[0].insert(0, '_');
            }
            Entry {
                path,
                name: parts.join("/"),
                root,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Groups (two or more) of indices whose names are equal, or where one name is a folder of
/// another's (`a` and `a/b` cannot both be image folders).
fn collisions(names: &[Vec<String>]) -> Vec<Vec<usize>> {
    let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        by.entry(n.join("/").to_ascii_lowercase())
            .or_default()
            .push(i);
    }
    let mut groups: Vec<Vec<usize>> = by.values().filter(|g| g.len() > 1).cloned().collect();
    // A name that is a prefix folder of another.
    let keys: Vec<&String> = by.keys().collect();
    for w in keys.windows(2) {
        if w[1].starts_with(&format!("{}/", w[0])) {
            let mut g = by[w[0]].clone();
            g.extend(&by[w[1]]);
            groups.push(g);
        }
    }
    groups
}

/// `K/N`: this process takes the images whose index in the sorted list is `K` modulo `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected K/N with 0 <= K < N, e.g. 0/4 (shards 0, 1, 2, 3)");
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let (k, n) = (
            k.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if n == 0 || k >= n {
            return Err(bad());
        }
        Ok(Shard { index: k, count: n })
    }
}

impl Shard {
    /// This shard's entries of the full, sorted list.
    pub fn take(self, all: Vec<Entry>) -> Vec<Entry> {
        all.into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index)
            .map(|(_, e)| e)
            .collect()
    }
}

/// The ImageNet-1k WordNet IDs in torchvision's class order (timm 1.0.31's
/// `imagenet_synsets.txt`; `scripts/make_imagenet_wnids.py`).
pub const IMAGENET_WNIDS: &str = include_str!("../../assets/labels/imagenet-wnids.txt");

/// A ground-truth class as a labels file or folder gives it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Truth {
    /// A class index of the model.
    Index(usize),
    /// An ImageNet-1k WordNet ID (`n01440764`): its index in [`IMAGENET_WNIDS`].
    Wnid(String),
    /// A class name as the model's label list spells it.
    Name(String),
}

fn is_wnid(s: &str) -> bool {
    s.len() == 9 && s.starts_with('n') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

impl Truth {
    /// A label cell: a class index, a WordNet ID or a class name.
    pub fn parse(s: &str) -> Truth {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(i) = s.parse() {
                return Truth::Index(i);
            }
        }
        if is_wnid(s) {
            return Truth::Wnid(s.to_string());
        }
        Truth::Name(s.to_string())
    }

    /// The model's class index and label of this truth: an index as it is, a WordNet ID by
    /// ImageNet-1k's order (the model must have 1000 classes), a name by the model's labels.
    /// `None` for a name the model does not know (compared as text then).
    pub fn resolve(&self, labels: &[String]) -> Result<(Option<usize>, String), String> {
        let name = |i: usize| {
            labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("class {i}"))
        };
        match self {
            Truth::Index(i) if labels.is_empty() || *i < labels.len() => Ok((Some(*i), name(*i))),
            Truth::Index(i) => Err(format!(
                "the ground truth names class {i}, the model has {} classes",
                labels.len()
            )),
            Truth::Wnid(w) => {
                let i = IMAGENET_WNIDS
                    .lines()
                    .position(|l| l.trim() == w)
                    .ok_or_else(|| format!("`{w}` is not an ImageNet-1k WordNet ID"))?;
                if labels.len() != 1000 {
                    return Err(format!(
                        "the ground truth is a WordNet ID (`{w}`), but the model has {} classes, not ImageNet-1k's 1000",
                        labels.len()
                    ));
                }
                Ok((Some(i), name(i)))
            }
            Truth::Name(n) => Ok((labels.iter().position(|l| l == n), n.clone())),
        }
    }
}

/// Ground truth by image: `run.labels` as a CSV, or the images' parent folders.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Labels {
    #[default]
    None,
    /// torchvision's ImageFolder: the parent folder is the WordNet ID or the class name.
    Folders,
    /// Keys: the image as written in the file, its file name and its stem.
    Table(HashMap<String, Truth>),
}

impl Labels {
    /// The ground truth of an image.
    pub fn of(&self, image: &Path) -> Option<Truth> {
        match self {
            Labels::None => None,
            Labels::Folders => image
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| Truth::parse(&n.to_string_lossy())),
            Labels::Table(t) => {
                let name = image.file_name().and_then(|n| n.to_str());
                let stem = image.file_stem().and_then(|n| n.to_str());
                t.get(&image.display().to_string())
                    .or_else(|| name.and_then(|n| t.get(n)))
                    .or_else(|| stem.and_then(|n| t.get(n)))
                    .cloned()
            }
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Labels::None)
    }
}

/// Read a labels CSV: `image,label` rows, or a header naming an `image` column and a class
/// column (`index`, `wnid`, `label` or `class`; the first of these present, in that order,
/// is used). A class cell may be an index, a WordNet ID or a name. `#` lines are comments.
pub fn read_labels_csv(path: &Path) -> Result<HashMap<String, Truth>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = HashMap::new();
    let mut columns: Option<(usize, usize)> = None;
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cells: Vec<&str> = line
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        if std::mem::take(&mut first) && cells.iter().any(|c| c.eq_ignore_ascii_case("image")) {
            let find = |n: &str| cells.iter().position(|c| c.eq_ignore_ascii_case(n));
            let img = find("image").expect("checked");
            let class = ["index", "wnid", "label", "class"]
                .iter()
                .find_map(|n| find(n))
                .ok_or_else(|| {
                    format!(
                        "{}:{}: the header names no class column (index, wnid, label or class)",
                        path.display(),
                        i + 1
                    )
                })?;
            columns = Some((img, class));
            continue;
        }
        let (ci, cl) = columns.unwrap_or((0, 1));
        let (Some(img), Some(label)) = (cells.get(ci), cells.get(cl)) else {
            return Err(format!(
                "{}:{}: expected `image,label`, found `{line}`",
                path.display(),
                i + 1
            ));
        };
        if img.is_empty() || label.is_empty() {
            return Err(format!(
                "{}:{}: empty image or label",
                path.display(),
                i + 1
            ));
        }
        let p = Path::new(img);
        for key in [
            Some(img.to_string()),
            p.file_name().and_then(|n| n.to_str()).map(str::to_string),
            p.file_stem().and_then(|n| n.to_str()).map(str::to_string),
        ]
        .into_iter()
        .flatten()
        {
            out.insert(key, Truth::parse(label));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[(&str, &str)]) -> Vec<String> {
        entries(
            files
                .iter()
                .map(|(p, r)| (PathBuf::from(p), PathBuf::from(r)))
                .collect(),
        )
        .into_iter()
        .map(|e| e.name)
        .collect()
    }

    #[test]
    fn names_follow_the_relative_path_and_never_collide() {
        assert_eq!(
            names(&[("val/n01440764/ILSVRC2012_val_00000293.JPEG", "")]),
            ["val/n01440764/ILSVRC2012_val_00000293"]
        );
        // Same file name in two folders, each listed as a file (root = its own folder).
        assert_eq!(
            names(&[("a/coffee.png", "a"), ("b/coffee.png", "b")]),
            ["a/coffee", "b/coffee"]
        );
        // Same stem, two extensions.
        assert_eq!(
            names(&[("x/coffee.png", "x"), ("x/coffee.jpg", "x")]),
            ["coffee_jpg", "coffee_png"]
        );
        // Names that clean to the same folder: the extension, then a counter in path order
        // (`a b` sorts before `a+b`).
        assert_eq!(
            names(&[("p/a+b.png", "p"), ("p/a b.png", "p")]),
            ["a_b_png", "a_b_png~2"]
        );
        // One image's folder may not be another's parent.
        assert_eq!(
            names(&[("d/a.png", "d"), ("d/a/b.png", "d")]),
            ["a/b_png", "a_png"]
        );
        // Deeper trees: as many parent folders as it takes.
        assert_eq!(
            names(&[("r/1/x/c.png", "r/1/x"), ("r/2/x/c.png", "r/2/x")]),
            ["1/x/c", "2/x/c"]
        );
        // A run-wide file name is not an image folder.
        assert_eq!(names(&[("d/report.html.png", "d")]), ["_report.html"]);
    }

    #[test]
    fn names_are_never_dot_dot_or_hidden() {
        for (p, want) in [
            ("...png", "_.."),
            ("..png", "_."),
            (".png", "_.png"),
            (".hidden.png", "_.hidden"),
        ] {
            let n = names(&[(p, "")]);
            assert_eq!(n, [want], "{p}");
            assert!(n[0]
                .split('/')
                .all(|c| c != "." && c != ".." && !c.starts_with('.')));
        }
    }

    #[test]
    fn shards_split_the_sorted_list_and_cover_it_once() {
        let es = entries(
            (0..10)
                .map(|i| (PathBuf::from(format!("i{i}.png")), PathBuf::new()))
                .collect(),
        );
        let all: Vec<String> = es.iter().map(|e| e.name.clone()).collect();
        let mut seen: Vec<String> = vec![];
        for k in 0..3 {
            let s: Shard = format!("{k}/3").parse().unwrap();
            seen.extend(s.take(es.clone()).into_iter().map(|e| e.name));
        }
        seen.sort();
        assert_eq!(seen, all);
        assert!("3/3".parse::<Shard>().is_err() && "1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().unwrap_err().contains("expected K/N"));
    }

    #[test]
    fn truth_is_an_index_a_wordnet_id_or_a_name() {
        let labels: Vec<String> = crate::dataset::IMAGENET_WNIDS
            .lines()
            .enumerate()
            .map(|(i, _)| format!("c{i}"))
            .collect();
        assert_eq!(IMAGENET_WNIDS.lines().count(), 1000);
        assert_eq!(Truth::parse("967"), Truth::Index(967));
        assert_eq!(
            Truth::parse("n01440764").resolve(&labels).unwrap(),
            (Some(0), "c0".to_string())
        );
        assert_eq!(
            Truth::parse("n12267677").resolve(&labels).unwrap(),
            (Some(988), "c988".to_string())
        );
        assert_eq!(
            Truth::parse("c5").resolve(&labels).unwrap(),
            (Some(5), "c5".to_string())
        );
        assert!(Truth::parse("n99999999").resolve(&labels).is_err());
        assert!(Truth::parse("n01440764").resolve(&labels[..10]).is_err());
    }
}
