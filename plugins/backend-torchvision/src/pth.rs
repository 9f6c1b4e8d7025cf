//! PyTorch checkpoints (`.pth`, `.pt`) read without executing them.
//!
//! `torch.save` writes a pickle that rebuilds tensors from "storages". This module runs a
//! restricted pickle machine: it knows the opcodes a state dict uses and the handful of
//! globals that rebuild tensors and dicts (`torch._utils._rebuild_tensor_v2`,
//! `collections.OrderedDict`, `torch.*Storage`...). Any other global is refused, so a
//! malicious file cannot run code. Both on-disk formats are read:
//!
//! - the zip format (PyTorch >= 1.6): `<name>/data.pkl` plus one file per storage under
//!   `<name>/data/`;
//! - the legacy format (PyTorch < 1.6, e.g. torchvision's AlexNet/VGG downloads and
//!   facenet-pytorch's `onet.pt`): five pickles in a row (magic number, protocol version,
//!   system info, the object, the storage keys), then each storage as an int64 element
//!   count followed by its bytes.
//!
//! The result is every floating-point tensor of the state dict, by name, as f32. Integer
//! tensors (BatchNorm's `num_batches_tracked`) are skipped.

use sr_core::{Error, Result, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// A value on the pickle machine's stack. (Some payloads are only read by `Debug`, in errors.)
#[allow(dead_code)]
#[derive(Clone, Debug)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// Containers carry how deeply they nest (an empty one is 1, a scalar 0), kept up to date
    /// as items are added, so that [`MAX_DEPTH`] is checked in O(1) per item.
    Tuple(Vec<Val>, u16),
    List(Vec<Val>, u16),
    Dict(Vec<(Val, Val)>, u16),
    /// A global we allow, by `module.name`.
    Global(String),
    /// A reference to a storage: (dtype, key).
    Storage(DType, String),
    /// A rebuilt tensor view.
    Tensor(TensorRef),
    Mark,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage(name: &str) -> Option<DType> {
        Some(match name.rsplit('.').next()? {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
    fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
}

#[derive(Clone, Debug)]
struct TensorRef {
    dtype: DType,
    key: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter",
    "torch.nn.parameter.Parameter",
    "builtins.set",
];

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Val>,
    memo: HashMap<u32, Val>,
    what: &'a str,
    /// How many more values memo copies may make ([`MAX_COPIED_VALUES`]).
    budget: usize,
}

/// The most values (containers, items, 64-byte pieces of strings) that copies through the
/// pickle memo may make, in all: a state dict's pickle copies a few hundred; a "memo bomb"
/// (a value memoised, fetched twice into a new value, memoised again, ...) doubles each time.
const MAX_COPIED_VALUES: usize = 10_000_000;

/// The deepest the pickle machine's stack may grow. A state dict's pickle stays under about
/// 2,000 (items are set in batches of 1,000); the bound also bounds how deeply values nest,
/// which dropping them recursively needs stack for.
const MAX_STACK: usize = 10_000;

/// How deeply values may nest. A state dict nests about 5 deep; dropping, copying and printing
/// a value recurse once per level, so this bounds the native stack they need.
const MAX_DEPTH: u16 = 256;

impl Val {
    fn depth(&self) -> u16 {
        match self {
            Val::Tuple(_, d) | Val::List(_, d) | Val::Dict(_, d) => *d,
            _ => 0,
        }
    }
    /// How many values `self` holds (itself included, strings and bytes by 64-byte pieces),
    /// counting no further than `cap`.
    fn size_up_to(&self, cap: usize) -> usize {
        let mut n = 0;
        let mut todo = vec![self];
        while let Some(v) = todo.pop() {
            n += 1;
            if n > cap {
                return n;
            }
            match v {
                Val::Str(s) => n += s.len() / 64,
                Val::Bytes(b) => n += b.len() / 64,
                Val::Tuple(items, _) | Val::List(items, _) => todo.extend(items),
                Val::Dict(items, _) => todo.extend(items.iter().flat_map(|(k, v)| [k, v])),
                _ => {}
            }
        }
        n
    }
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], what: &'a str) -> Self {
        Machine {
            data,
            pos: 0,
            stack: vec![],
            memo: HashMap::new(),
            what,
            budget: MAX_COPIED_VALUES,
        }
    }

    /// A copy of `v` for the memo, charged to the copy budget.
    fn copy(&mut self, v: &Val) -> Result<Val> {
        let n = v.size_up_to(self.budget);
        if n > self.budget {
            return Err(self.err(format!(
                "its memo copies more than {MAX_COPIED_VALUES} values (a state dict copies a few hundred)"
            )));
        }
        self.budget -= n;
        Ok(v.clone())
    }

    /// The depth of a container holding `items`, checked against [`MAX_DEPTH`].
    fn nested<'v>(&self, items: impl IntoIterator<Item = &'v Val>) -> Result<u16> {
        let d = 1 + items.into_iter().map(Val::depth).max().unwrap_or(0);
        if d > MAX_DEPTH {
            return Err(self.err(format!(
                "its values nest more than {MAX_DEPTH} deep (a state dict's nest about 5)"
            )));
        }
        Ok(d)
    }

    fn tuple(&self, items: Vec<Val>) -> Result<Val> {
        let d = self.nested(&items)?;
        Ok(Val::Tuple(items, d))
    }

    fn err(&self, m: impl std::fmt::Display) -> Error {
        Error::input(format!(
            "{}: not a readable PyTorch checkpoint: {m} (pickle offset {})",
            self.what, self.pos
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.data.get(self.pos..end))
            .ok_or_else(|| self.err("truncated"))?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| self.err("unterminated line"))?;
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
    fn pop(&mut self) -> Result<Val> {
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Val>> {
        let i = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Val::Mark))
            .ok_or_else(|| self.err("no mark"))?;
        let items = self.stack.split_off(i + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top(&mut self) -> Result<&mut Val> {
        let e = self.err("empty stack");
        self.stack.last_mut().ok_or(e)
    }

    /// Run to STOP and return the result. `persistent` resolves persistent ids (storages).
    fn run(&mut self, persistent: &dyn Fn(Val) -> std::result::Result<Val, String>) -> Result<Val> {
        loop {
            if self.stack.len() > MAX_STACK {
                return Err(self.err(format!(
                    "its stack grows beyond {MAX_STACK} values (a state dict's stays under about 2,000)"
                )));
            }
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.stack.push(Val::Mark),
                b'}' => self.stack.push(Val::Dict(vec![], 1)),
                b']' => self.stack.push(Val::List(vec![], 1)),
                b')' => self.stack.push(Val::Tuple(vec![], 1)),
                b'N' => self.stack.push(Val::None),
                0x88 => self.stack.push(Val::Bool(true)),
                0x89 => self.stack.push(Val::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Val::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Val::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Val::Int(v as i64))
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let mut v: i128 = 0;
                    for (i, &x) in b.iter().enumerate().take(16) {
                        v |= (x as i128) << (8 * i);
                    }
                    if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    self.stack.push(Val::Int(v as i64))
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.stack
                        .push(Val::Float(f64::from_be_bytes(b.try_into().unwrap())))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Val::Str(s))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Val::Str(s))
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Val::Bytes(b))
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Val::Bytes(b))
                }
                b'q' | b'r' | 0x94 => {
                    let k = match op {
                        b'q' => self.u8()? as u32,
                        b'r' => self.u32()?,
                        _ => self.memo.len() as u32,
                    };
                    let top = self.top()?.clone();
                    let v = self.copy(&top)?;
                    self.memo.insert(k, v);
                }
                b'h' | b'j' => {
                    let k = if op == b'h' {
                        self.u8()? as u32
                    } else {
                        self.u32()?
                    };
                    let held = self
                        .memo
                        .get(&k)
                        .cloned()
                        .ok_or_else(|| self.err("bad memo"))?;
                    let v = self.copy(&held)?;
                    self.stack.push(v)
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let t = self.tuple(items)?;
                    self.stack.push(t)
                }
                0x85 => {
                    let a = self.pop()?;
                    let t = self.tuple(vec![a])?;
                    self.stack.push(t)
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    let t = self.tuple(vec![a, b])?;
                    self.stack.push(t)
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    let t = self.tuple(vec![a, b, c])?;
                    self.stack.push(t)
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let nd = self.nested([&k, &v])?;
                    match self.top()? {
                        Val::Dict(d, depth) => {
                            *depth = (*depth).max(nd);
                            d.push((k, v))
                        }
                        _ => return Err(self.err("SETITEM on a non-dict")),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let e = self.err("SETITEMS on a non-dict");
                    let nd = self.nested(&items)?;
                    match self.top()? {
                        Val::Dict(d, depth) => {
                            *depth = (*depth).max(nd);
                            let mut it = items.into_iter();
                            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                                d.push((k, v));
                            }
                        }
                        _ => return Err(e),
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    let e = self.err("APPEND on a non-list");
                    let nd = self.nested([&v])?;
                    match self.top()? {
                        Val::List(l, depth) => {
                            *depth = (*depth).max(nd);
                            l.push(v)
                        }
                        _ => return Err(e),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let e = self.err("APPENDS on a non-list");
                    let nd = self.nested(&items)?;
                    match self.top()? {
                        Val::List(l, depth) => {
                            *depth = (*depth).max(nd);
                            l.extend(items)
                        }
                        _ => return Err(e),
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let full = format!("{module}.{name}");
                    self.push_global(full)?;
                }
                0x93 => {
                    let name = match self.pop()? {
                        Val::Str(s) => s,
                        _ => return Err(self.err("STACK_GLOBAL needs strings")),
                    };
                    let module = match self.pop()? {
                        Val::Str(s) => s,
                        _ => return Err(self.err("STACK_GLOBAL needs strings")),
                    };
                    self.push_global(format!("{module}.{name}"))?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent(pid).map_err(|m| self.err(m))?;
                    self.stack.push(v)
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.stack.push(v)
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args); only for allowed globals.
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.reduce(cls, args)?;
                    self.stack.push(v)
                }
                b'b' => {
                    // BUILD: set state. OrderedDict state and tensor metadata are ignored.
                    self.pop()?;
                }
                other => return Err(self.err(format!("unsupported pickle opcode 0x{other:02x}"))),
            }
        }
    }

    fn push_global(&mut self, full: String) -> Result<()> {
        if ALLOWED_GLOBALS.contains(&full.as_str())
            || DType::from_storage(&full).is_some() && full.starts_with("torch.")
        {
            self.stack.push(Val::Global(full));
            Ok(())
        } else {
            Err(self.err(format!(
                "refusing the pickle global `{full}` (only tensors and dicts are read)"
            )))
        }
    }

    fn reduce(&self, f: Val, args: Val) -> Result<Val> {
        let Val::Global(name) = f else {
            return Err(self.err("call of a non-global"));
        };
        let args = match args {
            Val::Tuple(a, _) => a,
            _ => return Err(self.err("call arguments are not a tuple")),
        };
        let ints = |v: &Val| -> Result<Vec<usize>> {
            match v {
                Val::Tuple(t, _) | Val::List(t, _) => t
                    .iter()
                    .map(|x| match x {
                        Val::Int(i) if *i >= 0 => Ok(*i as usize),
                        _ => Err(self.err("bad size or stride")),
                    })
                    .collect(),
                _ => Err(self.err("bad size or stride")),
            }
        };
        match name.as_str() {
            "collections.OrderedDict" => Ok(Val::Dict(vec![], 1)),
            "builtins.set" => Ok(Val::List(vec![], 1)),
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                let (
                    Some(Val::Storage(dtype, key)),
                    Some(Val::Int(offset)),
                    Some(size),
                    Some(stride),
                ) = (args.first(), args.get(1), args.get(2), args.get(3))
                else {
                    return Err(self.err("unexpected _rebuild_tensor arguments"));
                };
                let offset = usize::try_from(*offset)
                    .map_err(|_| self.err(format!("negative storage offset {offset}")))?;
                Ok(Val::Tensor(TensorRef {
                    dtype: *dtype,
                    key: key.clone(),
                    offset,
                    shape: ints(size)?,
                    stride: ints(stride)?,
                }))
            }
            "torch._utils._rebuild_parameter" | "torch.nn.parameter.Parameter" => args
                .into_iter()
                .next()
                .ok_or_else(|| self.err("empty Parameter")),
            _ => Err(self.err(format!("cannot call `{name}`"))),
        }
    }
}

/// The persistent id of a storage: `('storage', torch.FloatStorage, key, location, numel, ...)`.
fn storage_from_pid(pid: Val) -> std::result::Result<Val, String> {
    let Val::Tuple(t, _) = pid else {
        return Err("a persistent id that is not a tuple".into());
    };
    match (t.first(), t.get(1), t.get(2)) {
        (Some(Val::Str(tag)), Some(Val::Global(ty)), Some(key)) if tag == "storage" => {
            let dtype =
                DType::from_storage(ty).ok_or_else(|| format!("unknown storage type {ty}"))?;
            let key = match key {
                Val::Str(s) => s.clone(),
                Val::Int(i) => i.to_string(),
                _ => return Err("bad storage key".into()),
            };
            Ok(Val::Storage(dtype, key))
        }
        _ => Err(format!("unexpected persistent id {t:?}")),
    }
}

/// Walk the unpickled object for tensors: a state dict, or a dict holding one
/// (`{"state_dict": ...}`, `{"model": ...}`).
fn collect_tensors(v: &Val, prefix: &str, out: &mut Vec<(String, TensorRef)>) {
    if let Val::Dict(items, _) = v {
        for (k, val) in items {
            let key = match k {
                Val::Str(s) => s.clone(),
                Val::Int(i) => i.to_string(),
                _ => continue,
            };
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match val {
                Val::Tensor(t) => out.push((name, t.clone())),
                Val::Dict(..) => collect_tensors(val, &name, out),
                _ => {}
            }
        }
    }
}

fn to_f32(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => vec![],
    }
}

/// All tensors of a checkpoint together may hold this many times the values of its storages
/// (tied weights share one storage; a state dict repeats none otherwise).
const MAX_VIEW_FACTOR: usize = 2;
/// ...and at least this many values (for a checkpoint of a few small tensors).
const MIN_VIEW_BUDGET: usize = 1 << 24;

/// Gather a strided view of a storage into a dense row-major tensor.
fn materialise(t: &TensorRef, storage: &[f32], what: &str, name: &str) -> Result<Tensor> {
    let bad = |m: String| {
        Error::input(format!(
            "{what}: tensor `{name}` of shape {:?} and strides {:?} {m}",
            t.shape, t.stride
        ))
    };
    if t.shape.len() != t.stride.len() {
        return Err(bad(format!(
            "has {} dimensions and {} strides",
            t.shape.len(),
            t.stride.len()
        )));
    }
    // Checked before anything is allocated: the element count, and the last element's index
    // inside the storage. A view larger than its storage must repeat elements (a zero
    // stride), which state dicts do not hold.
    let n = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("has more elements than can be counted".into()))?;
    let zero_stride = t
        .stride
        .iter()
        .zip(&t.shape)
        .any(|(&s, &d)| s == 0 && d > 1);
    if n > storage.len() && !(zero_stride && n <= 1 << 24) {
        return Err(bad(format!(
            "has {n} elements, its storage {}",
            storage.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    if n > 0 {
        let max_index = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s)?.checked_add(a)
            });
        if max_index.is_none_or(|m| m >= storage.len()) {
            return Err(bad(format!(
                "reaches past its storage ({} values)",
                storage.len()
            )));
        }
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..n {
            let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.push(storage[off]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    Tensor::new(t.shape.clone(), out)
}

/// Read every floating-point tensor of a `.pth`/`.pt` state dict, as f32, by name.
pub fn read_pth(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = sr_core::io::read_bounded(path, sr_core::io::MAX_MODEL_BYTES, "a checkpoint")?;
    read_pth_bytes(&bytes, &path.display().to_string())
}

/// [`read_pth`] on the file's bytes; `what` names it in errors.
pub fn read_pth_bytes(bytes: &[u8], what: &str) -> Result<BTreeMap<String, Tensor>> {
    let what = what.to_string();
    let (refs, storages) = if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes, &what)?
    } else {
        read_legacy(bytes, &what)?
    };
    let mut out = BTreeMap::new();
    // All tensors together: a state dict's tensors are its storages' values, tied weights at
    // most twice; views that repeat values (zero strides, thousands of views of one storage)
    // would make gigabytes from a small file, so the sum is bounded before each is made.
    let stored: usize = storages.values().map(Vec::len).sum();
    let budget = stored.saturating_mul(MAX_VIEW_FACTOR).max(MIN_VIEW_BUDGET);
    let mut made = 0usize;
    for (name, t) in refs {
        if !t.dtype.is_float() {
            continue;
        }
        let storage = storages.get(&t.key).ok_or_else(|| {
            Error::input(format!(
                "{what}: tensor `{name}` refers to a missing storage `{}`",
                t.key
            ))
        })?;
        // (Each tensor's own bounds are checked first, so a malformed one is named as such;
        // the sum then stops the next one.)
        let tensor = materialise(&t, storage, &what, &name)?;
        made = made.saturating_add(tensor.numel());
        if made > budget {
            return Err(Error::input(format!(
                "{what}: its tensors up to `{name}` hold {made} values, more than {MAX_VIEW_FACTOR} x the {stored} its storages hold (views that repeat values; a state dict holds each weight once)"
            )));
        }
        out.insert(name.clone(), tensor);
    }
    if out.is_empty() {
        return Err(Error::input(format!(
            "{what}: the checkpoint holds no floating-point tensor"
        )));
    }
    Ok(out)
}

type Parsed = (Vec<(String, TensorRef)>, HashMap<String, Vec<f32>>);

fn read_zip(bytes: &[u8], what: &str) -> Result<Parsed> {
    let bad = |m: String| {
        Error::input(format!(
            "{what}: not a readable PyTorch zip checkpoint: {m}"
        ))
    };
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .ok_or_else(|| bad("no data.pkl".into()))?
        .clone();
    let root = pkl.trim_end_matches("data.pkl").to_string();
    // A storage's entry is stored, or compressed about 1:1 (weights compress poorly): more
    // than this many bytes out of the archive is a zip bomb, not a checkpoint.
    let limit = (bytes.len() as u64).saturating_mul(4).max(64 << 20);
    let mut read = |name: &str| -> Result<Vec<u8>> {
        let f = zip.by_name(name).map_err(|e| bad(format!("{name}: {e}")))?;
        let mut v = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut v)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        if v.len() as u64 > limit {
            return Err(bad(format!(
                "{name} unpacks to more than {limit} bytes from a {}-byte file",
                bytes.len()
            )));
        }
        Ok(v)
    };
    let data = read(&pkl)?;
    let obj = Machine::new(&data, what).run(&storage_from_pid)?;
    let mut refs = vec![];
    collect_tensors(&obj, "", &mut refs);
    let mut storages = HashMap::new();
    for (_, t) in &refs {
        if storages.contains_key(&t.key) || !t.dtype.is_float() {
            continue;
        }
        let raw = read(&format!("{root}data/{}", t.key))?;
        storages.insert(t.key.clone(), to_f32(t.dtype, &raw));
    }
    Ok((refs, storages))
}

fn read_legacy(bytes: &[u8], what: &str) -> Result<Parsed> {
    // Protocol 2, then LONG1 of the magic number 0x1950a86a20f9469cfc6c.
    const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
    if !bytes.starts_with(LEGACY_MAGIC) {
        return Err(Error::input(format!(
            "{what}: not a PyTorch checkpoint (neither a zip archive nor the legacy format's magic number)"
        ))
        .with_help("give a file written by torch.save(model.state_dict(), path), or a .safetensors file"));
    }
    let no_pid = |_: Val| Err("unexpected persistent id in a header pickle".to_string());
    let mut m = Machine::new(bytes, what);
    // Magic number, protocol version, system info.
    m.run(&no_pid)?;
    m.stack.clear();
    m.run(&no_pid)?;
    m.stack.clear();
    m.run(&no_pid)?;
    m.stack.clear();
    m.memo.clear();
    let obj = m.run(&storage_from_pid)?;
    m.stack.clear();
    m.memo.clear();
    let keys = match m.run(&no_pid)? {
        Val::List(k, _) => k
            .into_iter()
            .map(|v| match v {
                Val::Str(s) => Ok(s),
                _ => Err(Error::input(format!("{what}: bad storage key list"))),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(Error::input(format!("{what}: no storage key list"))),
    };
    let mut refs = vec![];
    collect_tensors(&obj, "", &mut refs);
    let dtypes: HashMap<&str, DType> = refs
        .iter()
        .map(|(_, t)| (t.key.as_str(), t.dtype))
        .collect();
    let mut pos = m.pos;
    let mut storages = HashMap::new();
    for key in keys {
        let count_bytes = bytes
            .get(pos..pos.saturating_add(8))
            .ok_or_else(|| Error::input(format!("{what}: truncated storage `{key}`")))?;
        let count = u64::from_le_bytes(count_bytes.try_into().unwrap());
        pos += 8;
        let dtype = dtypes.get(key.as_str()).copied().unwrap_or(DType::U8);
        // The declared size is checked against the bytes present before it is read.
        let raw = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dtype.size()))
            .and_then(|len| Some(pos..pos.checked_add(len)?))
            .and_then(|r| bytes.get(r))
            .ok_or_else(|| {
                Error::input(format!(
                    "{what}: storage `{key}` declares {count} values, more than the file holds"
                ))
            })?;
        let len = raw.len();
        pos += len;
        if dtype.is_float() {
            storages.insert(key, to_f32(dtype, raw));
        }
    }
    Ok((refs, storages))
}
