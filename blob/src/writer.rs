//! Building a blob: tensors in the order given, each on a 64-byte boundary; deterministic bytes
//! for the same inputs (and the same key).

use ed25519_dalek::Signer;

use crate::signing::{key_id, message};
use crate::{
    BlobError, BlobKind, DType, Header, SigningKey, TensorEntry, Trailer, ALIGN, END_MAGIC, ENTRY_LEN, HEADER_LEN,
    MAGIC, MAX_NAME_LEN, MAX_RANK, TRAILER_LEN, VERSION,
};

struct Pending {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Builds a blob in memory: give it the header's keys and the metadata, add tensors, then
/// [`BlobWriter::finish`].
pub struct BlobWriter {
    kind: BlobKind,
    base_key: [u8; 32],
    input_key: [u8; 16],
    meta: String,
    tensors: Vec<Pending>,
}

fn align_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

impl BlobWriter {
    /// A writer for a blob of `kind` with the given header keys (see [`Header::base_key`] and
    /// [`Header::input_key`]) and metadata JSON; no tensors yet.
    pub fn new(kind: BlobKind, base_key: [u8; 32], input_key: [u8; 16], meta: impl Into<String>) -> BlobWriter {
        BlobWriter { kind, base_key, input_key, meta: meta.into(), tensors: Vec::new() }
    }

    /// Adds a tensor of little-endian `bytes`.
    pub fn tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        bytes: Vec<u8>,
    ) -> Result<&mut Self, BlobError> {
        let index = self.tensors.len();
        let bad = |reason: String| BlobError::BadTensor { index, reason };
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
            return Err(bad(format!("name `{name}` must be 1 to {MAX_NAME_LEN} bytes without NUL")));
        }
        if shape.is_empty() || shape.len() > MAX_RANK || shape.iter().any(|&d| d == 0 || d > u32::MAX as usize) {
            return Err(bad(format!("shape {shape:?}: rank 1 to {MAX_RANK}, dimensions 1 to 2^32-1")));
        }
        let want = shape.iter().product::<usize>() * dtype.size();
        if bytes.len() != want {
            return Err(bad(format!("{} bytes for shape {shape:?} of {dtype:?} ({want} expected)", bytes.len())));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(BlobError::DuplicateTensor(name.to_string()));
        }
        self.tensors.push(Pending { name: name.to_string(), dtype, shape: shape.to_vec(), bytes });
        Ok(self)
    }

    /// Adds an f32 tensor, storing `data` little-endian.
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<&mut Self, BlobError> {
        self.tensor(name, DType::F32, shape, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// The finished file; signed when `key` is given.
    pub fn finish(self, key: Option<&SigningKey>) -> Vec<u8> {
        let table_offset = HEADER_LEN;
        let meta_offset = table_offset + self.tensors.len() * ENTRY_LEN;
        let data_offset = align_up(meta_offset + self.meta.len());
        let mut entries = Vec::with_capacity(self.tensors.len());
        let mut at = 0usize;
        for t in &self.tensors {
            let mut e = TensorEntry {
                name: [0; MAX_NAME_LEN],
                dtype: (t.dtype as u32).to_le(),
                rank: (t.shape.len() as u32).to_le(),
                shape: [0; MAX_RANK],
                offset: (at as u64).to_le(),
                nbytes: (t.bytes.len() as u64).to_le(),
                reserved: [0; 8],
            };
            e.name[..t.name.len()].copy_from_slice(t.name.as_bytes());
            for (d, &s) in e.shape.iter_mut().zip(&t.shape) {
                *d = (s as u32).to_le();
            }
            entries.push(e);
            at = align_up(at + t.bytes.len());
        }
        // The last tensor's padding is not stored: data ends where its bytes end.
        let data_len = self
            .tensors
            .last()
            .map_or(0, |t| u64::from_le(entries.last().expect("one per tensor").offset) as usize + t.bytes.len());
        let trailer_offset = data_offset + data_len;
        let header = Header {
            magic: MAGIC,
            version: VERSION.to_le(),
            kind: (self.kind as u32).to_le(),
            tensor_count: (self.tensors.len() as u32).to_le(),
            flags: 0,
            table_offset: (table_offset as u64).to_le(),
            meta_offset: (meta_offset as u64).to_le(),
            meta_len: (self.meta.len() as u64).to_le(),
            data_offset: (data_offset as u64).to_le(),
            data_len: (data_len as u64).to_le(),
            trailer_offset: (trailer_offset as u64).to_le(),
            base_key: self.base_key,
            input_key: self.input_key,
            reserved: [0; 8],
        };
        let mut out = Vec::with_capacity(trailer_offset + TRAILER_LEN);
        out.extend_from_slice(bytemuck::bytes_of(&header));
        out.extend_from_slice(bytemuck::cast_slice(&entries));
        out.extend_from_slice(self.meta.as_bytes());
        out.resize(data_offset, 0);
        for (t, e) in self.tensors.iter().zip(&entries) {
            out.resize(data_offset + u64::from_le(e.offset) as usize, 0);
            out.extend_from_slice(&t.bytes);
        }
        debug_assert_eq!(out.len(), trailer_offset);
        let content_hash = *blake3::hash(&out).as_bytes();
        let mut trailer = Trailer {
            content_hash,
            signature: [0; 64],
            key_id: [0; 8],
            signed: 0,
            reserved: [0; 12],
            end_magic: END_MAGIC,
        };
        if let Some(k) = key {
            trailer.signature = k.sign(&message(&content_hash)).to_bytes();
            trailer.key_id = key_id(&k.verifying_key());
            trailer.signed = 1u32.to_le();
        }
        out.extend_from_slice(bytemuck::bytes_of(&trailer));
        out
    }
}
