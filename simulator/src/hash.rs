//! The hasher for the driver's look-up tables.

use std::hash::{BuildHasherDefault, Hasher};

/// A fast hasher for keys that are already uniformly random (message ids, item and project
/// ids): folds 8-byte words with a multiply. Deterministic (no per-process seed), and used only
/// for look-ups, never for iteration order.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Build-hasher for [`IdHasher`].
pub(crate) type IdBuild = BuildHasherDefault<IdHasher>;
