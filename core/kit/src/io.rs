//! Reading the files srhost is given: every one through [`read_bounded`], which accepts a
//! regular file only (a FIFO, a device such as `/dev/zero` or a folder is refused before it is
//! opened, so nothing hangs) and at most a stated size for its kind (checked from the file's
//! size before it is read, and again while reading, for a file that grows). Errors name the
//! file, what it was read as, and the limit.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// A pipeline TOML file.
pub const MAX_PIPELINE_BYTES: u64 = 1 << 20;
/// A label file (one class name per line): 1 MiB holds 20,000 long names.
pub const MAX_LABEL_FILE_BYTES: u64 = 16 << 20;
/// A ground-truth CSV (`run.labels`): 100 bytes a row for 10 million images.
pub const MAX_LABELS_CSV_BYTES: u64 = 1 << 30;
/// A photo file: a 50-megapixel PNG with no compression at all is 150 MB.
pub const MAX_PHOTO_BYTES: u64 = 512 << 20;
/// A model file (ONNX, `.pth`, safetensors): VGG-16 in float32 is 553 MB; the largest
/// torchvision classifier (ViT-H/14) is 2.5 GB.
pub const MAX_MODEL_BYTES: u64 = 4 << 30;

/// The bytes of `path`, a regular file of at most `limit` bytes. `what` says what the file is
/// read as (`the pipeline`, `run.labels`, `a photo`), in errors.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::input(format!(
            "{}: {what} must be a regular file, this is {}",
            path.display(),
            file_kind(&meta)
        )));
    }
    let too_big = |n: u64| {
        Error::input(format!(
            "{}: {n} bytes is more than {what} may be ({limit} bytes)",
            path.display()
        ))
    };
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The files a folder of per-image data (`relevance.file`'s maps, `run.fixations`) may hold
/// for `image`, found under `root`: its path under `root`, then its stem, each with every one of
/// `extensions` in turn, without repeats: the order they are tried in.
pub fn per_image_files(
    folder: &Path,
    image: &Path,
    root: &Path,
    extensions: &[&str],
) -> Vec<std::path::PathBuf> {
    let mut bases = vec![];
    if let Ok(rel) = image.strip_prefix(root) {
        if !rel.as_os_str().is_empty() {
            bases.push(folder.join(rel));
        }
    }
    if let Some(stem) = image.file_stem() {
        bases.push(folder.join(stem));
    }
    let mut out: Vec<std::path::PathBuf> = vec![];
    for b in bases {
        for ext in extensions {
            let p = b.with_extension(ext);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text_bounded(path: &Path, limit: u64, what: &str) -> Result<String> {
    String::from_utf8(read_bounded(path, limit, what)?)
        .map_err(|e| Error::input(format!("{}: {what} is not UTF-8 text: {e}", path.display())))
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sr-io-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_regular_file_within_its_limit_is_read_whole() {
        let d = scratch("ok");
        let f = d.join("a.txt");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_bounded(&f, 5, "a test file").unwrap(), b"hello");
        let e = read_bounded(&f, 4, "a test file").unwrap_err();
        assert!(
            e.message
                .ends_with("a.txt: 5 bytes is more than a test file may be (4 bytes)"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn devices_folders_and_pipes_are_refused_before_they_are_opened() {
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20, "the pipeline").unwrap_err();
        assert_eq!(
            e.message,
            "/dev/zero: the pipeline must be a regular file, this is a device"
        );
        let d = scratch("kinds");
        let e = read_bounded(&d, 1 << 20, "run.labels").unwrap_err();
        assert!(e
            .message
            .ends_with("run.labels must be a regular file, this is a folder"));
        // A FIFO with no writer: opening it for reading would block forever.
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_bounded(&fifo, 1 << 20, "a photo").unwrap_err();
        assert!(e
            .message
            .ends_with("a photo must be a regular file, this is a named pipe (FIFO)"));
    }

    #[cfg(unix)]
    extern "C" {
        #[link_name = "mkfifo"]
        fn libc_mkfifo(path: *const std::os::raw::c_char, mode: u32) -> i32;
    }
}
