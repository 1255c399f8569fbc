//! A small binary codec for operator state written at checkpoints: little-endian integers,
//! length-prefixed bytes. Reading never panics: state from storage may be corrupt.

use crate::error::{TaskError, TaskResult};

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_i128(out: &mut Vec<u8>, v: i128) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

/// An unsigned LEB128 varint: 1 byte below 128, at most 10.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Length-prefixed bytes with a varint length.
pub fn put_short_bytes(out: &mut Vec<u8>, v: &[u8]) {
    put_varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// Reads what the `put_*` functions wrote, in the same order.
pub struct Reader<'a> {
    rest: &'a [u8],
}

fn corrupt(what: &str) -> TaskError {
    TaskError::Checkpoint(format!("restored operator state is corrupt: {what}"))
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn take(&mut self, n: usize) -> TaskResult<&'a [u8]> {
        if self.rest.len() < n {
            return Err(corrupt("a value is cut short"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> TaskResult<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn varint(&mut self) -> TaskResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(corrupt("a varint is too long"))
    }

    pub fn short_bytes(&mut self) -> TaskResult<&'a [u8]> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| corrupt("a length is too large"))?;
        self.take(n)
    }

    pub fn i64(&mut self) -> TaskResult<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    pub fn i128(&mut self) -> TaskResult<i128> {
        Ok(i128::from_le_bytes(self.take(16)?.try_into().expect("sixteen bytes")))
    }

    pub fn f64(&mut self) -> TaskResult<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    pub fn bytes(&mut self) -> TaskResult<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("four bytes")) as usize;
        self.take(len)
    }

    pub fn str(&mut self) -> TaskResult<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| corrupt("a string is not UTF-8"))
    }

    /// Fails unless everything was read: a value longer than its layout is corrupt too.
    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn finish(self) -> TaskResult<()> {
        if self.rest.is_empty() { Ok(()) } else { Err(corrupt("trailing bytes after a value")) }
    }

    pub fn error(what: &str) -> TaskError {
        corrupt(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut out = Vec::new();
        put_u8(&mut out, 7);
        put_i64(&mut out, -3);
        put_i128(&mut out, 1 << 100);
        put_f64(&mut out, 2.5);
        put_bytes(&mut out, "héllo".as_bytes());
        let mut r = Reader::new(&out);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.i64().unwrap(), -3);
        assert_eq!(r.i128().unwrap(), 1 << 100);
        assert_eq!(r.f64().unwrap(), 2.5);
        assert_eq!(r.str().unwrap(), "héllo");
        r.finish().unwrap();
        for cut in 0..out.len() {
            let mut r = Reader::new(&out[..cut]);
            let all = (|| -> TaskResult<()> {
                r.u8()?;
                r.i64()?;
                r.i128()?;
                r.f64()?;
                r.str()?;
                Ok(())
            })();
            assert!(all.is_err(), "a value cut at {cut} must not decode");
        }
    }
}
