//! Sealing an event's personal-data fields into one sealed field (or column) and opening them
//! again: the stored forms, read without a general JSON parse where a store wrote them.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::cipher::{DataKey, NONCE, TAG, encrypt, open_in_place};
use super::{PiiError, PiiSpec, SEALED};

/// Associated data of sealed fields: they decrypt only as Factum's sealed fields of that form
/// under that key id.
fn sealed_aad(form: Form, key_id: Uuid) -> [u8; 30] {
    let mut aad = [0; 30];
    aad[..14].copy_from_slice(match form {
        Form::Object => b"factum pii v1 ",
        Form::Array => b"factum pii v2 ",
    });
    aad[14..].copy_from_slice(key_id.as_bytes());
    aad
}

/// Seals the personal-data fields of `payload` under `key`: takes them out into one sealed
/// field (nothing when the payload has none of them).
///
/// # Errors
/// [`PiiError::Provider`] when no nonce can be drawn.
pub(crate) fn seal(
    payload: &mut Map<String, Value>,
    spec: &PiiSpec,
    key_id: Uuid,
    key: &DataKey,
    placement: Placement,
) -> Result<Option<Vec<u8>>, PiiError> {
    let mut secret = Map::new();
    let mut erased = Map::new();
    for field in spec.fields {
        if let Some(value) = payload.remove(field.name) {
            secret.insert(field.name.to_owned(), value);
            erased.insert(field.name.to_owned(), (field.erased)());
        }
    }
    if secret.is_empty() {
        return Ok(None);
    }
    let plain = serde_json::to_vec(&secret).map_err(|e| PiiError::Malformed {
        field: SEALED.to_owned(),
        reason: e.to_string(),
    })?;
    let mut data = Vec::with_capacity(KEY_ID + NONCE + plain.len() + TAG);
    data.extend_from_slice(key_id.as_bytes());
    data.extend(encrypt(
        key.cipher(),
        &plain,
        &sealed_aad(Form::Array, key_id),
    )?);
    Ok(match placement {
        Placement::Payload => {
            payload.insert(
                SEALED.to_owned(),
                Value::Array(vec![
                    Value::String(BASE64.encode(data)),
                    Value::Object(erased),
                ]),
            );
            None
        }
        #[cfg(feature = "postgres")]
        Placement::Column => {
            payload.insert(SEALED.to_owned(), Value::Object(erased));
            Some(data)
        }
    })
}

/// Where a store keeps the sealed data of an event's personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// In the payload, as base64: `"$pii": [<data>, <erased values>]` (SQLite and the memory
    /// store, which send no rows over a network).
    Payload,
    #[cfg(feature = "postgres")]
    /// In a column of its own, as bytes, the payload holding `"$pii": <erased values>`
    /// (PostgreSQL: base64 inside the JSON made a sealed event's row nearly twice as long as the
    /// plain event's, and a long stream's read cost 1.7 times as much in transfer alone; as
    /// bytes, 1.1 times). The data's bytes are the same in both: moving them between the two
    /// places re-encodes them, and they decrypt in either.
    Column,
}

/// The text by which a stored payload names the data key its fields were sealed under, in the
/// form stores write: the head of its sealed data, whose first 21 base64 characters hold the
/// key id's bits alone (the key id as text names it in the first form). Forgetting a subject
/// finds the copies of its data around the log by it.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[must_use]
pub(crate) fn key_mark(key_id: Uuid) -> String {
    let mut head = BASE64.encode(key_id.as_bytes());
    head.truncate(KEY_ID * 8 / 6);
    format!("[\"{head}")
}

/// Whether a stored payload may hold sealed fields (a quick look before parsing it).
#[must_use]
pub(crate) fn may_be_sealed(payload: &str) -> bool {
    // Stores write the sealed field first: most sealed payloads answer at their first bytes.
    payload.starts_with(SEALED_FIRST) || payload.contains("\"$pii\"")
}

/// How a payload a store sealed begins.
const SEALED_FIRST: &str = "{\"$pii\":";

/// A stored payload's top-level fields, borrowed from its text (names and raw values, in
/// order), and its sealed field read: opening it parses nothing else and copies the rest as it
/// is.
pub(crate) struct SealedPayload<'a> {
    plain: Plain<'a>,
    sealed: Option<Sealed<'a>>,
}

/// The plain top-level fields of a stored payload.
enum Plain<'a> {
    /// The text of the members after the sealed field, as stored: `"a":1,"b":2` (a store writes
    /// the sealed field first, its name sorting first).
    Members(&'a str),
    /// Each field's name and raw value, in order (a payload written otherwise).
    Fields(Vec<(&'a str, &'a RawValue)>),
}

/// The sealed field's value.
struct Sealed<'a> {
    /// The data key's id.
    key: Uuid,
    /// The sealed data: nonce, ciphertext and tag, after the key id in [`Form::Array`].
    data: Data<'a>,
    /// The fields' values once the key is deleted: a JSON object's text, checked only when
    /// it is used (a read of an event whose key exists does not look inside it).
    erased: &'a str,
    form: Form,
}

/// Where sealed data was read from.
#[derive(Clone, Copy)]
enum Data<'a> {
    /// The payload's sealed field, base64.
    Base64(&'a str),
    #[cfg(feature = "postgres")]
    /// The `sealed` column ([`Placement::Column`]).
    Bytes(&'a [u8]),
}

/// The forms of a sealed field a store has written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `{"data": base64(nonce ‖ ciphertext ‖ tag), "erased": {…}, "key": "<uuid>"}`: what
    /// stores wrote first, still read.
    Object,
    /// `[base64(key id ‖ nonce ‖ ciphertext ‖ tag), {…erased}]`: what stores write, 40-odd
    /// bytes shorter (a long stream's reads are that much lighter); or, in
    /// [`Placement::Column`], the same bytes in a column and `{…erased}` in the payload.
    Array,
}

/// The first form's members.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectForm<'a> {
    key: Uuid,
    #[serde(borrow)]
    data: &'a str,
    #[serde(borrow)]
    erased: &'a RawValue,
}

/// The bytes of a key id, and the base64 characters that hold them (with the nonce's first
/// two bytes: 24 characters make 18 bytes).
const KEY_ID: usize = 16;
const KEY_ID_BASE64: usize = 24;

impl<'a> Sealed<'a> {
    /// A sealed field's value, in either form.
    fn parse(value: &'a str) -> Result<Self, String> {
        if value.trim_start().starts_with('[') {
            let (data, erased) = serde_json::from_str::<(&'a str, &'a RawValue)>(value)
                .map_err(|e| e.to_string())?;
            Self::array(data, erased.get()).ok_or_else(|| {
                "its data is no base64 of a key id, a nonce, a ciphertext and a tag".to_owned()
            })
        } else {
            let read = serde_json::from_str::<ObjectForm<'a>>(value).map_err(|e| e.to_string())?;
            Ok(Self {
                key: read.key,
                data: Data::Base64(read.data),
                erased: read.erased.get(),
                form: Form::Object,
            })
        }
    }

    /// The array form's value, its key id read from the head of its data.
    fn array(data: &'a str, erased: &'a str) -> Option<Self> {
        let mut head = [0_u8; KEY_ID_BASE64 / 4 * 3];
        let head = FAST_BASE64
            .decode(
                data.get(..KEY_ID_BASE64)?.as_bytes(),
                base64_simd::Out::from_slice(&mut head),
            )
            .ok()?;
        let key = Uuid::from_slice(head.get(..KEY_ID)?).ok()?;
        Some(Self {
            key,
            data: Data::Base64(data),
            erased,
            form: Form::Array,
        })
    }

    #[cfg(feature = "postgres")]
    /// The sealed data of a `sealed` column ([`Placement::Column`]), with the erased values the
    /// payload holds; `None` when it is too short to hold a key id, a nonce and a tag.
    fn column(data: &'a [u8], erased: &'a str) -> Option<Self> {
        if data.len() < KEY_ID + NONCE + TAG {
            return None;
        }
        Some(Self {
            key: Uuid::from_slice(data.get(..KEY_ID)?).ok()?,
            data: Data::Bytes(data),
            erased,
            form: Form::Array,
        })
    }

    /// The sealed field's value as a store writes it (`["…",{…}]`), read without a general
    /// JSON parse (this runs once per event read), and the text after it. `None` for any other
    /// form, which the general parse then reads (or refuses).
    fn read_as_written(text: &'a str) -> Option<(Self, &'a str)> {
        let text = text.strip_prefix("[\"")?;
        // The string ends at its first quote, unless an escape comes first (base64 needs none).
        let end = memchr::memchr2(b'"', b'\\', text.as_bytes())?;
        let (data, text) = (text.get(..end)?, text.get(end..)?.strip_prefix('"')?);
        let text = text.strip_prefix(',')?;
        let (erased, text) = text.split_at_checked(object_end(text)?)?;
        Some((Self::array(data, erased)?, text.strip_prefix(']')?))
    }

    /// The fields' erased values, a JSON object's text: checked here, where they are used.
    fn erased_values(&self) -> Result<&'a str, PiiError> {
        serde_json::from_str::<&RawValue>(self.erased)
            .map(|_| self.erased)
            .map_err(|e| PiiError::Malformed {
                field: SEALED.to_owned(),
                reason: format!("its erased values are no JSON: {e}"),
            })
    }
}

impl<'a> SealedPayload<'a> {
    /// Reads the payload's top level, and its sealed field.
    ///
    /// # Errors
    /// [`PiiError::Malformed`] when the payload is no JSON object with plain field names, or
    /// its sealed field is not in Factum's form.
    pub(crate) fn read(payload: &'a str) -> Result<Self, PiiError> {
        if let Some(read) = Self::read_sealed_first(payload) {
            return Ok(read);
        }
        let (Fields(plain), sealed) = Fields::split(payload)?;
        let sealed = sealed
            .map(|value| {
                Sealed::parse(value.get()).map_err(|reason| PiiError::Malformed {
                    field: SEALED.to_owned(),
                    reason,
                })
            })
            .transpose()?;
        Ok(Self {
            plain: Plain::Fields(plain),
            sealed,
        })
    }

    /// The payload as a store writes it, its sealed field first (`{"$pii":{…},"a":1}`): only
    /// the sealed field is parsed, the members after it are kept as their text. `None` for a
    /// payload of another form (read field by field).
    fn read_sealed_first(payload: &'a str) -> Option<Self> {
        let after = payload.strip_prefix(SEALED_FIRST)?;
        let (sealed, rest) = match Sealed::read_as_written(after) {
            Some(read) => read,
            None => {
                let mut values =
                    serde_json::Deserializer::from_str(after).into_iter::<&'a RawValue>();
                let value = values.next()?.ok()?;
                (
                    Sealed::parse(value.get()).ok()?,
                    &after[values.byte_offset()..],
                )
            }
        };
        Some(Self {
            plain: Plain::Members(members_after(rest)?),
            sealed: Some(sealed),
        })
    }

    #[cfg(feature = "postgres")]
    /// A payload whose sealed data is in the `sealed` column ([`Placement::Column`]), its
    /// `"$pii"` member holding the fields' erased values.
    ///
    /// # Errors
    /// [`PiiError::Malformed`] when the payload is no JSON object with plain field names or
    /// names no erased values, or the data is too short to hold a key id, a nonce and a tag.
    pub(crate) fn read_column(payload: &'a str, sealed: &'a [u8]) -> Result<Self, PiiError> {
        let malformed = |reason: String| PiiError::Malformed {
            field: SEALED.to_owned(),
            reason,
        };
        let column = |erased| {
            Sealed::column(sealed, erased).ok_or_else(|| {
                malformed(format!(
                    "its data is {} bytes, too short to hold a key id, a nonce and a tag",
                    sealed.len()
                ))
            })
        };
        // As a store writes it, the erased values first: `{"$pii":{…},"a":1}`.
        if let Some(after) = payload.strip_prefix(SEALED_FIRST)
            && let Some(end) = object_end(after)
            && let Some(members) = members_after(&after[end..])
        {
            return Ok(Self {
                plain: Plain::Members(members),
                sealed: Some(column(&after[..end])?),
            });
        }
        let (Fields(plain), erased) = Fields::split(payload)?;
        let erased = erased
            .map(RawValue::get)
            .filter(|erased| erased.starts_with('{'))
            .ok_or_else(|| {
                malformed("its payload holds no object of erased values under \"$pii\"".to_owned())
            })?;
        Ok(Self {
            plain: Plain::Fields(plain),
            sealed: Some(column(erased)?),
        })
    }

    /// The data key its sealed field needs, if it has one.
    pub(crate) fn key_id(&self) -> Option<Uuid> {
        self.sealed.as_ref().map(|sealed| sealed.key)
    }

    /// The payload with the sealed fields back in place: decrypted under `key`, or, with no
    /// key (the subject was forgotten), their erased values; and whether they were erased.
    ///
    /// # Errors
    /// [`PiiError::Tampered`] when they do not decrypt under `key`; [`PiiError::Malformed`]
    /// when the data is no base64 or decrypts to no JSON object.
    pub(crate) fn open(&self, key: Option<&DataKey>) -> Result<(String, bool), PiiError> {
        let mut out = String::new();
        let shredded = self.open_into(key, &mut out)?;
        Ok((out, shredded))
    }

    /// Like [`SealedPayload::open`], into `out` (cleared first): whether the fields were
    /// erased.
    ///
    /// # Errors
    /// As [`SealedPayload::open`].
    pub(crate) fn open_into(
        &self,
        key: Option<&DataKey>,
        out: &mut String,
    ) -> Result<bool, PiiError> {
        let malformed = |reason: &str| PiiError::Malformed {
            field: SEALED.to_owned(),
            reason: reason.to_owned(),
        };
        // The sealed fields' text: decrypted into a buffer on the stack when it is short (as
        // it is for a few fields), to be copied once, into the payload.
        let mut buffer = [0_u8; OPEN_ON_STACK];
        let mut long = Vec::new();
        let (fields, shredded) = match (&self.sealed, key) {
            (None, _) => ("{}", false),
            (Some(sealed), Some(key)) => (sealed.decrypt(key, &mut buffer, &mut long)?, false),
            (Some(sealed), None) => (sealed.erased_values()?, true),
        };
        let inner = object_inner(fields)
            .ok_or_else(|| malformed("the sealed fields are no JSON object"))?;
        out.clear();
        out.reserve_exact(self.plain_len() + inner.len() + 3);
        out.push('{');
        let plain = self.write_plain(out);
        if !inner.is_empty() {
            if plain {
                out.push(',');
            }
            out.push_str(inner);
        }
        out.push('}');
        Ok(shredded)
    }

    /// Writes the plain fields' members to `out` (no braces); whether there were any.
    fn write_plain(&self, out: &mut String) -> bool {
        match &self.plain {
            Plain::Members(members) => {
                out.push_str(members);
                !members.is_empty()
            }
            Plain::Fields(fields) => {
                for (index, (name, value)) in fields.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    // The name as it was written (borrowed, so it needed no escapes).
                    out.push('"');
                    out.push_str(name);
                    out.push_str("\":");
                    out.push_str(value.get());
                }
                !fields.is_empty()
            }
        }
    }

    /// The length of the plain fields' text (with separators, a bound for the fields read one
    /// by one).
    fn plain_len(&self) -> usize {
        match &self.plain {
            Plain::Members(members) => members.len(),
            Plain::Fields(fields) => fields
                .iter()
                .map(|(name, value)| name.len() + value.get().len() + 4)
                .sum(),
        }
    }
}

#[cfg(feature = "postgres")]
/// A payload read with its `sealed` column ([`Placement::Column`]), its sealed data put inside
/// it as base64 ([`Placement::Payload`]'s form): what leaves the store sealed (an export, an
/// archive, a read without a key provider), readable without the column.
///
/// # Errors
/// As [`SealedPayload::read_column`].
pub(crate) fn inline(payload: &str, sealed: &[u8]) -> Result<String, PiiError> {
    let read = SealedPayload::read_column(payload, sealed)?;
    let erased = read.sealed.as_ref().map_or("{}", |sealed| sealed.erased);
    let mut out = String::with_capacity(
        SEALED_FIRST.len() + sealed.len().div_ceil(3) * 4 + erased.len() + read.plain_len() + 8,
    );
    out.push_str(SEALED_FIRST);
    out.push_str("[\"");
    BASE64.encode_string(sealed, &mut out);
    out.push_str("\",");
    out.push_str(erased);
    out.push(']');
    out.push(',');
    if !read.write_plain(&mut out) {
        out.pop();
    }
    out.push('}');
    Ok(out)
}

/// Decodes sealed data: once per event a read opens, where `base64`'s decoder costs about three
/// times this SIMD one (a 140-character field: 80–110 ns against 30–40 ns here).
const FAST_BASE64: base64_simd::Base64 = base64_simd::STANDARD;

/// Sealed data up to this length (nonce, ciphertext and tag) is decrypted on the stack.
const OPEN_ON_STACK: usize = 512;

impl Sealed<'_> {
    /// The sealed fields' JSON text, decrypted under `key` into `buffer`, or into `long` when
    /// it does not fit.
    fn decrypt<'b>(
        &self,
        key: &DataKey,
        buffer: &'b mut [u8; OPEN_ON_STACK],
        long: &'b mut Vec<u8>,
    ) -> Result<&'b str, PiiError> {
        let malformed = |reason: String| PiiError::Malformed {
            field: SEALED.to_owned(),
            reason,
        };
        let no_base64 = |e: base64_simd::Error| malformed(format!("data is no base64: {e}"));
        let bytes = match self.data {
            Data::Base64(text) => {
                let text = text.as_bytes();
                let length = FAST_BASE64.decoded_length(text).map_err(no_base64)?;
                FAST_BASE64
                    .decode(
                        text,
                        base64_simd::Out::from_slice(scratch(buffer, long, length)),
                    )
                    .map_err(no_base64)?
            }
            #[cfg(feature = "postgres")]
            Data::Bytes(bytes) => {
                let out = scratch(buffer, long, bytes.len());
                out.copy_from_slice(bytes);
                out
            }
        };
        let head = match self.form {
            Form::Object => 0,
            Form::Array => KEY_ID,
        };
        if bytes.len() < head + NONCE + TAG {
            return Err(malformed(format!(
                "data is {} bytes, too short to hold a nonce and a tag",
                bytes.len()
            )));
        }
        let text = open_in_place(
            key.cipher(),
            &mut bytes[head..],
            &sealed_aad(self.form, self.key),
        )
        .ok_or_else(|| PiiError::Tampered {
            field: SEALED.to_owned(),
            key_id: self.key,
        })?;
        std::str::from_utf8(text).map_err(|e| malformed(format!("decrypts to no text: {e}")))
    }
}

/// `length` bytes to decrypt in: of `buffer` when they fit, else of `long`, grown to them.
fn scratch<'b>(
    buffer: &'b mut [u8; OPEN_ON_STACK],
    long: &'b mut Vec<u8>,
    length: usize,
) -> &'b mut [u8] {
    match buffer.get_mut(..length) {
        Some(on_stack) => on_stack,
        None => {
            long.resize(length, 0);
            long
        }
    }
}

/// The length of the JSON object `text` begins with: up to the brace that closes it, strings
/// skipped (their braces and escaped quotes). Nothing inside is checked: the stores' columns
/// hold JSON (PostgreSQL checks it as it stores it), and the values are checked where they
/// are used. `None` when `text` begins with no object or ends inside it.
fn object_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let (mut depth, mut at) = (0_usize, 0);
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            b'"' => {
                // To the closing quote, over escapes (a backslash and the byte after it); byte
                // by byte, the strings of erased values being short.
                at += 1;
                loop {
                    match *bytes.get(at)? {
                        b'"' => break,
                        b'\\' => at += 2,
                        _ => at += 1,
                    }
                }
            }
            _ => {}
        }
        at += 1;
    }
    None
}

/// The members after a stored payload's sealed field (`,"a":1}`, or `}` alone), without the
/// closing brace; `None` for any other text.
fn members_after(rest: &str) -> Option<&str> {
    match rest {
        "}" => Some(""),
        _ => rest
            .strip_prefix(',')?
            .strip_suffix('}')
            .filter(|members| !members.is_empty() && !members.ends_with(',')),
    }
}

/// The members of a JSON object's text, without its braces.
fn object_inner(object: &str) -> Option<&str> {
    object
        .trim()
        .strip_prefix('{')?
        .strip_suffix('}')
        .map(str::trim)
}

/// The top-level fields of a JSON object, borrowed, in order.
struct Fields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// A stored payload's plain top-level fields, and its sealed field's value.
    ///
    /// # Errors
    /// [`PiiError::Malformed`] when the payload is no JSON object with plain field names.
    fn split(payload: &'a str) -> Result<(Self, Option<&'a RawValue>), PiiError> {
        let fields: Fields<'a> =
            serde_json::from_str(payload).map_err(|e| PiiError::Malformed {
                field: SEALED.to_owned(),
                reason: format!("a payload with sealed fields does not read: {e}"),
            })?;
        let mut plain = Vec::with_capacity(fields.0.len());
        let mut sealed = None;
        for (name, value) in fields.0 {
            if name == SEALED {
                sealed = Some(value);
            } else {
                plain.push((name, value));
            }
        }
        Ok((Self(plain), sealed))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Fields<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((name, value)) = map.next_entry::<&'de str, &'de RawValue>()? {
                    fields.push((name, value));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pii::PiiField;

    static FIELDS: [PiiField; 2] = [
        PiiField::new("name", || json!("[erased]")),
        PiiField::new("email", || Value::Null),
    ];
    static SPEC: PiiSpec = PiiSpec::new("customer", &FIELDS);

    fn payload() -> Map<String, Value> {
        json!({"customer": "c-1", "name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro"})
            .as_object()
            .unwrap()
            .clone()
    }

    /// [`payload`] sealed under a new key: the key, the sealed payload and its text.
    fn sealed_payload() -> (DataKey, Map<String, Value>, String) {
        let (key, id) = (DataKey::generate().unwrap(), Uuid::now_v7());
        let mut sealed = payload();
        seal(&mut sealed, &SPEC, id, &key, Placement::Payload).unwrap();
        let text = serde_json::to_string(&sealed).unwrap();
        (key, sealed, text)
    }

    fn opened(
        payload: &Map<String, Value>,
        key: Option<&DataKey>,
    ) -> Result<(Map<String, Value>, bool), PiiError> {
        let text = serde_json::to_string(payload).unwrap();
        let (text, shredded) = SealedPayload::read(&text)?.open(key)?;
        Ok((serde_json::from_str(&text).unwrap(), shredded))
    }

    #[test]
    fn sealed_fields_hide_their_values_and_open_under_their_key_only() {
        let (key, sealed, text) = sealed_payload();
        assert!(!text.contains("Ada") && !text.contains("ada@"), "{text}");
        assert!(text.contains("\"plan\":\"pro\"") && text.contains("\"customer\":\"c-1\""));
        assert!(may_be_sealed(&text));
        assert_eq!(opened(&sealed, Some(&key)).unwrap(), (payload(), false));
        assert_eq!(
            opened(&payload(), None).unwrap(),
            (payload(), false),
            "nothing sealed"
        );
        // Forgotten: the declared erased values.
        let (erased, shredded) = opened(&sealed, None).unwrap();
        assert!(shredded);
        assert_eq!(erased["name"], json!("[erased]"));
        assert_eq!(erased["email"], Value::Null);
        assert_eq!(erased["plan"], json!("pro"));
        // Another key, or the sealed fields of another key id, do not decrypt.
        let other = DataKey::generate().unwrap();
        assert!(matches!(
            opened(&sealed, Some(&other)),
            Err(PiiError::Tampered { .. })
        ));
        let mut moved = sealed.clone();
        let mut data = BASE64.decode(moved["$pii"][0].as_str().unwrap()).unwrap();
        data[..KEY_ID].copy_from_slice(Uuid::now_v7().as_bytes());
        moved["$pii"][0] = json!(BASE64.encode(data));
        assert!(matches!(
            opened(&moved, Some(&key)),
            Err(PiiError::Tampered { .. })
        ));
        // A `$pii` value not in Factum's form is refused, not taken for data.
        let mut odd = sealed.clone();
        odd.insert("$pii".to_owned(), json!({"key": "k"}));
        assert!(matches!(
            opened(&odd, Some(&key)),
            Err(PiiError::Malformed { .. })
        ));
    }

    /// The erased values' object is found by its closing brace, over strings that hold braces,
    /// brackets, quotes and backslashes; a text that ends inside the object, or does not begin
    /// with one, has no end.
    #[test]
    fn an_object_ends_at_its_own_closing_brace() {
        for object in [
            r#"{}"#,
            r#"{"a":"[erased]","b":null}"#,
            r#"{"a":"}{][","b":{"c":[1,{"d":"\"}"}]}}"#,
            r#"{"a":"say \"}\" twice\\","b":"\u007d"}"#,
        ] {
            let text = format!("{object}],\"x\":1}}");
            assert_eq!(object_end(&text), Some(object.len()), "{object}");
            serde_json::from_str::<Value>(object).unwrap();
        }
        for text in [
            r#"{"a":"}"#,
            r#"{"a":{"b":1}"#,
            r#"["a"]"#,
            "",
            r#"{"a":"\"#,
        ] {
            assert_eq!(object_end(text), None, "{text}");
        }
    }

    /// The erased values are read only when they are used: a payload whose erased values are
    /// no JSON opens under its key, and is refused once its subject is forgotten.
    #[test]
    fn erased_values_are_checked_when_they_are_used() {
        let (key, sealed, text) = sealed_payload();
        let erased = serde_json::to_string(&sealed[SEALED][1]).unwrap();
        let broken = text.replacen(&erased, r#"{"name":tru,"email":null}"#, 1);
        assert_ne!(broken, text);
        let read = SealedPayload::read(&broken).unwrap();
        let (opened, shredded) = read.open(Some(&key)).unwrap();
        assert!(!shredded);
        assert_eq!(
            serde_json::from_str::<Value>(&opened).unwrap(),
            Value::Object(payload())
        );
        assert!(matches!(read.open(None), Err(PiiError::Malformed { .. })));
    }

    /// A store writes the sealed field first, and then only that field is parsed; a payload
    /// written otherwise is read field by field, and opens to the same text.
    #[test]
    fn a_payload_opens_the_same_whether_its_sealed_field_comes_first_or_not() {
        let (key, mut sealed, first) = sealed_payload();
        assert!(first.starts_with("{\"$pii\":"), "{first}");
        let read_first = SealedPayload::read(&first).unwrap();
        assert!(matches!(read_first.plain, Plain::Members(_)));

        let value = sealed.remove(SEALED).unwrap();
        let rest = serde_json::to_string(&sealed).unwrap();
        let last = format!("{},\"$pii\":{value}}}", &rest[..rest.len() - 1]);
        let read_last = SealedPayload::read(&last).unwrap();
        assert!(matches!(read_last.plain, Plain::Fields(_)));
        let opened = read_first.open(Some(&key)).unwrap();
        assert_eq!(opened, read_last.open(Some(&key)).unwrap());
        assert_eq!(
            serde_json::from_str::<Value>(&opened.0).unwrap(),
            Value::Object(payload())
        );

        // Nothing but sealed fields; and a sealed field followed by no valid members (then read
        // field by field, which says what is wrong).
        let only = format!("{{\"$pii\":{value}}}");
        let (text, shredded) = SealedPayload::read(&only).unwrap().open(None).unwrap();
        assert!(shredded);
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"name": "[erased]", "email": null})
        );
        assert!(matches!(
            SealedPayload::read(&format!("{{\"$pii\":{value},}}")),
            Err(PiiError::Malformed { .. })
        ));
    }

    /// The sealed field in the form stores wrote first (`{"data", "erased", "key"}`).
    fn seal_as_objects_were(payload: &mut Map<String, Value>, key_id: Uuid, key: &DataKey) {
        let mut secret = Map::new();
        let mut erased = Map::new();
        for field in SPEC.fields {
            secret.insert(field.name.to_owned(), payload.remove(field.name).unwrap());
            erased.insert(field.name.to_owned(), (field.erased)());
        }
        let plain = serde_json::to_vec(&secret).unwrap();
        let data = encrypt(key.cipher(), &plain, &sealed_aad(Form::Object, key_id)).unwrap();
        payload.insert(
            SEALED.to_owned(),
            json!({"key": key_id.to_string(), "data": BASE64.encode(data), "erased": erased}),
        );
    }

    #[cfg(feature = "postgres")]
    /// Sealed into a column of its own, the data leaves the payload its erased values alone;
    /// the payload and the column open to the event (or its erased values without the key),
    /// as the same data put back inside the payload does; data altered, cut short or without
    /// erased values beside it is refused.
    #[test]
    fn data_sealed_into_a_column_opens_as_it_does_inside_the_payload() {
        let (key, id) = (DataKey::generate().unwrap(), Uuid::now_v7());
        let mut sealed = payload();
        let data = seal(&mut sealed, &SPEC, id, &key, Placement::Column)
            .unwrap()
            .unwrap();
        assert_eq!(sealed[SEALED], json!({"name": "[erased]", "email": null}));
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(text.starts_with(SEALED_FIRST) && !text.contains("Ada") && !text.contains("ada@"));
        assert_eq!(&data[..KEY_ID], id.as_bytes());
        let open = |text: &str, data: &[u8], key: Option<&DataKey>| {
            SealedPayload::read_column(text, data)
                .and_then(|read| read.open(key))
                .map(|(text, shredded)| (serde_json::from_str::<Value>(&text).unwrap(), shredded))
        };
        let plain = Value::Object(payload());
        assert_eq!(
            open(&text, &data, Some(&key)).unwrap(),
            (plain.clone(), false)
        );
        let (erased, shredded) = open(&text, &data, None).unwrap();
        assert!(shredded);
        assert_eq!(
            erased,
            json!({"customer": "c-1", "name": "[erased]", "email": null, "plan": "pro"})
        );
        // Members in another order (the general parse) open the same.
        let reordered = format!(
            "{{\"plan\":\"pro\",\"$pii\":{},\"customer\":\"c-1\"}}",
            sealed[SEALED]
        );
        assert_eq!(
            open(&reordered, &data, Some(&key)).unwrap(),
            (plain.clone(), false)
        );
        // Put inside the payload, the same data opens the same, in the payload's own form.
        let inline = inline(&text, &data).unwrap();
        assert!(inline.starts_with("{\"$pii\":[\"") && may_be_sealed(&inline));
        let (opened, shredded) = SealedPayload::read(&inline)
            .unwrap()
            .open(Some(&key))
            .unwrap();
        assert_eq!(
            (serde_json::from_str::<Value>(&opened).unwrap(), shredded),
            (plain, false)
        );
        assert_eq!(
            SealedPayload::read(&inline).unwrap().key_id(),
            Some(id),
            "the key id read from the payload"
        );
        // Altered, cut short, or with no erased values beside it: refused.
        let mut altered = data.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            open(&text, &altered, Some(&key)),
            Err(PiiError::Tampered { .. })
        ));
        assert!(matches!(
            open(&text, &data[..KEY_ID + NONCE], Some(&key)),
            Err(PiiError::Malformed { .. })
        ));
        assert!(matches!(
            open(r#"{"customer":"c-1","plan":"pro"}"#, &data, Some(&key)),
            Err(PiiError::Malformed { .. })
        ));
    }

    /// The sealed field as a store writes it is read without a general parse; the same field
    /// spaced otherwise, or with an escape in its data, is read by the general parse and opens
    /// the same (or is refused the same); the form stores wrote first still opens, and the
    /// forms do not decrypt as each other.
    #[test]
    fn the_sealed_field_in_every_form_reads_the_same() {
        let (key, id) = (DataKey::generate().unwrap(), Uuid::now_v7());
        let mut sealed = payload();
        seal(&mut sealed, &SPEC, id, &key, Placement::Payload).unwrap();
        let value = sealed.remove(SEALED).unwrap();
        let written = serde_json::to_string(&value).unwrap();
        let (read, rest) = Sealed::read_as_written(&written).unwrap();
        assert_eq!((read.key, read.form, rest), (id, Form::Array, ""));
        assert!(matches!(read.data, Data::Base64(data) if data == value[0].as_str().unwrap()));
        assert_eq!(
            serde_json::from_str::<Value>(read.erased).unwrap(),
            value[1]
        );
        let rest = serde_json::to_string(&sealed).unwrap();
        let open = |text: &str| {
            SealedPayload::read(text)
                .and_then(|read| read.open(Some(&key)))
                .map(|(text, shredded)| (serde_json::from_str::<Value>(&text).unwrap(), shredded))
        };

        let spaced = format!("{{\"$pii\": [ {}, {} ],{}", value[0], value[1], &rest[1..]);
        assert!(Sealed::read_as_written(&spaced["{\"$pii\": ".len()..]).is_none());
        assert_eq!(open(&spaced).unwrap(), (Value::Object(payload()), false));

        let mut first = payload();
        seal_as_objects_were(&mut first, id, &key);
        let first = serde_json::to_string(&first).unwrap();
        assert!(first.starts_with("{\"$pii\":{\"data\":"), "{first}");
        assert_eq!(open(&first).unwrap(), (Value::Object(payload()), false));
        let read = SealedPayload::read(&first).unwrap();
        assert_eq!(read.key_id(), Some(id));
        let (erased, shredded) = read.open(None).unwrap();
        assert!(shredded && erased.contains("[erased]"), "{erased}");

        // The data of one form under the other's shape does not decrypt.
        let object: Value = serde_json::from_str(&first).unwrap();
        let data = BASE64
            .decode(object[SEALED]["data"].as_str().unwrap())
            .unwrap();
        let as_array = format!(
            "{{\"$pii\":[\"{}\",{}],{}",
            BASE64.encode([id.as_bytes().as_slice(), &data].concat()),
            value[1],
            &rest[1..]
        );
        assert!(matches!(open(&as_array), Err(PiiError::Tampered { .. })));

        // An escape in the data is no base64 either way; data without a key id is refused.
        let escaped = format!(
            "{{\"$pii\":{},{}",
            written.replacen("[\"", "[\"\\u0041", 1),
            &rest[1..]
        );
        assert!(matches!(open(&escaped), Err(PiiError::Malformed { .. })));
        let short = format!("{{\"$pii\":[\"AAAA\",{}],{}", value[1], &rest[1..]);
        assert!(matches!(open(&short), Err(PiiError::Malformed { .. })));
    }

    /// The sealed data is standard AES-256-GCM (nonce, ciphertext, tag; the form and key id as
    /// associated data): this payload was sealed by Python's `cryptography` (OpenSSL), so what
    /// stores sealed with RustCrypto's `aes-gcm` before they used ring's opens the same.
    #[test]
    fn data_sealed_by_another_aes_gcm_implementation_opens() {
        let key = DataKey::from_bytes(std::array::from_fn(|i| i as u8));
        let text = r#"{"$pii":["AZDzonscfU6PABEiM0RVZmRlZmdoaWprbG1ubzM5uwsYgDq8BEA+jLslD4Ujr3Zm7kKQHcrzgGqVwsgtttNigShzu0iShR1TnCGv7WYavYK4X2JQ+yZe+z4eIwl4",{"email":null,"name":"[erased]"}],"customer":"c-1","plan":"pro"}"#;
        let sealed = SealedPayload::read(text).unwrap();
        assert_eq!(
            sealed.key_id(),
            Some(Uuid::parse_str("0190f3a2-7b1c-7d4e-8f00-112233445566").unwrap())
        );
        let (opened, shredded) = sealed.open(Some(&key)).unwrap();
        assert!(!shredded);
        assert_eq!(
            serde_json::from_str::<Value>(&opened).unwrap(),
            json!({"customer": "c-1", "plan": "pro", "email": "ada@example.com", "name": "Ada Lovelace"})
        );
        let other = DataKey::from_bytes([7; 32]);
        assert!(matches!(
            sealed.open(Some(&other)),
            Err(PiiError::Tampered { .. })
        ));
    }

    /// Sealed fields too long for the stack buffer open from the heap; data cut shorter than a
    /// nonce and a tag is refused, not sliced.
    #[test]
    fn long_sealed_fields_open_and_short_data_is_refused() {
        let (key, id) = (DataKey::generate().unwrap(), Uuid::now_v7());
        let mut long = payload();
        long.insert("name".to_owned(), json!("A".repeat(2 * OPEN_ON_STACK)));
        let mut sealed = long.clone();
        seal(&mut sealed, &SPEC, id, &key, Placement::Payload).unwrap();
        assert_eq!(opened(&sealed, Some(&key)).unwrap(), (long, false));

        sealed["$pii"][0] = json!(BASE64.encode([0_u8; KEY_ID + NONCE + TAG - 1]));
        let error = opened(&sealed, Some(&key)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("too short to hold a nonce and a tag"),
            "{error}"
        );
    }

    #[test]
    fn an_event_without_its_personal_data_fields_seals_nothing() {
        let key = DataKey::generate().unwrap();
        let mut event = json!({"customer": "c-1", "plan": "pro"})
            .as_object()
            .unwrap()
            .clone();
        seal(&mut event, &SPEC, Uuid::now_v7(), &key, Placement::Payload).unwrap();
        assert!(!may_be_sealed(&serde_json::to_string(&event).unwrap()));
    }
}
