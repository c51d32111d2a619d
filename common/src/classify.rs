//! The one classification rule every process applies to a `DataTopic`
//! record: no purchase, short or long purchase, or invalid with a typed
//! reason (which routes the record to the dead-letter topic).

use std::fmt;

use serde::de::IgnoredAny;
use serde_json::error::Category;
use thiserror::Error;

use crate::record::Purchase;

/// Purchases taking at least this many minutes are long.
pub const DEFAULT_LONG_THRESHOLD_MIN: f64 = 30.0;
/// Records larger than this are rejected before parsing.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024;

/// Longest detail string kept in a reason; it ends up in a Kafka header.
const MAX_DETAIL_CHARS: usize = 160;

/// Tunables of the classification rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// A purchase is long when `taps >= long_threshold_min`.
    pub long_threshold_min: f64,
    /// Records of more bytes than this are `Oversized`.
    pub max_record_bytes: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            long_threshold_min: DEFAULT_LONG_THRESHOLD_MIN,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// How long a purchase took, relative to the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Short,
    Long,
}

impl Kind {
    /// Stable lowercase name, for JSON output and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Long => "long",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome for one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Classification {
    /// A well-formed visit without a purchase: counted, not notified.
    NoPurchase(Purchase),
    /// A well-formed purchase to notify.
    Purchase { kind: Kind, purchase: Purchase },
    /// Anything else: goes to the dead-letter topic with this reason.
    Invalid(InvalidReason),
}

/// Why a record is invalid. `Display` is for humans, [`InvalidReason::code`]
/// for machines.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidReason {
    #[error("record is empty")]
    Empty,
    #[error("record is {len} bytes, more than the {max} allowed")]
    Oversized { len: usize, max: usize },
    #[error("record is not UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("record is not JSON: {0}")]
    NotJson(String),
    #[error("record is JSON but not an object")]
    NotObject,
    #[error("missing or mistyped field: {0}")]
    MissingOrMistyped(String),
    #[error("id must be exactly 24 hexadecimal characters")]
    BadId,
    #[error("edad must be between 1 and 120 (got {0})")]
    BadEdad(i64),
    #[error("email must have exactly one '@' with text on both sides")]
    BadEmail,
    #[error("taps must be a finite, non-negative number of minutes (got {0})")]
    BadTaps(String),
    #[error("taps is positive (a purchase) but folio is missing")]
    PurchaseWithoutFolio,
    #[error("folio is set but taps says there was no purchase")]
    FolioWithoutPurchase,
    #[error("folio must look like ABC-1234 (got {0:?})")]
    BadFolio(String),
    #[error("{0} is empty")]
    EmptyField(&'static str),
}

impl InvalidReason {
    /// Stable snake_case code: the dead-letter header value and metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Oversized { .. } => "oversized",
            Self::NotUtf8 { .. } => "not_utf8",
            Self::NotJson(_) => "not_json",
            Self::NotObject => "not_object",
            Self::MissingOrMistyped(_) => "missing_or_mistyped",
            Self::BadId => "bad_id",
            Self::BadEdad(_) => "bad_edad",
            Self::BadEmail => "bad_email",
            Self::BadTaps(_) => "bad_taps",
            Self::PurchaseWithoutFolio => "purchase_without_folio",
            Self::FolioWithoutPurchase => "folio_without_purchase",
            Self::BadFolio(_) => "bad_folio",
            Self::EmptyField(_) => "empty_field",
        }
    }
}

/// Classifies the raw value of a `DataTopic` record.
pub fn classify(bytes: &[u8], rules: &Rules) -> Classification {
    match parse(bytes, rules) {
        Ok(purchase) => classify_purchase(purchase, rules),
        Err(reason) => Classification::Invalid(reason),
    }
}

/// Applies the semantic checks and the short/long rule to an already parsed
/// record.
pub fn classify_purchase(purchase: Purchase, rules: &Rules) -> Classification {
    match check(&purchase, rules) {
        Ok(None) => Classification::NoPurchase(purchase),
        Ok(Some(kind)) => Classification::Purchase { kind, purchase },
        Err(reason) => Classification::Invalid(reason),
    }
}

fn parse(bytes: &[u8], rules: &Rules) -> Result<Purchase, InvalidReason> {
    if bytes.is_empty() {
        return Err(InvalidReason::Empty);
    }
    if bytes.len() > rules.max_record_bytes {
        return Err(InvalidReason::Oversized {
            len: bytes.len(),
            max: rules.max_record_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| InvalidReason::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    Purchase::from_json(text).map_err(|e| match e.classify() {
        Category::Data => data_error(text, &e),
        Category::Syntax | Category::Eof | Category::Io => InvalidReason::NotJson(clip(&e)),
    })
}

/// A data error means the text did not fit `Purchase`; it may still not be
/// JSON at all (the type mismatch surfaced before the syntax error), so only
/// on this rare path the text is parsed a second time, into nothing.
fn data_error(text: &str, err: &serde_json::Error) -> InvalidReason {
    match serde_json::from_str::<IgnoredAny>(text) {
        Err(syntax) => InvalidReason::NotJson(clip(&syntax)),
        Ok(_) if !text.trim_start().starts_with('{') => InvalidReason::NotObject,
        Ok(_) => InvalidReason::MissingOrMistyped(clip(err)),
    }
}

/// `Ok(None)` for no purchase, `Ok(Some(kind))` for a purchase.
fn check(p: &Purchase, rules: &Rules) -> Result<Option<Kind>, InvalidReason> {
    if p.id.len() != 24 || !p.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InvalidReason::BadId);
    }
    if !(1..=120).contains(&p.edad) {
        return Err(InvalidReason::BadEdad(p.edad));
    }
    let email_ok = matches!(p.email.split_once('@'),
        Some((user, domain)) if !user.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !email_ok {
        return Err(InvalidReason::BadEmail);
    }
    for (name, value) in [
        ("nombre", &p.nombre),
        ("apellido", &p.apellido),
        ("productovisto", &p.productovisto),
    ] {
        if value.trim().is_empty() {
            return Err(InvalidReason::EmptyField(name));
        }
    }

    match p.taps {
        Some(t) if !t.is_finite() || t < 0.0 => Err(InvalidReason::BadTaps(t.to_string())),
        // `-0.0 == 0.0`, so a negative zero is also "did not buy".
        None | Some(0.0) => match &p.folio {
            None => Ok(None),
            Some(_) => Err(InvalidReason::FolioWithoutPurchase),
        },
        Some(t) => match p.folio.as_deref() {
            None => Err(InvalidReason::PurchaseWithoutFolio),
            Some(f) if !is_folio(f) => Err(InvalidReason::BadFolio(clip(f))),
            Some(_) if t >= rules.long_threshold_min => Ok(Some(Kind::Long)),
            Some(_) => Ok(Some(Kind::Short)),
        },
    }
}

/// `^[A-Z]{3}-[0-9]{4}$`: the shape of a valid folio.
pub fn is_folio(folio: &str) -> bool {
    let b = folio.as_bytes();
    b.len() == 8
        && b[..3].iter().all(u8::is_ascii_uppercase)
        && b[3] == b'-'
        && b[4..].iter().all(u8::is_ascii_digit)
}

/// Bounds a detail string: serde quotes offending values, which may be huge.
fn clip(detail: impl fmt::Display) -> String {
    let detail = detail.to_string();
    match detail.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &detail[..cut]),
        None => detail,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::record::{tests::sample, Ubicacion};

    fn run(bytes: &[u8]) -> Classification {
        classify(bytes, &Rules::default())
    }

    /// The sample record as JSON, with `edits` set (added or replaced).
    fn record_with(edits: &[(&str, Value)]) -> Vec<u8> {
        let mut v = serde_json::to_value(sample()).unwrap();
        for (key, value) in edits {
            v[*key] = value.clone();
        }
        serde_json::to_vec(&v).unwrap()
    }

    /// The sample record as JSON, without `keys`.
    fn without(keys: &[&str]) -> Vec<u8> {
        let mut v = serde_json::to_value(sample()).unwrap();
        for key in keys {
            v.as_object_mut().unwrap().remove(*key);
        }
        serde_json::to_vec(&v).unwrap()
    }

    fn code(c: &Classification) -> &'static str {
        match c {
            Classification::NoPurchase(_) => "no_purchase",
            Classification::Purchase { kind, .. } => kind.as_str(),
            Classification::Invalid(r) => r.code(),
        }
    }

    fn assert_code(bytes: &[u8], expected: &str) {
        let got = run(bytes);
        assert_eq!(
            code(&got),
            expected,
            "{got:?} for {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        );
    }

    /// Replaces the taps literal in the sample's JSON text, for numbers
    /// `serde_json::Value` cannot express (`-0`, `1e999`).
    fn with_taps_literal(literal: &str, folio: &str) -> Vec<u8> {
        let text = serde_json::to_string(&sample()).unwrap();
        text.replace(
            r#""taps":12.3,"folio":"QZX-0042""#,
            &format!(r#""taps":{literal},"folio":{folio}"#),
        )
        .into_bytes()
    }

    #[test]
    fn taps_boundaries() {
        let folio = json!("ABC-1234");
        assert_code(&without(&["taps"]), "folio_without_purchase");
        assert_code(&without(&["taps", "folio"]), "no_purchase");
        assert_code(
            &record_with(&[("taps", json!(null)), ("folio", json!(null))]),
            "no_purchase",
        );
        assert_code(
            &record_with(&[("taps", json!(0)), ("folio", json!(null))]),
            "no_purchase",
        );
        for literal in ["-0", "-0.0", "0.0"] {
            assert_code(&with_taps_literal(literal, "null"), "no_purchase");
            assert_code(
                &with_taps_literal(literal, r#""ABC-1234""#),
                "folio_without_purchase",
            );
        }
        for (taps, kind) in [
            (0.1, "short"),
            (29.9, "short"),
            (30.0, "long"),
            (30.1, "long"),
        ] {
            assert_code(
                &record_with(&[("taps", json!(taps)), ("folio", folio.clone())]),
                kind,
            );
        }
        assert_code(&record_with(&[("taps", json!(30))]), "long");
    }

    #[test]
    fn threshold_is_a_rule() {
        let rules = Rules {
            long_threshold_min: 10.0,
            ..Rules::default()
        };
        let got = classify(&record_with(&[("taps", json!(12.3))]), &rules);
        assert_eq!(code(&got), "long");
    }

    #[test]
    fn bad_taps() {
        let got = run(&record_with(&[("taps", json!(-3.5))]));
        assert_eq!(
            got,
            Classification::Invalid(InvalidReason::BadTaps("-3.5".into()))
        );
        assert!(matches!(&got, Classification::Invalid(r) if r.to_string().contains("(got -3.5)")));
        // serde_json reports an out-of-range number as a syntax error.
        assert_code(&with_taps_literal("1e999", r#""ABC-1234""#), "not_json");
        assert_code(
            &record_with(&[("taps", json!("12.5"))]),
            "missing_or_mistyped",
        );
        assert_code(
            &record_with(&[("taps", json!("NaN"))]),
            "missing_or_mistyped",
        );
        assert_code(&with_taps_literal("NaN", r#""ABC-1234""#), "not_json");
        for taps in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.1] {
            let p = Purchase {
                taps: Some(taps),
                ..sample()
            };
            assert_eq!(code(&classify_purchase(p, &Rules::default())), "bad_taps");
        }
    }

    #[test]
    fn folio_rules() {
        assert_code(
            &record_with(&[("folio", json!(null))]),
            "purchase_without_folio",
        );
        assert_code(&without(&["folio"]), "purchase_without_folio");
        for bad in [
            "abc-1234",
            "ABC1234",
            "AB-1234",
            "ABC-12345",
            "ABC-123",
            "ÁBC-1234",
            "ABC-１２３４",
            "",
        ] {
            assert_eq!(
                run(&record_with(&[("folio", json!(bad))])),
                Classification::Invalid(InvalidReason::BadFolio(bad.into())),
                "{bad}"
            );
        }
        assert_code(
            &record_with(&[("folio", json!(1234))]),
            "missing_or_mistyped",
        );
    }

    #[test]
    fn edad_rules() {
        for edad in [0, 121, -5, 200] {
            assert_eq!(
                run(&record_with(&[("edad", json!(edad))])),
                Classification::Invalid(InvalidReason::BadEdad(edad))
            );
        }
        for edad in [1, 120] {
            assert_code(&record_with(&[("edad", json!(edad))]), "short");
        }
        assert_code(
            &record_with(&[("edad", json!("34"))]),
            "missing_or_mistyped",
        );
        assert_code(
            &record_with(&[("edad", json!(34.5))]),
            "missing_or_mistyped",
        );
    }

    #[test]
    fn id_email_and_empty_fields() {
        for id in [
            "65f1c0ffee0123456789abc",
            "65f1c0ffee0123456789abcde",
            "65f1c0ffee0123456789abcg",
        ] {
            assert_code(&record_with(&[("id", json!(id))]), "bad_id");
        }
        assert_code(
            &record_with(&[("id", json!("65F1C0FFEE0123456789ABCD"))]),
            "short",
        );
        for email in ["no-at.mail.com", "@mail.com", "a@", "a@b@mail.com"] {
            assert_code(&record_with(&[("email", json!(email))]), "bad_email");
        }
        for field in ["nombre", "apellido", "productovisto"] {
            assert_eq!(
                run(&record_with(&[(field, json!(" \t"))])),
                Classification::Invalid(InvalidReason::EmptyField(field))
            );
        }
        assert_code(&without(&["telefono"]), "missing_or_mistyped");
        assert_code(
            &record_with(&[("ubicacion", json!({"ciudad": "Santiago"}))]),
            "missing_or_mistyped",
        );
    }

    #[test]
    fn framing_errors() {
        assert_eq!(run(b""), Classification::Invalid(InvalidReason::Empty));
        assert_eq!(
            run(&[0xff, 0xfe]),
            Classification::Invalid(InvalidReason::NotUtf8 { valid_up_to: 0 })
        );
        let full = record_with(&[]);
        assert_code(&full[..full.len() / 2], "not_json");
        assert_code(b"   ", "not_json");
        assert_code(b"{\"id\": nope}", "not_json");
        for not_object in [&b"[1,2]"[..], b"\"str\"", b"42", b"null", b" true "] {
            assert_eq!(
                run(not_object),
                Classification::Invalid(InvalidReason::NotObject)
            );
        }
        // A type error that surfaces before a syntax error is still not JSON.
        assert_code(b"[1,", "not_json");
        assert_code(b"{\"edad\":\"x\",", "not_json");
    }

    #[test]
    fn deep_nesting_does_not_crash() {
        let deep = "[".repeat(10_000);
        assert!(matches!(
            code(&run(deep.as_bytes())),
            "not_json" | "not_object"
        ));
        let closed = format!("{deep}{}", "]".repeat(10_000));
        assert!(matches!(
            code(&run(closed.as_bytes())),
            "not_json" | "not_object"
        ));
        // Unknown fields are skipped without recursing, however deep.
        let text = serde_json::to_string(&sample()).unwrap();
        let unknown = text.replacen('{', &format!("{{\"x\":{closed},"), 1);
        assert_code(unknown.as_bytes(), "short");
        let known = record_with(&[("ubicacion", serde_json::from_str("[[[]]]").unwrap())]);
        let known = String::from_utf8(known).unwrap().replace("[[[]]]", &closed);
        assert_code(known.as_bytes(), "missing_or_mistyped");
    }

    #[test]
    fn oversized_before_parsing() {
        let huge = record_with(&[("nombre", json!("a".repeat(1 << 20)))]);
        assert!(matches!(
            run(&huge),
            Classification::Invalid(InvalidReason::Oversized { max: DEFAULT_MAX_RECORD_BYTES, len }) if len == huge.len()
        ));
        let mut garbage = vec![0xff; DEFAULT_MAX_RECORD_BYTES + 1];
        assert_code(&garbage, "oversized");
        garbage.pop();
        assert_code(&garbage, "not_utf8");
    }

    #[test]
    fn duplicate_and_unknown_keys() {
        let text = String::from_utf8(record_with(&[])).unwrap();
        let dup = text.replacen('{', r#"{"taps":1.0,"#, 1);
        let got = run(dup.as_bytes());
        assert!(
            matches!(&got, Classification::Invalid(InvalidReason::MissingOrMistyped(d)) if d.contains("duplicate field `taps`")),
            "{got:?}"
        );
        assert_code(&record_with(&[("canal", json!({"web": [1, 2]}))]), "short");
    }

    #[test]
    fn details_are_bounded() {
        let got = run(&record_with(&[("taps", json!("9".repeat(10_000)))]));
        let Classification::Invalid(reason) = got else {
            panic!("{got:?}")
        };
        assert_eq!(reason.code(), "missing_or_mistyped");
        assert!(reason.to_string().chars().count() < 250, "{reason}");
    }

    #[test]
    fn non_ascii_round_trip() {
        let got = run(&record_with(&[]));
        assert_eq!(
            got,
            Classification::Purchase {
                kind: Kind::Short,
                purchase: sample()
            }
        );
    }

    #[test]
    fn codes_are_distinct_snake_case() {
        let all = [
            InvalidReason::Empty,
            InvalidReason::Oversized { len: 2, max: 1 },
            InvalidReason::NotUtf8 { valid_up_to: 0 },
            InvalidReason::NotJson(String::new()),
            InvalidReason::NotObject,
            InvalidReason::MissingOrMistyped(String::new()),
            InvalidReason::BadId,
            InvalidReason::BadEdad(0),
            InvalidReason::BadEmail,
            InvalidReason::BadTaps(String::new()),
            InvalidReason::PurchaseWithoutFolio,
            InvalidReason::FolioWithoutPurchase,
            InvalidReason::BadFolio(String::new()),
            InvalidReason::EmptyField("nombre"),
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(InvalidReason::code).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|c| c
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    }

    prop_compose! {
        /// A valid record; `taps` in tenths of a minute, folio iff a purchase.
        fn valid_purchase()(
            id in "[0-9a-f]{24}",
            nombre in "[A-Za-zÁÉÍÓÚáéíóúñÑ]{1,12}",
            apellido in "[A-Za-zñ' -]{0,10}[a-z]",
            edad in 1i64..=120,
            telefono in r"\+[0-9]{2} [0-9]{3}-[0-9]{3}-[0-9]{4}",
            ciudad in "\\PC{0,20}",
            productovisto in "[a-zA-Z][a-zA-Zóñ \"\\\\/]{0,30}",
            tenths in prop::option::of(0u32..=1200),
            folio in "[A-Z]{3}-[0-9]{4}",
        ) -> Purchase {
            let taps = tenths.map(|t| f64::from(t) / 10.0);
            let bought = taps.is_some_and(|t| t > 0.0);
            Purchase {
                id,
                email: format!("{}.{}@mail.com", nombre, apellido.replace(' ', "")),
                nombre,
                apellido,
                edad,
                telefono,
                ubicacion: Ubicacion { direccion: "Calle 1".into(), ciudad, pais: "Chile".into() },
                productovisto,
                taps,
                folio: bought.then_some(folio),
            }
        }
    }

    proptest! {
        #[test]
        fn valid_records_round_trip_and_split_at_threshold(p in valid_purchase()) {
            let bytes = serde_json::to_vec(&p).unwrap();
            let purchase = p.clone();
            let expected = match p.taps {
                Some(t) if t >= DEFAULT_LONG_THRESHOLD_MIN => {
                    Classification::Purchase { kind: Kind::Long, purchase }
                }
                Some(t) if t > 0.0 => Classification::Purchase { kind: Kind::Short, purchase },
                _ => Classification::NoPurchase(purchase),
            };
            prop_assert_eq!(run(&bytes), expected);
            // Reproducible bytes: re-serializing the parsed record changes nothing.
            let parsed = Purchase::from_json(std::str::from_utf8(&bytes).unwrap()).unwrap();
            prop_assert_eq!(serde_json::to_vec(&parsed).unwrap(), bytes);
        }

        #[test]
        fn truncated_records_are_not_json(p in valid_purchase(), cut in any::<prop::sample::Index>()) {
            let bytes = serde_json::to_vec(&p).unwrap();
            let text = std::str::from_utf8(&bytes).unwrap();
            let mut at = cut.index(text.len());
            while !text.is_char_boundary(at) { at -= 1; }
            let got = run(&bytes[..at]);
            prop_assert!(matches!(code(&got), "not_json" | "empty"), "{:?}", got);
        }

        #[test]
        fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = run(&bytes);
        }

        #[test]
        fn never_panics_on_text(text in any::<String>()) {
            let _ = run(text.as_bytes());
        }

        #[test]
        fn never_panics_on_json_like_text(text in r#"[\[\]{}",:0-9a-z.eE+\- ]{0,400}"#) {
            let _ = run(text.as_bytes());
        }
    }
}
