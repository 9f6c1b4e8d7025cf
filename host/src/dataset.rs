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

/// What collecting the images passed over: subfolders that could not be read, named so a run
/// can warn about them.
#[derive(Debug, Default)]
pub struct Skipped {
    pub unreadable: Vec<(PathBuf, String)>,
}

/// The files of one `run.images` entry, each with its root: a file, a folder (its images,
/// recursively unless `recursive` is false) or a glob (its matching files). Folders are walked
/// without following symbolic links to folders (so a link loop cannot make it endless), the
/// folder `exclude` (the run's output, when it lies inside an input folder) is left out, and a
/// subfolder that cannot be read is passed over and recorded in `skipped`.
pub fn expand(
    p: &str,
    recursive: bool,
    exclude: Option<&Path>,
    skipped: &mut Skipped,
) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    if p.contains(['*', '?', '[']) {
        // The glob's root: its leading components without a wildcard.
        let root: PathBuf = Path::new(p)
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
            .collect();
        let mut v: Vec<(PathBuf, PathBuf)> = if p.contains("**") {
            // `**` recurses: walk the root ourselves (no link followed), then match.
            let pattern = glob::Pattern::new(p).map_err(|e| format!("bad glob `{p}`: {e}"))?;
            let opts = glob::MatchOptions {
                require_literal_separator: true,
                ..Default::default()
            };
            let start = if root.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                root.clone()
            };
            let mut files = vec![];
            walk(&start, true, exclude, skipped, &mut |_| true, &mut files)
                .map_err(|e| format!("cannot list `{}`: {e}", start.display()))?;
            files
                .into_iter()
                .map(|q| q.strip_prefix("./").map(Path::to_path_buf).unwrap_or(q))
                .filter(|q| pattern.matches_path_with(q, opts))
                .map(|q| (q, root.clone()))
                .collect()
        } else {
            glob::glob(p)
                .map_err(|e| format!("bad glob `{p}`: {e}"))?
                .filter_map(|r| r.ok())
                .filter(|q| q.is_file() && !excluded(q, exclude))
                .map(|q| (q, root.clone()))
                .collect()
        };
        v.sort();
        if v.is_empty() {
            return Err(format!("the glob `{p}` matches no file"));
        }
        return Ok(v);
    }
    let path = PathBuf::from(p);
    if path.is_dir() {
        let mut v = vec![];
        walk(&path, recursive, exclude, skipped, &mut is_image, &mut v)
            .map_err(|e| format!("cannot list `{p}`: {e}"))?;
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

/// Whether `p` lies inside the folder `exclude` (compared as canonical paths).
fn excluded(p: &Path, exclude: Option<&Path>) -> bool {
    let Some(x) = exclude else { return false };
    std::fs::canonicalize(p).is_ok_and(|c| c.starts_with(x))
}

/// The files under `dir` that `keep` accepts. The top folder must be readable; a subfolder
/// that is not is recorded in `skipped` and passed over. Links to folders are not followed.
fn walk(
    dir: &Path,
    recursive: bool,
    exclude: Option<&Path>,
    skipped: &mut Skipped,
    keep: &mut dyn FnMut(&Path) -> bool,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let t = e.file_type()?;
        // Hidden entries (a run's own `.runs`, editors' files) are not images.
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if t.is_dir() && recursive {
            if excluded(&p, exclude) {
                continue;
            }
            if let Err(err) = walk(&p, recursive, exclude, skipped, keep, out) {
                skipped.unreadable.push((p, err.to_string()));
            }
        } else if (t.is_file() || (t.is_symlink() && p.is_file())) && keep(&p) {
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
                push_within(last, &format!("_{}", ext(&files[i].0)));
            }
        }
    }
    // Still the same (names that differ only in cleaned characters): a counter, in path order.
    for group in collisions(&names) {
        let mut group = group;
        group.sort_by(|&a, &b| files[a].0.cmp(&files[b].0));
        for (k, i) in group.into_iter().enumerate().skip(1) {
            if let Some(last) = names[i].last_mut() {
                push_within(last, &format!("~{}", k + 1));
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
/// The longest file name most file systems take, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// Append `suffix` to a cleaned (ASCII) folder name, shortening the name first so that the
/// result stays within [`MAX_NAME_BYTES`].
fn push_within(name: &mut String, suffix: &str) {
    let keep = MAX_NAME_BYTES.saturating_sub(suffix.len());
    while name.len() > keep {
        name.pop();
    }
    name.push_str(suffix);
}

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
    Table(LabelTable),
}

/// The rows of a labels CSV, by the image's path as written (relative to the dataset's input
/// folder, or absolute) and, as a fallback, by its file name and its stem.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelTable {
    by_path: HashMap<String, Truth>,
    /// By file name and by stem: `Err(rows)` when several rows share the name.
    by_name: HashMap<String, Result<Truth, Vec<String>>>,
}

impl LabelTable {
    fn insert(&mut self, image: &str, truth: Truth) {
        let p = Path::new(image);
        let path = p.components().collect::<PathBuf>();
        self.by_path
            .insert(path.display().to_string(), truth.clone());
        let mut names = vec![];
        for n in [
            p.file_name().and_then(|n| n.to_str()),
            p.file_stem().and_then(|n| n.to_str()),
        ]
        .into_iter()
        .flatten()
        {
            // (A row without an extension: its name is its stem, counted once.)
            if !names.contains(&n) {
                names.push(n);
            }
        }
        for n in names {
            match self.by_name.get_mut(n) {
                None => {
                    self.by_name.insert(n.to_string(), Ok(truth.clone()));
                }
                Some(Ok(_)) => {
                    let first = image.to_string();
                    self.by_name.insert(n.to_string(), Err(vec![first]));
                }
                Some(Err(rows)) => rows.push(image.to_string()),
            }
        }
    }
}

impl Labels {
    /// The ground truth of an image found under `root`: by its path relative to `root`, then
    /// as written, then by its file name or stem when one row alone has it. A name several rows
    /// share is an error naming them (the last row never silently wins).
    pub fn of(&self, image: &Path, root: &Path) -> Result<Option<Truth>, String> {
        match self {
            Labels::None => Ok(None),
            Labels::Folders => Ok(image
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| Truth::parse(&n.to_string_lossy()))),
            Labels::Table(t) => {
                let rel = image
                    .strip_prefix(root)
                    .ok()
                    .filter(|r| !r.as_os_str().is_empty());
                let keys = [rel, Some(image)];
                for k in keys.into_iter().flatten() {
                    let k: PathBuf = k.components().collect();
                    if let Some(truth) = t.by_path.get(&k.display().to_string()) {
                        return Ok(Some(truth.clone()));
                    }
                }
                let names = [
                    image.file_name().and_then(|n| n.to_str()),
                    image.file_stem().and_then(|n| n.to_str()),
                ];
                for n in names.into_iter().flatten() {
                    match t.by_name.get(n) {
                        Some(Ok(truth)) => return Ok(Some(truth.clone())),
                        Some(Err(rows)) => {
                            return Err(format!(
                                "`{n}` matches {} rows by file name ({}, ...); write the image's path relative to its input folder ({})",
                                rows.len() + 1,
                                rows.join(", "),
                                rel.map(|r| r.display().to_string())
                                    .unwrap_or_else(|| image.display().to_string())
                            ))
                        }
                        None => {}
                    }
                }
                Ok(None)
            }
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Labels::None)
    }
}

/// The records of a CSV file (RFC 4180: fields separated by commas, a field in double quotes
/// may hold commas, quotes written twice and line breaks; CRLF or LF line ends), with the line
/// each starts on. A UTF-8 byte order mark is skipped; blank lines and lines starting with `#`
/// are left out.
pub fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = vec![];
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        if chars.peek() == Some(&'#') {
            for c in chars.by_ref() {
                if c == '\n' {
                    line += 1;
                    break;
                }
            }
            continue;
        }
        let mut fields = vec![];
        let mut field = String::new();
        let mut quoted = false;
        loop {
            match chars.next() {
                None => {
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some('"') if field.is_empty() && !quoted => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => {
                                return Err(format!("line {start}: a quoted field is not closed"))
                            }
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                field.push('"');
                            }
                            Some('"') => break,
                            Some(c) => {
                                if c == '\n' {
                                    line += 1;
                                }
                                field.push(c);
                            }
                        }
                    }
                }
                Some(',') => {
                    fields.push(std::mem::take(&mut field));
                    quoted = false;
                }
                Some('\r') if chars.peek() == Some(&'\n') => {}
                Some('\n') => {
                    line += 1;
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some(c) if quoted && !c.is_whitespace() => {
                    return Err(format!(
                    "line {start}: `{c}` after a quoted field (expected a comma or the line's end)"
                ))
                }
                Some(c) => field.push(c),
            }
        }
        if fields.len() == 1 && fields[0].trim().is_empty() {
            continue;
        }
        out.push((
            start,
            fields.into_iter().map(|f| f.trim().to_string()).collect(),
        ));
    }
    Ok(out)
}

/// Read a labels CSV: `image,label` rows, or a header naming an `image` column and a class
/// column (`index`, `wnid`, `label` or `class`; the first of these present, in that order,
/// is used). A class cell may be an index, a WordNet ID or a name. RFC 4180 quoting, an optional
/// byte order mark; `#` lines are comments.
pub fn read_labels_csv(path: &Path) -> Result<LabelTable, String> {
    let text =
        sr_core::io::read_text_bounded(path, sr_core::io::MAX_LABELS_CSV_BYTES, "a labels CSV")
            .map_err(|e| format!("cannot read {}", e.message))?;
    let records = csv_records(&text).map_err(|m| format!("{}: {m}", path.display()))?;
    let mut out = LabelTable::default();
    let mut columns: Option<(usize, usize)> = None;
    for (k, (line, cells)) in records.iter().enumerate() {
        if k == 0 && cells.iter().any(|c| c.eq_ignore_ascii_case("image")) {
            let find = |n: &str| cells.iter().position(|c| c.eq_ignore_ascii_case(n));
            let img = find("image").expect("checked");
            let class = ["index", "wnid", "label", "class"]
                .iter()
                .find_map(|n| find(n))
                .ok_or_else(|| {
                    format!(
                        "{}:{line}: the header names no class column (index, wnid, label or class)",
                        path.display(),
                    )
                })?;
            columns = Some((img, class));
            continue;
        }
        let (ci, cl) = columns.unwrap_or((0, 1));
        let (Some(img), Some(label)) = (cells.get(ci), cells.get(cl)) else {
            return Err(format!(
                "{}:{line}: expected `image,label`, found {} field(s)",
                path.display(),
                cells.len()
            ));
        };
        if img.is_empty() || label.is_empty() {
            return Err(format!("{}:{line}: empty image or label", path.display()));
        }
        out.insert(img, Truth::parse(label));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_that_clean_alike_stay_within_255_bytes() {
        // 251-byte names (the case): with `_png` and `~2` they would pass 255.
        let long = "x".repeat(250);
        let files: Vec<(PathBuf, PathBuf)> = ["a", "\u{e9}", "!"]
            .iter()
            .flat_map(|c| {
                ["png", "jpg"].map(|e| {
                    (
                        PathBuf::from(format!("/p/{long}{c}.{e}")),
                        PathBuf::from("/p"),
                    )
                })
            })
            .collect();
        let e = entries(files);
        let names: std::collections::BTreeSet<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), 6, "{names:?}");
        assert!(e.iter().all(|e| e.name.len() <= 255), "{names:?}");
    }

    #[test]
    fn csv_is_read_as_rfc_4180_with_a_byte_order_mark() {
        let text = "\u{feff}image,label\r\n\"a, b.jpg\",\"say \"\"hi\"\"\"\n# note\n\nc.jpg,\"two\nlines\"\n";
        let r = csv_records(text).unwrap();
        assert_eq!(
            r,
            vec![
                (1, vec!["image".to_string(), "label".into()]),
                (2, vec!["a, b.jpg".to_string(), "say \"hi\"".into()]),
                (5, vec!["c.jpg".to_string(), "two\nlines".into()]),
            ]
        );
        assert!(csv_records("\"open,x\n")
            .unwrap_err()
            .contains("not closed"));
        assert!(csv_records("\"a\"b,c\n")
            .unwrap_err()
            .contains("after a quoted field"));
    }

    #[test]
    fn labels_match_by_path_under_the_input_folder_first_and_never_by_an_ambiguous_name() {
        let mut t = LabelTable::default();
        t.insert("a/coffee.jpg", Truth::parse("espresso"));
        t.insert("b/coffee.jpg", Truth::parse("cup"));
        t.insert("lone.jpg", Truth::parse("tabby"));
        t.insert("bare", Truth::parse("tabby"));
        let l = Labels::Table(t);
        let root = Path::new("/data/val");
        let of = |p: &str| l.of(Path::new(p), root);
        assert_eq!(
            of("/data/val/a/coffee.jpg"),
            Ok(Some(Truth::parse("espresso")))
        );
        assert_eq!(of("/data/val/b/coffee.jpg"), Ok(Some(Truth::parse("cup"))));
        assert_eq!(of("/data/val/x/lone.jpg"), Ok(Some(Truth::parse("tabby"))));
        let e = of("/data/val/c/coffee.jpg").unwrap_err();
        assert!(
            e.contains("`coffee.jpg` matches 2 rows by file name"),
            "{e}"
        );
        assert_eq!(of("/data/val/other.jpg"), Ok(None));
        assert_eq!(of("/data/val/bare.png"), Ok(Some(Truth::parse("tabby"))));
    }

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
