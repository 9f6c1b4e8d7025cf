//! The stage registry: every stage by its key `"kind.name"`, built-in or loaded from a `.so`.

use crate::error::{catch_panic, Error, Result};
use crate::ffi::{self, RelevanceImport, RendererImport, SaliencyImport};
use crate::stage::*;
use abi_stable::library::{lib_header_from_path, LibraryError, RootModule, RootModuleError};
use sr_abi::PluginModRef;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A stage linked into the host, registered by `export_plugin!` through `inventory`.
pub struct BuiltinStage {
    /// The crate that provides it.
    pub plugin: &'static str,
    pub def: StageDef,
}
inventory::collect!(BuiltinStage);

/// Where a stage comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum StageSource {
    Builtin {
        plugin: String,
    },
    Plugin {
        plugin: String,
        version: String,
        path: PathBuf,
    },
}

impl std::fmt::Display for StageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageSource::Builtin { plugin } => write!(f, "built-in ({plugin})"),
            StageSource::Plugin {
                plugin,
                version,
                path,
            } => {
                write!(f, "{} ({plugin} {version})", path.display())
            }
        }
    }
}

#[derive(Clone)]
enum Maker {
    Native(Factory),
    Ffi(PluginModRef),
}

/// One registered stage.
#[derive(Clone)]
pub struct StageEntry {
    pub info: StageInfo,
    pub source: StageSource,
    maker: Maker,
}

/// A plugin library that loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    /// The keys of the stages it added.
    pub stages: Vec<String>,
}

/// All the stages the host can use.
#[derive(Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, StageEntry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stage linked into this binary. (The host must reference each built-in crate, or
    /// the linker drops its `inventory` entries.)
    pub fn with_builtins() -> Self {
        let mut r = Registry::new();
        for b in inventory::iter::<BuiltinStage> {
            let info = b.def.info();
            r.entries.insert(
                info.key(),
                StageEntry {
                    info,
                    source: StageSource::Builtin {
                        plugin: b.plugin.to_string(),
                    },
                    maker: Maker::Native(b.def.factory),
                },
            );
        }
        r
    }

    /// Register `defs` as built-ins of `plugin`, unless a stage of that key is there already.
    /// A host that links plugin crates statically names their `SR_STAGES` here: unlike the
    /// `inventory` registrations, which a linker may drop from a crate nothing else references
    /// (seen in a cdylib), the stage definitions then are referenced, so they are linked.
    pub fn add_builtins(&mut self, plugin: &str, defs: &[StageDef]) {
        for def in defs {
            let info = def.info();
            self.entries
                .entry(info.key())
                .or_insert_with(|| StageEntry {
                    info,
                    source: StageSource::Builtin {
                        plugin: plugin.to_string(),
                    },
                    maker: Maker::Native(def.factory),
                });
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &StageEntry> {
        self.entries.values()
    }

    pub fn get(&self, kind: StageKind, name: &str) -> Option<&StageEntry> {
        self.entries.get(&format!("{}.{name}", kind_name(kind)))
    }

    /// The names of the stages of one kind, for "unknown stage" errors.
    pub fn names(&self, kind: StageKind) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.info.kind == kind)
            .map(|e| e.info.name.clone())
            .collect()
    }

    /// The entry for `kind.name`, or an error that lists the known stages of that kind.
    pub fn lookup(&self, kind: StageKind, name: &str) -> Result<&StageEntry> {
        self.get(kind, name).ok_or_else(|| {
            let known = self.names(kind);
            Error::params(format!("unknown {} stage `{name}`", kind_name(kind))).with_help(if known.is_empty() {
                format!(
                    "no {} stage is built in or loaded; load a plugin with `[[plugin]] path = ...` or --plugin-dir",
                    kind_name(kind)
                )
            } else {
                format!("known {} stages: {}", kind_name(kind), known.join(", "))
            })
        })
    }

    /// Load a plugin `.so` and register its stages. Errors name the file; a stage whose key is
    /// already taken is refused (the first one stays).
    pub fn load_plugin(&mut self, path: &Path) -> Result<LoadedPlugin> {
        let module = open_plugin(path)?;
        let name = (module.plugin_name())().into_string();
        let version = (module.plugin_version())().into_string();
        let infos = catch_panic(&format!("plugin {}", path.display()), || {
            Ok((module.stages())())
        })
        .map_err(|e| e.context(path.display()))?;
        let mut added = Vec::new();
        let mut new_entries = Vec::new();
        for fi in infos.iter() {
            let Some(info) = ffi::stage_info_from_ffi(fi) else {
                return Err(Error::unsupported(format!(
                    "{}: stage `{}` has a kind this srhost does not know",
                    path.display(),
                    fi.name
                ))
                .with_help("update srhost, or rebuild the plugin against this srhost's sr-abi"));
            };
            let key = info.key();
            if let Some(old) = self.entries.get(&key) {
                return Err(Error::params(format!(
                    "{}: stage `{key}` is already provided by {}",
                    path.display(),
                    old.source
                ))
                .with_help("rename the stage, or do not load both"));
            }
            added.push(key.clone());
            new_entries.push((
                key,
                StageEntry {
                    info,
                    source: StageSource::Plugin {
                        plugin: name.clone(),
                        version: version.clone(),
                        path: path.to_path_buf(),
                    },
                    maker: Maker::Ffi(module),
                },
            ));
        }
        self.entries.extend(new_entries);
        Ok(LoadedPlugin {
            path: path.to_path_buf(),
            name,
            version,
            stages: added,
        })
    }

    fn params_error(e: Error, key: &str) -> Error {
        e.context(format!("stage `{key}`"))
    }

    pub fn create_model(&self, name: &str, params_toml: &str) -> Result<Box<dyn Model>> {
        let e = self.lookup(StageKind::Model, name)?;
        let key = e.info.key();
        match &e.maker {
            Maker::Native(Factory::Model(f)) => catch_panic(&key, || f(name, params_toml)),
            Maker::Ffi(m) => {
                let b = ffi_call(&key, (m.create_model())(name.into(), params_toml.into()))?;
                Ok(Box::new(ffi::ModelImport(b)) as Box<dyn Model>)
            }
            _ => Err(Error::internal(format!(
                "`{key}` is registered with the wrong kind"
            ))),
        }
        .map_err(|err| Self::params_error(err, &key))
    }

    pub fn create_relevance(&self, name: &str, params_toml: &str) -> Result<Box<dyn Relevance>> {
        let e = self.lookup(StageKind::Relevance, name)?;
        let key = e.info.key();
        match &e.maker {
            Maker::Native(Factory::Relevance(f)) => catch_panic(&key, || f(name, params_toml)),
            Maker::Ffi(m) => ffi_call(
                &key,
                (m.create_relevance())(name.into(), params_toml.into()),
            )
            .map(|b| Box::new(RelevanceImport(b)) as Box<dyn Relevance>),
            _ => Err(Error::internal(format!(
                "`{key}` is registered with the wrong kind"
            ))),
        }
        .map_err(|err| Self::params_error(err, &key))
    }

    pub fn create_saliency(&self, name: &str, params_toml: &str) -> Result<Box<dyn Saliency>> {
        let e = self.lookup(StageKind::Saliency, name)?;
        let key = e.info.key();
        match &e.maker {
            Maker::Native(Factory::Saliency(f)) => catch_panic(&key, || f(name, params_toml)),
            Maker::Ffi(m) => ffi_call(&key, (m.create_saliency())(name.into(), params_toml.into()))
                .map(|b| Box::new(SaliencyImport(b)) as Box<dyn Saliency>),
            _ => Err(Error::internal(format!(
                "`{key}` is registered with the wrong kind"
            ))),
        }
        .map_err(|err| Self::params_error(err, &key))
    }

    pub fn create_renderer(&self, name: &str, params_toml: &str) -> Result<Box<dyn Renderer>> {
        let e = self.lookup(StageKind::Renderer, name)?;
        let key = e.info.key();
        match &e.maker {
            Maker::Native(Factory::Renderer(f)) => catch_panic(&key, || f(name, params_toml)),
            Maker::Ffi(m) => ffi_call(&key, (m.create_renderer())(name.into(), params_toml.into()))
                .map(|b| Box::new(RendererImport(b)) as Box<dyn Renderer>),
            _ => Err(Error::internal(format!(
                "`{key}` is registered with the wrong kind"
            ))),
        }
        .map_err(|err| Self::params_error(err, &key))
    }
}

fn ffi_call<T>(_key: &str, r: abi_stable::std_types::RResult<T, sr_abi::FfiError>) -> Result<T> {
    r.into_result().map_err(Error::from)
}

/// Open a plugin library and check its ABI. Every error names the file.
pub fn open_plugin(path: &Path) -> Result<PluginModRef> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(
            Error::io(path, "no such plugin file").with_help("give the path of a built .so")
        );
    }
    // dlopen searches the library path for a name without a slash (`libfoo.so`), so the file
    // checked above might not be the one loaded: hand it the absolute path.
    let absolute = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let header = lib_header_from_path(&absolute).map_err(|e| library_error(&shown, e))?;
    header
        .init_root_module::<PluginModRef>()
        .map_err(|e| library_error(&shown, e))
}

fn library_error(path: &str, e: LibraryError) -> Error {
    let ours = PluginModRef::VERSION_STRINGS.version;
    match e {
        LibraryError::OpenError { err, .. } => {
            Error::input(format!("{path}: not a loadable library: {err}"))
                .with_help("give a plugin built as a cdylib (`cargo build` makes lib<name>.so)")
        }
        LibraryError::GetSymbolError { .. } => Error::input(format!(
            "{path}: not an srhost plugin (it exports no abi_stable root module)"
        ))
        .with_help("export the plugin with `sr_core::export_plugin!` and build it with its `dynamic` feature"),
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => Error::unsupported(
            format!(
                "{path}: plugin built against srhost plugin ABI {actual_version}, but this srhost uses ABI {expected_version}"
            ),
        )
        .with_help(format!("rebuild the plugin against sr-abi {ours} (the version of this srhost's sr-abi crate)")),
        LibraryError::RootModule { err: RootModuleError::Unwound, .. } => Error::new(
            sr_abi::ErrorCode::Panic,
            format!("{path}: the plugin panicked while initialising its root module"),
        )
        .with_help("this is a bug in the plugin; the other plugins still load"),
        LibraryError::RootModule { err, .. } => {
            Error::input(format!("{path}: the plugin failed to initialise: {err}"))
        }
        LibraryError::AbiInstability(details) => Error::unsupported(format!(
            "{path}: the plugin's ABI types do not match this srhost's (ABI {ours}): {}",
            summarise_layout_error(&details.to_string())
        ))
        .with_help(format!("rebuild the plugin against sr-abi {ours}")),
        other => Error::input(format!("{path}: cannot load plugin: {}", other.to_string().trim())),
    }
}

/// abi_stable's layout report runs to hundreds of lines; keep its verdicts
/// (`Error:<what>` with the expected and found values), e.g.
/// "mismatched package (expected sr-abi, found my-plugin)".
fn summarise_layout_error(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut found = vec![];
    for (i, l) in lines.iter().enumerate() {
        if let Some(what) = l.strip_prefix("Error:") {
            let after = |label: &str| {
                lines[i..]
                    .iter()
                    .position(|x| *x == label)
                    .and_then(|p| lines.get(i + p + 1))
                    .copied()
                    .unwrap_or("?")
            };
            let item = format!(
                "{} (expected {}, found {})",
                what.trim(),
                after("Expected:"),
                after("Found:")
            );
            if !found.contains(&item) {
                found.push(item);
            }
        }
    }
    if found.is_empty() {
        lines
            .iter()
            .find(|l| !l.is_empty())
            .copied()
            .unwrap_or("layout mismatch")
            .to_string()
    } else {
        found.join("; ")
    }
}
