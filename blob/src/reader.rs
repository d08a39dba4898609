//! Reading a blob in place: [`Blob::parse`] checks the layout (every offset and length against
//! the bytes present) before anything is sliced; [`Blob::verify_content`] the hash;
//! [`Blob::verify_signature`] the signature.

use ed25519_dalek::{Signature, Verifier};

use crate::signing::{hex, key_id, message};
use crate::{
    BlobError, BlobKind, DType, Header, TensorEntry, Trailer, VerifyingKey, ALIGN, END_MAGIC, ENTRY_LEN, HEADER_LEN,
    MAGIC, MAX_RANK, TRAILER_LEN, VERSION,
};

/// A parsed blob borrowing its bytes (usually a memory mapping).
#[derive(Debug, Clone, Copy)]
pub struct Blob<'a> {
    bytes: &'a [u8],
    header: &'a Header,
    entries: &'a [TensorEntry],
    trailer: &'a Trailer,
    kind: BlobKind,
    meta: &'a str,
}

/// One tensor of a blob, its bytes borrowed from the blob.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorView<'a> {
    /// Tensor name from its table entry (1 to 48 bytes of UTF-8).
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; 1 to [`MAX_RANK`] of them, each at least 1.
    pub shape: Vec<usize>,
    /// The tensor's raw little-endian bytes in the blob (64-byte aligned in the file).
    pub bytes: &'a [u8],
}

fn layout(msg: impl Into<String>) -> BlobError {
    BlobError::Layout(msg.into())
}

/// `bytes[offset..offset + len]`, or a layout error naming `what`.
fn section(bytes: &[u8], offset: u64, len: u64, what: &str) -> Result<std::ops::Range<usize>, BlobError> {
    let end = offset.checked_add(len).ok_or_else(|| layout(format!("{what}: offset + length overflows")))?;
    if end > bytes.len() as u64 {
        return Err(layout(format!("{what} ends at byte {end}, past the end of the file ({} bytes)", bytes.len())));
    }
    Ok(offset as usize..end as usize)
}

impl<'a> Blob<'a> {
    /// Checks the structure (not the hash). `bytes` must start on an 8-byte boundary, as a memory
    /// mapping or a `Vec<u8>` does.
    pub fn parse(bytes: &'a [u8]) -> Result<Blob<'a>, BlobError> {
        let min = (HEADER_LEN + TRAILER_LEN) as u64;
        if (bytes.len() as u64) < min {
            return Err(BlobError::Truncated { len: bytes.len() as u64, min });
        }
        let header: &Header = bytemuck::try_from_bytes(&bytes[..HEADER_LEN])
            .map_err(|_| layout("the blob's bytes do not start on an 8-byte boundary"))?;
        if header.magic != MAGIC {
            return Err(BlobError::BadMagic);
        }
        let version = u32::from_le(header.version);
        if version != VERSION {
            return Err(BlobError::UnsupportedVersion(version));
        }
        let kind = header.kind()?;
        if header.flags != 0 {
            return Err(BlobError::ReservedNotZero("flags"));
        }
        if header.reserved != [0; 8] {
            return Err(BlobError::ReservedNotZero("reserved"));
        }
        let count = u32::from_le(header.tensor_count) as u64;
        let table_offset = u64::from_le(header.table_offset);
        let meta_offset = u64::from_le(header.meta_offset);
        let meta_len = u64::from_le(header.meta_len);
        let data_offset = u64::from_le(header.data_offset);
        let data_len = u64::from_le(header.data_len);
        let trailer_offset = u64::from_le(header.trailer_offset);
        if table_offset != HEADER_LEN as u64 {
            return Err(layout(format!("tensor table at byte {table_offset}, not right after the header")));
        }
        let table = section(bytes, table_offset, count * ENTRY_LEN as u64, "tensor table")?;
        if meta_offset != table.end as u64 {
            return Err(layout(format!("metadata at byte {meta_offset}, not right after the table ({})", table.end)));
        }
        let meta = section(bytes, meta_offset, meta_len, "metadata")?;
        if !data_offset.is_multiple_of(ALIGN as u64)
            || data_offset < meta.end as u64
            || data_offset - (meta.end as u64) >= ALIGN as u64
        {
            return Err(layout(format!(
                "data at byte {data_offset}: must be the first multiple of {ALIGN} after the metadata"
            )));
        }
        let data = section(bytes, data_offset, data_len, "tensor data")?;
        if trailer_offset != data.end as u64 || trailer_offset + TRAILER_LEN as u64 != bytes.len() as u64 {
            return Err(layout(format!(
                "trailer at byte {trailer_offset}: must follow the data ({}) and end the file ({} bytes)",
                data.end,
                bytes.len()
            )));
        }
        // Padding must be zero, so that every byte of a valid blob is determined.
        if bytes[meta.end..data.start].iter().any(|&b| b != 0) {
            return Err(BlobError::ReservedNotZero("padding before the data"));
        }
        let entries: &[TensorEntry] = bytemuck::try_cast_slice(&bytes[table.clone()])
            .map_err(|_| layout("the tensor table is not 8-byte aligned"))?;
        let trailer: &Trailer = bytemuck::try_from_bytes(&bytes[trailer_offset as usize..])
            .map_err(|_| layout("the trailer is not 8-byte aligned"))?;
        check_trailer(trailer)?;
        let meta = std::str::from_utf8(&bytes[meta]).map_err(|_| BlobError::MetaNotUtf8)?;
        let blob = Blob { bytes, header, entries, trailer, kind, meta };
        blob.check_tensors(data_len)?;
        Ok(blob)
    }

    fn check_tensors(&self, data_len: u64) -> Result<(), BlobError> {
        let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(self.entries.len());
        let mut names: Vec<&str> = Vec::with_capacity(self.entries.len());
        for (index, e) in self.entries.iter().enumerate() {
            let bad = |reason: String| BlobError::BadTensor { index, reason };
            let name = entry_name(e).map_err(|r| bad(r.into()))?;
            let dtype = DType::from_u32(u32::from_le(e.dtype))
                .ok_or_else(|| bad(format!("unknown dtype {}", u32::from_le(e.dtype))))?;
            let rank = u32::from_le(e.rank) as usize;
            if rank == 0 || rank > MAX_RANK {
                return Err(bad(format!("rank {rank}, not 1 to {MAX_RANK}")));
            }
            let dims: Vec<u64> = e.shape.iter().map(|&d| u32::from_le(d) as u64).collect();
            if dims[..rank].contains(&0) || dims[rank..].iter().any(|&d| d != 0) {
                return Err(bad(format!("shape {dims:?} for rank {rank}")));
            }
            let elements = dims[..rank].iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let want = elements.and_then(|n| n.checked_mul(dtype.size() as u64));
            let (offset, nbytes) = (u64::from_le(e.offset), u64::from_le(e.nbytes));
            if want != Some(nbytes) {
                return Err(bad(format!("{nbytes} bytes for shape {:?} of {dtype:?}", &dims[..rank])));
            }
            if !offset.is_multiple_of(ALIGN as u64) {
                return Err(bad(format!("offset {offset} is not a multiple of {ALIGN}")));
            }
            if offset.checked_add(nbytes).is_none_or(|end| end > data_len) {
                return Err(bad(format!("bytes {offset}..+{nbytes} outside the data section ({data_len} bytes)")));
            }
            if e.reserved != [0; 8] {
                return Err(bad("reserved bytes are not zero".into()));
            }
            if names.contains(&name) {
                return Err(BlobError::DuplicateTensor(name.to_string()));
            }
            names.push(name);
            spans.push((offset, offset + nbytes, index));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(BlobError::BadTensor { index: w[1].2, reason: "overlaps another tensor".into() });
            }
        }
        Ok(())
    }

    /// Recomputes the BLAKE3 hash of everything before the trailer.
    pub fn verify_content(&self) -> Result<(), BlobError> {
        let end = u64::from_le(self.header.trailer_offset) as usize;
        if *blake3::hash(&self.bytes[..end]).as_bytes() != self.trailer.content_hash {
            return Err(BlobError::HashMismatch);
        }
        Ok(())
    }

    /// With a device key: the blob must be signed by that key, and the signature must verify.
    /// Without one: any blob passes (its hash still protects against corruption).
    pub fn verify_signature(&self, key: Option<&VerifyingKey>) -> Result<(), BlobError> {
        let Some(key) = key else { return Ok(()) };
        if u32::from_le(self.trailer.signed) != 1 {
            return Err(BlobError::Unsigned);
        }
        let want = key_id(key);
        if self.trailer.key_id != want {
            return Err(BlobError::WrongKey { found: hex(&self.trailer.key_id), expected: hex(&want) });
        }
        let sig = Signature::from_bytes(&self.trailer.signature);
        key.verify(&message(&self.trailer.content_hash), &sig).map_err(|_| BlobError::BadSignature)
    }

    /// Parse, hash and signature: what a device does before trusting a file.
    pub fn open(bytes: &'a [u8], key: Option<&VerifyingKey>) -> Result<Blob<'a>, BlobError> {
        let b = Blob::parse(bytes)?;
        b.verify_content()?;
        b.verify_signature(key)?;
        Ok(b)
    }

    /// Whether this is a base model or a class module.
    pub fn kind(&self) -> BlobKind {
        self.kind
    }
    /// The raw header, read in place (fields little-endian).
    pub fn header(&self) -> &'a Header {
        self.header
    }
    /// The metadata JSON, unparsed; its meaning belongs to the runtime.
    pub fn meta(&self) -> &'a str {
        self.meta
    }
    /// For a base: its own key. For a module: the key of the base it needs.
    pub fn base_key(&self) -> [u8; 32] {
        self.header.base_key
    }
    /// Digest of the input spec; modules compose only when theirs are equal.
    pub fn input_key(&self) -> [u8; 16] {
        self.header.input_key
    }
    /// The trailer's BLAKE3 hash of every byte before the trailer (as stored; see
    /// [`Blob::verify_content`]).
    pub fn content_hash(&self) -> [u8; 32] {
        self.trailer.content_hash
    }
    /// The signer's key id, when signed.
    pub fn signer(&self) -> Option<[u8; 8]> {
        (u32::from_le(self.trailer.signed) == 1).then_some(self.trailer.key_id)
    }
    /// Length of the whole file in bytes, trailer included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Always false: a parsed blob holds at least a header and a trailer (256 bytes).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every tensor, in table order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'a>> + '_ {
        let data = u64::from_le(self.header.data_offset) as usize;
        let bytes = self.bytes;
        self.entries.iter().map(move |e| {
            // Checked by `parse`.
            let rank = u32::from_le(e.rank) as usize;
            let start = data + u64::from_le(e.offset) as usize;
            TensorView {
                name: entry_name(e).expect("checked by parse"),
                dtype: DType::from_u32(u32::from_le(e.dtype)).expect("checked by parse"),
                shape: e.shape[..rank].iter().map(|&d| u32::from_le(d) as usize).collect(),
                bytes: &bytes[start..start + u64::from_le(e.nbytes) as usize],
            }
        })
    }

    /// The tensor called `name`, or [`BlobError::MissingTensor`].
    pub fn tensor(&self, name: &str) -> Result<TensorView<'a>, BlobError> {
        self.tensors().find(|t| t.name == name).ok_or_else(|| BlobError::MissingTensor(name.to_string()))
    }
}

/// The name of an entry: UTF-8 up to the first NUL, zeros after it.
fn entry_name(e: &TensorEntry) -> Result<&str, &'static str> {
    let len = e.name.iter().position(|&b| b == 0).unwrap_or(e.name.len());
    if len == 0 {
        return Err("empty name");
    }
    if e.name[len..].iter().any(|&b| b != 0) {
        return Err("bytes after the name's end are not zero");
    }
    std::str::from_utf8(&e.name[..len]).map_err(|_| "name is not UTF-8")
}

fn check_trailer(t: &Trailer) -> Result<(), BlobError> {
    if t.end_magic != END_MAGIC {
        return Err(BlobError::BadTrailer("bad end magic (truncated or appended to?)"));
    }
    if t.reserved != [0; 12] {
        return Err(BlobError::BadTrailer("reserved bytes are not zero"));
    }
    match u32::from_le(t.signed) {
        0 if t.signature == [0; 64] && t.key_id == [0; 8] => Ok(()),
        0 => Err(BlobError::BadTrailer("unsigned, but signature or key id bytes are set")),
        1 => Ok(()),
        _ => Err(BlobError::BadTrailer("signed flag is neither 0 nor 1")),
    }
}

impl TensorView<'_> {
    /// The values of an f32 tensor (little-endian on disk), copied.
    pub fn to_f32(&self) -> Result<Vec<f32>, BlobError> {
        if self.dtype != DType::F32 {
            return Err(BlobError::TensorMismatch {
                name: self.name.into(),
                reason: format!("{:?}, not F32", self.dtype),
            });
        }
        Ok(self.bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
    }

    /// Checks dtype and shape against what the reader expects.
    pub fn expect(&self, dtype: DType, shape: &[usize]) -> Result<&Self, BlobError> {
        if self.dtype != dtype || self.shape != shape {
            return Err(BlobError::TensorMismatch {
                name: self.name.into(),
                reason: format!("{:?} {:?}, expected {dtype:?} {shape:?}", self.dtype, self.shape),
            });
        }
        Ok(self)
    }
}
