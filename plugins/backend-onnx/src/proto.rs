//! A small reader for the parts of the ONNX protobuf (`onnx.proto`) a CNN needs: the model's
//! opset, its graph, nodes, attributes, initializers and input/output shapes.
//!
//! Hand-written on the protobuf wire format (varints and length-delimited fields) instead of
//! generated code: the messages we need are few and stable, and it keeps `protoc` out of the
//! build. Unknown fields are skipped, as protobuf requires. Field numbers are those of
//! `onnx/onnx.proto` (ONNX 1.x; they never change).

use sr_core::{Error, Result};

/// A protobuf wire-format error, with where it happened.
fn bad(what: &str) -> Error {
    Error::input(format!("not a valid ONNX file: {what}"))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// One field of a message: number, wire type and payload.
#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| bad("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| bad("a field runs past the end of its message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next `(field number, value, raw bytes of the whole field)`, or None at the end.
    fn next(&mut self) -> Result<Option<(u32, Field<'a>, &'a [u8])>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let start = self.pos;
        let key = self.varint()?;
        let (num, wire) = ((key >> 3) as u32, key & 7);
        let f = match wire {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            2 => {
                let n = self.varint()? as usize;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap())),
            w => return Err(bad(&format!("unsupported wire type {w} (field {num})"))),
        };
        Ok(Some((num, f, &self.buf[start..self.pos])))
    }
}

fn string(f: Field) -> Result<String> {
    match f {
        Field::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| bad("a name is not UTF-8")),
        _ => Err(bad("expected a string field")),
    }
}

fn int(f: Field) -> Result<i64> {
    match f {
        Field::Varint(v) => Ok(v as i64),
        _ => Err(bad("expected an integer field")),
    }
}

/// Repeated int64, packed or not.
fn ints(f: Field, out: &mut Vec<i64>) -> Result<()> {
    match f {
        Field::Varint(v) => out.push(v as i64),
        Field::Bytes(b) => {
            let mut r = Reader::new(b);
            while r.pos < b.len() {
                out.push(r.varint()? as i64);
            }
        }
        _ => return Err(bad("expected repeated integers")),
    }
    Ok(())
}

/// Repeated float, packed or not.
fn floats(f: Field, out: &mut Vec<f32>) -> Result<()> {
    match f {
        Field::Fixed32(v) => out.push(f32::from_bits(v)),
        Field::Bytes(b) if b.len() % 4 == 0 => out.extend(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap())),
        ),
        _ => return Err(bad("expected repeated floats")),
    }
    Ok(())
}

/// Repeated double, packed or not.
fn doubles(f: Field, out: &mut Vec<f64>) -> Result<()> {
    match f {
        Field::Fixed64(v) => out.push(f64::from_bits(v)),
        Field::Bytes(b) if b.len() % 8 == 0 => out.extend(
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap())),
        ),
        _ => return Err(bad("expected repeated doubles")),
    }
    Ok(())
}

/// Tensor element data, widened to what a CNN importer needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A constant tensor (`TensorProto`).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorProto {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: Data,
}

// ONNX TensorProto.DataType values.
const FLOAT: i64 = 1;
const UINT8: i64 = 2;
const INT8: i64 = 3;
const UINT16: i64 = 4;
const INT16: i64 = 5;
const INT32: i64 = 6;
const INT64: i64 = 7;
const BOOL: i64 = 9;
const FLOAT16: i64 = 10;
const DOUBLE: i64 = 11;
const UINT32: i64 = 12;
const UINT64: i64 = 13;

pub fn dtype_name(t: i64) -> &'static str {
    match t {
        FLOAT => "float",
        UINT8 => "uint8",
        INT8 => "int8",
        UINT16 => "uint16",
        INT16 => "int16",
        INT32 => "int32",
        INT64 => "int64",
        8 => "string",
        BOOL => "bool",
        FLOAT16 => "float16",
        DOUBLE => "double",
        UINT32 => "uint32",
        UINT64 => "uint64",
        16 => "bfloat16",
        _ => "an unknown type",
    }
}

/// Whether a data type is read as floats (else as integers).
pub fn is_float_type(t: i64) -> bool {
    matches!(t, FLOAT | FLOAT16 | DOUBLE)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = (h >> 10) & 0x1f;
    let frac = u32::from(h & 0x3ff);
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        e => sign | ((u32::from(e) + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

fn parse_tensor(b: &[u8]) -> Result<TensorProto> {
    let mut r = Reader::new(b);
    let (mut name, mut dims, mut dtype) = (String::new(), Vec::new(), 0i64);
    let (mut fl, mut i32s, mut i64s, mut f64s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut raw: Option<&[u8]> = None;
    let mut external = false;
    while let Some((num, f, _)) = r.next()? {
        match num {
            1 => ints(f, &mut dims)?,
            2 => dtype = int(f)?,
            4 => floats(f, &mut fl)?,
            5 => ints(f, &mut i32s)?,
            7 => ints(f, &mut i64s)?,
            8 => name = string(f)?,
            9 => {
                if let Field::Bytes(b) = f {
                    raw = Some(b)
                }
            }
            10 => doubles(f, &mut f64s)?,
            11 => ints(f, &mut i64s)?,
            14 => external = int(f)? == 1,
            _ => {}
        }
    }
    let what = || format!("tensor `{name}`");
    if external {
        return Err(Error::input(format!(
            "{}: its data is stored in an external file, which srhost reads only when it loads the model from its path",
            what()
        ))
        .with_help("load the .onnx file by path with its data file beside it, or re-save it with onnx.save(model, path, save_as_external_data=False)"));
    }
    if dims.iter().any(|&d| d < 0) {
        return Err(bad(&format!(
            "{} has a negative dimension {dims:?}",
            what()
        )));
    }
    // The element count, and (below) the bytes, from the file's dims: checked, never wrapped.
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
        .filter(|&c| c.checked_mul(8).is_some())
        .ok_or_else(|| {
            Error::input(format!(
                "{} declares dims {dims:?}: more values than can be counted",
                what()
            ))
        })?;
    let data = if let Some(raw) = raw {
        let width = match dtype {
            FLOAT | INT32 | UINT32 => 4,
            INT64 | UINT64 | DOUBLE => 8,
            FLOAT16 | INT16 | UINT16 => 2,
            UINT8 | INT8 | BOOL => 1,
            t => {
                return Err(Error::input(format!(
                    "{}: data type {} is not supported",
                    what(),
                    dtype_name(t)
                )))
            }
        };
        if raw.len() != count * width {
            return Err(bad(&format!(
                "{}: {} bytes of data for shape {dims:?} of {}",
                what(),
                raw.len(),
                dtype_name(dtype)
            )));
        }
        let c = raw.chunks_exact(width);
        match dtype {
            FLOAT => Data::F32(
                c.map(|x| f32::from_le_bytes(x.try_into().unwrap()))
                    .collect(),
            ),
            DOUBLE => Data::F32(
                c.map(|x| f64::from_le_bytes(x.try_into().unwrap()) as f32)
                    .collect(),
            ),
            FLOAT16 => Data::F32(
                c.map(|x| f16_to_f32(u16::from_le_bytes([x[0], x[1]])))
                    .collect(),
            ),
            INT64 => Data::I64(
                c.map(|x| i64::from_le_bytes(x.try_into().unwrap()))
                    .collect(),
            ),
            UINT64 => Data::I64(
                c.map(|x| u64::from_le_bytes(x.try_into().unwrap()) as i64)
                    .collect(),
            ),
            INT32 => Data::I64(
                c.map(|x| i32::from_le_bytes(x.try_into().unwrap()) as i64)
                    .collect(),
            ),
            UINT32 => Data::I64(
                c.map(|x| u32::from_le_bytes(x.try_into().unwrap()) as i64)
                    .collect(),
            ),
            INT16 => Data::I64(c.map(|x| i16::from_le_bytes([x[0], x[1]]) as i64).collect()),
            UINT16 => Data::I64(c.map(|x| u16::from_le_bytes([x[0], x[1]]) as i64).collect()),
            INT8 => Data::I64(c.map(|x| x[0] as i8 as i64).collect()),
            _ => Data::I64(c.map(|x| x[0] as i64).collect()),
        }
    } else {
        match dtype {
            FLOAT => Data::F32(fl),
            DOUBLE => Data::F32(f64s.into_iter().map(|v| v as f32).collect()),
            // float16 in int32_data holds the bit pattern.
            FLOAT16 => Data::F32(i32s.into_iter().map(|v| f16_to_f32(v as u16)).collect()),
            INT64 | UINT64 => Data::I64(i64s),
            INT32 | INT16 | INT8 | UINT16 | UINT8 | BOOL | UINT32 => Data::I64(i32s),
            t => {
                return Err(Error::input(format!(
                    "{}: data type {} is not supported",
                    what(),
                    dtype_name(t)
                )))
            }
        }
    };
    if data.len() != count {
        return Err(bad(&format!(
            "{}: {} values for shape {dims:?}",
            what(),
            data.len()
        )));
    }
    Ok(TensorProto { name, dims, data })
}

/// An attribute value (`AttributeProto`).
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Float(f32),
    Int(i64),
    Str(String),
    Tensor(TensorProto),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    /// A graph, strings, or something else a CNN importer never reads.
    Other,
}

fn parse_attr(b: &[u8]) -> Result<(String, Attr)> {
    let mut r = Reader::new(b);
    let mut name = String::new();
    let (mut f, mut i, mut s, mut t) = (None, None, None, None);
    let (mut fl, mut is) = (Vec::new(), Vec::new());
    let mut ty = 0;
    while let Some((num, v, _)) = r.next()? {
        match num {
            1 => name = string(v)?,
            2 => {
                if let Field::Fixed32(x) = v {
                    f = Some(f32::from_bits(x))
                }
            }
            3 => i = Some(int(v)?),
            4 => s = Some(string(v)?),
            5 => {
                if let Field::Bytes(b) = v {
                    t = Some(parse_tensor(b)?)
                }
            }
            7 => floats(v, &mut fl)?,
            8 => ints(v, &mut is)?,
            20 => ty = int(v)?,
            _ => {}
        }
    }
    // AttributeType: FLOAT 1, INT 2, STRING 3, TENSOR 4, GRAPH 5, FLOATS 6, INTS 7.
    let a = match ty {
        1 => Attr::Float(f.unwrap_or(0.0)),
        2 => Attr::Int(i.unwrap_or(0)),
        3 => Attr::Str(s.unwrap_or_default()),
        4 => t.map(Attr::Tensor).unwrap_or(Attr::Other),
        6 => Attr::Floats(fl),
        7 => Attr::Ints(is),
        // Very old files leave `type` out: infer it from what is set.
        0 => match (f, i, s, t) {
            (Some(f), ..) => Attr::Float(f),
            (_, Some(i), ..) => Attr::Int(i),
            (_, _, Some(s), _) => Attr::Str(s),
            (_, _, _, Some(t)) => Attr::Tensor(t),
            _ if !fl.is_empty() => Attr::Floats(fl),
            _ if !is.is_empty() => Attr::Ints(is),
            _ => Attr::Other,
        },
        _ => Attr::Other,
    };
    Ok((name, a))
}

/// A node (`NodeProto`).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeProto {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(String, Attr)>,
}

impl NodeProto {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}

fn parse_node(b: &[u8]) -> Result<NodeProto> {
    let mut r = Reader::new(b);
    let mut n = NodeProto {
        name: String::new(),
        op_type: String::new(),
        domain: String::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        attrs: Vec::new(),
    };
    while let Some((num, f, _)) = r.next()? {
        match num {
            1 => n.inputs.push(string(f)?),
            2 => n.outputs.push(string(f)?),
            3 => n.name = string(f)?,
            4 => n.op_type = string(f)?,
            5 => {
                if let Field::Bytes(b) = f {
                    n.attrs.push(parse_attr(b)?)
                }
            }
            7 => n.domain = string(f)?,
            _ => {}
        }
    }
    Ok(n)
}

/// A dimension of a declared shape: a number, or a symbolic name (dynamic).
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
}

/// A graph input or output (`ValueInfoProto`): its name, element type and shape if declared.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: i64,
    pub shape: Option<Vec<Dim>>,
}

fn parse_value_info(b: &[u8]) -> Result<ValueInfo> {
    let mut r = Reader::new(b);
    let mut v = ValueInfo {
        name: String::new(),
        elem_type: 0,
        shape: None,
    };
    while let Some((num, f, _)) = r.next()? {
        match (num, f) {
            (1, f) => v.name = string(f)?,
            (2, Field::Bytes(tp)) => {
                // TypeProto.tensor_type = 1 -> Tensor { elem_type = 1, shape = 2 }.
                let mut tr = Reader::new(tp);
                while let Some((tn, tf, _)) = tr.next()? {
                    let (1, Field::Bytes(tt)) = (tn, tf) else {
                        continue;
                    };
                    let mut rr = Reader::new(tt);
                    while let Some((k, kf, _)) = rr.next()? {
                        match (k, kf) {
                            (1, kf) => v.elem_type = int(kf)?,
                            (2, Field::Bytes(sp)) => {
                                let mut dims = Vec::new();
                                let mut sr = Reader::new(sp);
                                while let Some((1, Field::Bytes(d), _)) = sr.next()? {
                                    let mut dr = Reader::new(d);
                                    let mut dim = Dim::Symbolic(String::new());
                                    while let Some((dn, df, _)) = dr.next()? {
                                        match dn {
                                            1 => dim = Dim::Fixed(int(df)?),
                                            2 => dim = Dim::Symbolic(string(df)?),
                                            _ => {}
                                        }
                                    }
                                    dims.push(dim);
                                }
                                v.shape = Some(dims);
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(v)
}

/// What srhost reads of a `ModelProto`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelProto {
    pub ir_version: i64,
    /// The default-domain opset version (0 if not declared).
    pub opset: i64,
    pub producer: String,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

/// Parse a serialised ONNX model.
pub fn parse(bytes: &[u8]) -> Result<ModelProto> {
    let mut m = ModelProto {
        ir_version: 0,
        opset: 0,
        producer: String::new(),
        nodes: Vec::new(),
        initializers: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    let mut r = Reader::new(bytes);
    let mut graph = None;
    while let Some((num, f, _)) = r.next()? {
        match (num, f) {
            (1, f) => m.ir_version = int(f)?,
            (2, f) => m.producer = string(f)?,
            (7, Field::Bytes(g)) => graph = Some(g),
            (8, Field::Bytes(op)) => {
                let (mut domain, mut version) = (String::new(), 0);
                let mut or = Reader::new(op);
                while let Some((k, v, _)) = or.next()? {
                    match k {
                        1 => domain = string(v)?,
                        2 => version = int(v)?,
                        _ => {}
                    }
                }
                if domain.is_empty() || domain == "ai.onnx" {
                    m.opset = version;
                }
            }
            _ => {}
        }
    }
    let g = graph.ok_or_else(|| bad("the model has no graph"))?;
    let mut r = Reader::new(g);
    while let Some((num, f, _)) = r.next()? {
        let Field::Bytes(b) = f else { continue };
        match num {
            1 => m.nodes.push(parse_node(b)?),
            5 => m.initializers.push(parse_tensor(b)?),
            11 => m.inputs.push(parse_value_info(b)?),
            12 => m.outputs.push(parse_value_info(b)?),
            _ => {}
        }
    }
    if m.ir_version == 0 && m.nodes.is_empty() {
        return Err(bad("no IR version and no nodes (is this an ONNX model?)"));
    }
    Ok(m)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, num: u32, b: &[u8]) {
    put_varint(out, (u64::from(num) << 3) | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// The model with the data of every initializer stored in an external file (what
/// `torch.onnx.export` writes by default: `model.onnx` and `model.onnx.data`) read into the
/// model, or `None` when there is none. A location must be a relative path inside `dir`, the
/// model's folder (no `..`, no absolute path); each file is read once, through the bounded
/// reader, and the files together may hold at most [`sr_core::io::MAX_MODEL_BYTES`]; every
/// offset and length is checked against its file.
pub fn inline_external(bytes: &[u8], dir: &std::path::Path) -> Result<Option<Vec<u8>>> {
    let mut files: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let mut total = 0u64;
    let mut changed = false;
    let mut out = Vec::with_capacity(bytes.len());
    let mut r = Reader::new(bytes);
    while let Some((num, f, raw)) = r.next()? {
        let (7, Field::Bytes(g)) = (num, f) else {
            out.extend_from_slice(raw);
            continue;
        };
        let mut graph = Vec::with_capacity(g.len());
        let mut gr = Reader::new(g);
        while let Some((gn, gf, graw)) = gr.next()? {
            match (gn, gf) {
                (5, Field::Bytes(t)) => match inline_tensor(t, dir, &mut files, &mut total)? {
                    Some(t) => {
                        put_bytes(&mut graph, 5, &t);
                        changed = true;
                    }
                    None => graph.extend_from_slice(graw),
                },
                _ => graph.extend_from_slice(graw),
            }
        }
        put_bytes(&mut out, 7, &graph);
    }
    Ok(changed.then_some(out))
}

/// One initializer with its external data read in (`raw_data`), or `None` if it has none.
fn inline_tensor(
    t: &[u8],
    dir: &std::path::Path,
    files: &mut std::collections::HashMap<String, Vec<u8>>,
    total: &mut u64,
) -> Result<Option<Vec<u8>>> {
    let (mut name, mut external) = (String::new(), false);
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    let mut r = Reader::new(t);
    while let Some((num, f, _)) = r.next()? {
        match (num, f) {
            (8, f) => name = string(f)?,
            (14, f) => external = int(f)? == 1,
            (13, Field::Bytes(entry)) => {
                let (mut k, mut v) = (String::new(), String::new());
                let mut er = Reader::new(entry);
                while let Some((en, ef, _)) = er.next()? {
                    match en {
                        1 => k = string(ef)?,
                        2 => v = string(ef)?,
                        _ => {}
                    }
                }
                let number = |v: &str| {
                    v.parse::<u64>().map_err(|_| {
                        bad(&format!(
                            "tensor `{name}`: external data `{k}` = {v:?} is not a number"
                        ))
                    })
                };
                match k.as_str() {
                    "location" => location = Some(v),
                    "offset" => offset = number(&v)?,
                    "length" => length = Some(number(&v)?),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !external {
        return Ok(None);
    }
    let what = format!("tensor `{name}`");
    let loc = location.ok_or_else(|| bad(&format!("{what}: external data without a location")))?;
    let rel = std::path::Path::new(&loc);
    let inside = !loc.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !inside {
        return Err(Error::input(format!(
            "{what}: its external data location {loc:?} is not a file name inside the model's folder"
        )));
    }
    if !files.contains_key(&loc) {
        let path = dir.join(rel);
        let data = sr_core::io::read_bounded(
            &path,
            sr_core::io::MAX_MODEL_BYTES,
            "the external data of an ONNX model",
        )?;
        *total += data.len() as u64;
        if *total > sr_core::io::MAX_MODEL_BYTES {
            return Err(Error::input(format!(
                "{}: the model's external data files hold more than {} bytes together",
                path.display(),
                sr_core::io::MAX_MODEL_BYTES
            )));
        }
        files.insert(loc.clone(), data);
    }
    let data = &files[&loc];
    let end = match length {
        Some(l) => offset.checked_add(l),
        None => Some(data.len() as u64),
    };
    let slice = end
        .filter(|&e| offset <= e && e <= data.len() as u64)
        .map(|e| &data[offset as usize..e as usize])
        .ok_or_else(|| {
            Error::input(format!(
                "{what}: external data at offset {offset}, length {length:?} is not within {loc} ({} bytes)",
                data.len()
            ))
        })?;
    let mut out = Vec::with_capacity(t.len() + slice.len() + 16);
    let mut r = Reader::new(t);
    while let Some((num, _, raw)) = r.next()? {
        if !matches!(num, 9 | 13 | 14) {
            out.extend_from_slice(raw);
        }
    }
    put_bytes(&mut out, 9, slice);
    Ok(Some(out))
}

/// The same model with `name` added to the graph's outputs (ONNX Runtime only returns graph
/// outputs; srhost needs the logits even when the file ends in a Softmax). Every other byte is
/// kept as it was.
pub fn with_extra_output(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut r = Reader::new(bytes);
    while let Some((num, f, raw)) = r.next()? {
        match (num, f) {
            (7, Field::Bytes(g)) => {
                // ValueInfoProto { name = 1 } with the type left to ONNX Runtime's inference.
                let mut vi = Vec::new();
                put_bytes(&mut vi, 1, name.as_bytes());
                let mut graph = g.to_vec();
                put_bytes(&mut graph, 12, &vi);
                put_bytes(&mut out, 7, &graph);
            }
            _ => out.extend_from_slice(raw),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_widen_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.33325195);
        assert_eq!(f16_to_f32(0x0001), 5.9604645e-8); // smallest subnormal, 2^-24
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        // Field 7 (graph), length 100, but only 2 bytes follow.
        let e = parse(&[0x3a, 100, 1, 2]).unwrap_err();
        assert!(e.message.contains("past the end"), "{}", e.message);
        let e = parse(b"hello, I am a text file").unwrap_err();
        assert!(e.message.contains("not a valid ONNX file"), "{}", e.message);
    }
}
