//! Compact JSON with every object's keys in byte order, written straight from a value's own
//! `Serialize` impl.
//!
//! This is exactly what `serde_json::to_string(&serde_json::to_value(v)?)` writes in this
//! workspace (serde_json is built without `preserve_order`, so a `Value` object is a `BTreeMap`
//! and comes out sorted, a later duplicate key replacing an earlier one), which is how
//! [`crate::Envelope::to_json`] wrote payloads until issue 14 session 7. The backend has seen
//! these bytes since the first release; this keeps them while dropping the `Value` tree (an
//! allocation per string, number and object) that cost most of a relayed frame's CPU.
//!
//! How: every value is written into one buffer in the order serde visits it. An object records
//! each entry's key and the byte range its value took; at the object's end the entries are sorted
//! by key and the object is rewritten in that order (one copy of its bytes). Scalars are written
//! by serde_json's own serializer, so strings are escaped and numbers formatted as it does.
//!
//! Anything this writer does not reproduce exactly (a map key that is not a string, a 128-bit
//! integer out of `i64`/`u64` range) is an error: the caller then takes the `Value` path, which
//! stays the reference (`Envelope`'s `Serialize` impl, and the tests comparing the two).

use serde::ser::{self, Error as _, Serialize, Serializer as _};
use std::fmt::Display;

type Error = serde_json::Error;

/// Appends `value` to `out` as compact JSON with sorted object keys. On error `out` may hold a
/// partial write: the caller truncates it.
pub(crate) fn write<T: ?Sized + Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    let mut w = Writer {
        out: std::mem::take(out),
        // room for a drone's telemetry (13 fields, 5 more nested) without growing
        entries: Vec::with_capacity(24),
        scratch: Vec::with_capacity(512),
    };
    let result = value.serialize(&mut w);
    *out = w.out;
    result
}

/// A key: a struct's field name, or a map key written (unescaped) into the buffer.
#[derive(Clone, Copy)]
enum Key {
    Field(&'static str),
    Written { start: usize, end: usize },
}

/// One object entry: its key and where its value's bytes are in the buffer.
#[derive(Clone, Copy)]
struct Entry {
    key: Key,
    /// The key's first 8 bytes, for sorting (see [`prefix`]).
    prefix: u64,
    start: usize,
    end: usize,
}

/// The first 8 bytes of `key` (zero-padded) as a big-endian number: where two keys' prefixes
/// differ, they are in the keys' byte order; where they are equal, the keys are compared whole.
fn prefix(key: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    for (to, from) in p.iter_mut().zip(key) {
        *to = *from;
    }
    u64::from_be_bytes(p)
}

struct Writer {
    out: Vec<u8>,
    /// The entries of every object being written, innermost last.
    entries: Vec<Entry>,
    /// An object's bytes while it is rewritten in key order.
    scratch: Vec<u8>,
}

/// The bytes of `key`, with `buf` holding the object's bytes from `base` on.
fn key_bytes<'k>(key: &Key, buf: &'k [u8], base: usize) -> &'k [u8] {
    match *key {
        Key::Field(name) => name.as_bytes(),
        Key::Written { start, end } => buf.get(start - base..end - base).unwrap_or_default(),
    }
}

/// Appends `key` as a JSON string: as is between quotes when nothing in it needs escaping (a
/// field name always), else escaped by serde_json.
fn write_key(out: &mut Vec<u8>, key: &[u8]) -> Result<(), Error> {
    if key.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(key);
        out.push(b'"');
        return Ok(());
    }
    let key = std::str::from_utf8(key).map_err(Error::custom)?;
    serde_json::Serializer::new(out).serialize_str(key)
}

impl Writer {
    fn json(&mut self) -> serde_json::Serializer<&mut Vec<u8>> {
        serde_json::Serializer::new(&mut self.out)
    }

    fn object(&mut self) -> Object<'_> {
        let mark = self.entries.len();
        let begin = self.out.len();
        Object {
            w: self,
            mark,
            begin,
            key: None,
            close_variant: false,
        }
    }

    /// `{"variant":` before a variant's content (serde_json's `Value` shape for enums).
    fn variant_open(&mut self, variant: &'static str) -> Result<(), Error> {
        self.out.push(b'{');
        self.json().serialize_str(variant)?;
        self.out.push(b':');
        Ok(())
    }

    /// Rewrites the object started at `begin` (its entries from `mark` on) in key order.
    fn finish_object(&mut self, mark: usize, begin: usize) -> Result<(), Error> {
        let Writer {
            out,
            entries,
            scratch,
        } = self;
        let mine = entries.get_mut(mark..).unwrap_or_default();
        // stable: of entries with one key, the last written stays last
        // byte order, as `String`'s `Ord` in the `Value`'s map
        mine.sort_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| key_bytes(&a.key, out, 0).cmp(key_bytes(&b.key, out, 0)))
        });
        scratch.clear();
        scratch.extend_from_slice(out.get(begin..).unwrap_or_default());
        out.truncate(begin);
        out.push(b'{');
        let mut first = true;
        for (i, e) in mine.iter().enumerate() {
            let key = key_bytes(&e.key, scratch, begin);
            // a map keeps the last value written for a key
            if mine.get(i + 1).is_some_and(|next| {
                next.prefix == e.prefix && key_bytes(&next.key, scratch, begin) == key
            }) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_key(out, key)?;
            out.push(b':');
            out.extend_from_slice(
                scratch
                    .get(e.start - begin..e.end - begin)
                    .unwrap_or_default(),
            );
        }
        out.push(b'}');
        entries.truncate(mark);
        Ok(())
    }
}

impl<'a> ser::Serializer for &'a mut Writer {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.json().serialize_bool(v)
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.json().serialize_i8(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.json().serialize_i16(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.json().serialize_i32(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.json().serialize_i64(v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        // a `Value` number holds a u64 or an i64; anything else is its error
        if let Ok(v) = u64::try_from(v) {
            self.json().serialize_u64(v)
        } else if let Ok(v) = i64::try_from(v) {
            self.json().serialize_i64(v)
        } else {
            Err(Error::custom("number out of range"))
        }
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.json().serialize_u8(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.json().serialize_u16(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.json().serialize_u32(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.json().serialize_u64(v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        match u64::try_from(v) {
            Ok(v) => self.json().serialize_u64(v),
            Err(_) => Err(Error::custom("number out of range")),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        // a `Value` keeps an f32 as the f64 it converts to, and writes that
        self.json().serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        // non-finite: `null`, as a `Value` has it
        self.json().serialize_f64(v)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.json().serialize_char(v)
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.json().serialize_str(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        // an array of numbers, in both
        self.json().serialize_bytes(v)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.json().serialize_unit()
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.json().serialize_unit()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.json().serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.json().serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.variant_open(variant)?;
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>, Error> {
        self.out.push(b'[');
        Ok(Seq {
            w: self,
            first: true,
            close_variant: false,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq<'a>, Error> {
        self.variant_open(variant)?;
        let mut seq = self.serialize_seq(Some(len))?;
        seq.close_variant = true;
        Ok(seq)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Object<'a>, Error> {
        Ok(self.object())
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Object<'a>, Error> {
        Ok(self.object())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Object<'a>, Error> {
        self.variant_open(variant)?;
        let mut object = self.object();
        object.close_variant = true;
        Ok(object)
    }
    fn collect_str<T: ?Sized + Display>(self, value: &T) -> Result<(), Error> {
        self.json().collect_str(value)
    }
}

pub(crate) struct Seq<'a> {
    w: &'a mut Writer,
    first: bool,
    /// Inside `{"variant":` (a tuple variant): close that too.
    close_variant: bool,
}

impl Seq<'_> {
    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.w.out.push(b',');
        }
        self.first = false;
        value.serialize(&mut *self.w)
    }

    fn close(self) -> Result<(), Error> {
        self.w.out.push(b']');
        if self.close_variant {
            self.w.out.push(b'}');
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

pub(crate) struct Object<'a> {
    w: &'a mut Writer,
    /// Where this object's entries start in `Writer::entries`.
    mark: usize,
    /// Where this object's bytes start in `Writer::out`.
    begin: usize,
    /// A map key written, waiting for its value.
    key: Option<Key>,
    /// Inside `{"variant":` (a struct variant): close that too.
    close_variant: bool,
}

impl Object<'_> {
    fn value<T: ?Sized + Serialize>(&mut self, key: Key, value: &T) -> Result<(), Error> {
        let prefix = prefix(key_bytes(&key, &self.w.out, 0));
        let start = self.w.out.len();
        value.serialize(&mut *self.w)?;
        let end = self.w.out.len();
        self.w.entries.push(Entry {
            key,
            prefix,
            start,
            end,
        });
        Ok(())
    }

    fn close(self) -> Result<(), Error> {
        self.w.finish_object(self.mark, self.begin)?;
        if self.close_variant {
            self.w.out.push(b'}');
        }
        Ok(())
    }
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        let start = self.w.out.len();
        key.serialize(KeyWriter(&mut self.w.out))?;
        self.key = Some(Key::Written {
            start,
            end: self.w.out.len(),
        });
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error::custom("map value without a key"))?;
        self.value(key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.value(Key::Field(key), value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.value(Key::Field(key), value)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// Writes a map key as its plain (unescaped) text. Only string-like keys: the others (numbers,
/// booleans) are refused, and the caller takes the `Value` path for them.
struct KeyWriter<'a>(&'a mut Vec<u8>);

fn not_a_string_key() -> Error {
    Error::custom("map key is not a string")
}

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn collect_str<T: ?Sized + Display>(self, value: &T) -> Result<(), Error> {
        self.serialize_str(&value.to_string())
    }

    fn serialize_bool(self, _v: bool) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_i8(self, _v: i8) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_i16(self, _v: i16) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_i32(self, _v: i32) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_i64(self, _v: i64) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_u8(self, _v: u8) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_u16(self, _v: u16) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_u32(self, _v: u32) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_u64(self, _v: u64) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_f32(self, _v: f32) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_f64(self, _v: f64) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_none(self) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _value: &T) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(not_a_string_key())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_a_string_key())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_a_string_key())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_a_string_key())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_a_string_key())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(not_a_string_key())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(not_a_string_key())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_a_string_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::{BTreeMap, HashMap};

    /// The reference: through a `Value`.
    fn via_value<T: Serialize>(v: &T) -> String {
        serde_json::to_string(&serde_json::to_value(v).unwrap()).unwrap()
    }

    fn sorted<T: Serialize>(v: &T) -> String {
        let mut out = b"prefix ".to_vec();
        write(&mut out, v).unwrap();
        String::from_utf8(out).unwrap().split_off("prefix ".len())
    }

    #[derive(Serialize)]
    enum Shapes {
        Unit,
        Newtype(Inner),
        Tuple(u8, Inner),
        Struct {
            zeta: i64,
            alpha: Option<f32>,
            mid: Vec<Inner>,
        },
    }

    #[derive(Serialize)]
    struct Inner {
        z: f64,
        a: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        nothing: Option<u8>,
        bytes: &'static [u8],
        #[serde(serialize_with = "serialize_bytes")]
        raw: &'static [u8],
        ch: char,
        unit: (),
    }

    fn serialize_bytes<S: serde::Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    #[derive(Serialize)]
    struct Outer {
        shapes: Vec<Shapes>,
        #[serde(flatten)]
        tagged: Tagged,
        map: BTreeMap<String, u8>,
        hash: HashMap<&'static str, Vec<u16>>,
        nan: f64,
        big: i128,
        empty: BTreeMap<String, u8>,
        nested: ((), [u8; 0], Vec<Vec<u8>>),
        escaped: &'static str,
    }

    #[derive(Serialize)]
    #[serde(tag = "kind", content = "body", rename_all = "snake_case")]
    enum Tagged {
        Yes { b: u8, a: u8 },
    }

    fn inner() -> Inner {
        Inner {
            z: -0.1,
            a: "é\"\n\u{1}",
            skipped: None,
            nothing: None,
            bytes: &[1, 2],
            raw: &[255, 0],
            ch: '\u{7f}',
            unit: (),
        }
    }

    #[test]
    fn writes_what_a_value_writes() {
        let outer = Outer {
            shapes: vec![
                Shapes::Unit,
                Shapes::Newtype(inner()),
                Shapes::Tuple(7, inner()),
                Shapes::Struct {
                    zeta: -5,
                    alpha: Some(0.1),
                    mid: vec![inner(), inner()],
                },
            ],
            tagged: Tagged::Yes { b: 2, a: 1 },
            map: [
                ("b".to_owned(), 1),
                ("a".to_owned(), 2),
                ("aa".to_owned(), 3),
                ("q\"".to_owned(), 4),
            ]
            .into(),
            hash: [
                ("y", vec![1]),
                ("x", vec![]),
                ("Z", vec![3, 4]),
                // one 8-byte prefix, a key that is another's prefix, NUL, empty, non-ASCII
                ("battery_voltage", vec![5]),
                ("battery_level", vec![6]),
                ("battery_", vec![7]),
                ("batt", vec![8]),
                ("batt\u{0}", vec![9]),
                ("", vec![10]),
                ("é", vec![11]),
            ]
            .into(),
            nan: f64::NAN,
            big: -(1 << 62),
            empty: BTreeMap::new(),
            nested: ((), [], vec![vec![], vec![1]]),
            escaped: "tab\there",
        };
        assert_eq!(sorted(&outer), via_value(&outer));
        assert_eq!(sorted(&1.5f32), via_value(&1.5f32));
        assert_eq!(sorted(&0.1f32), via_value(&0.1f32));
    }

    #[test]
    fn a_later_duplicate_key_wins_as_in_a_map() {
        struct Dup;
        impl Serialize for Dup {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("k", &1)?;
                m.serialize_entry("a", &0)?;
                m.serialize_entry("k", &2)?;
                m.end()
            }
        }
        assert_eq!(sorted(&Dup), r#"{"a":0,"k":2}"#);
        assert_eq!(sorted(&Dup), via_value(&Dup));
    }

    #[test]
    fn what_a_value_cannot_hold_is_an_error() {
        let mut out = Vec::new();
        assert!(write(&mut out, &u128::MAX).is_err());
        assert!(write(&mut out, &BTreeMap::from([(1u8, 2u8)])).is_err());
    }
}
