//! One notification as the master writes it to the notifications topic
//! (key = folio, value = the JSON object of `--notify-format json`), parsed
//! and checked; a value that is not one is a [`Malformed`] with a reason
//! code, for the dead-letter topic.

use common::classify::{is_folio, Kind};
use common::record::{Purchase, Ubicacion};
use serde::Deserialize;

/// What the delivery service needs of a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: Kind,
    pub folio: String,
    pub nombre: String,
    pub email: String,
    pub productovisto: String,
    pub taps: f64,
}

/// Why a notifications record cannot be delivered as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the value is not UTF-8")]
    NotUtf8,
    #[error("the value is not a JSON notification object: {0}")]
    NotJson(String),
    #[error("unknown kind {0:?} (short or long)")]
    BadKind(String),
    #[error("the folio is not ABC-1234")]
    BadFolio,
    #[error("the record's key is not its folio")]
    KeyMismatch,
    #[error("taps is not a finite positive number")]
    BadTaps,
}

impl Malformed {
    /// Stable code, for the `cyberday.reason` header and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Malformed::NotUtf8 => "not_utf8",
            Malformed::NotJson(_) => "not_json",
            Malformed::BadKind(_) => "bad_kind",
            Malformed::BadFolio => "bad_folio",
            Malformed::KeyMismatch => "key_mismatch",
            Malformed::BadTaps => "bad_taps",
        }
    }
}

#[derive(Deserialize)]
struct Wire {
    kind: String,
    folio: String,
    nombre: String,
    email: String,
    productovisto: String,
    taps: f64,
}

impl Notice {
    /// Parses one record of the notifications topic.
    pub fn parse(key: Option<&[u8]>, value: &[u8]) -> Result<Self, Malformed> {
        let text = std::str::from_utf8(value).map_err(|_| Malformed::NotUtf8)?;
        let wire: Wire = serde_json::from_str(text).map_err(|e| {
            // serde's message may quote the value: keep only its category and place.
            Malformed::NotJson(format!(
                "{:?} at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let kind = match wire.kind.as_str() {
            "short" => Kind::Short,
            "long" => Kind::Long,
            _ => return Err(Malformed::BadKind(wire.kind.chars().take(20).collect())),
        };
        if !is_folio(&wire.folio) {
            return Err(Malformed::BadFolio);
        }
        if key.is_some_and(|k| k != wire.folio.as_bytes()) {
            return Err(Malformed::KeyMismatch);
        }
        if !(wire.taps.is_finite() && wire.taps > 0.0) {
            return Err(Malformed::BadTaps);
        }
        Ok(Self {
            kind,
            folio: wire.folio,
            nombre: wire.nombre,
            email: wire.email,
            productovisto: wire.productovisto,
            taps: wire.taps,
        })
    }

    /// The purchase fields the common notification text uses.
    pub fn purchase(&self) -> Purchase {
        Purchase {
            id: String::new(),
            nombre: self.nombre.clone(),
            apellido: String::new(),
            edad: 0,
            email: self.email.clone(),
            telefono: String::new(),
            ubicacion: Ubicacion {
                direccion: String::new(),
                ciudad: String::new(),
                pais: String::new(),
            },
            productovisto: self.productovisto.clone(),
            taps: Some(self.taps),
            folio: Some(self.folio.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"kind":"short","folio":"QZX-0042","nombre":"Valentina","email":"valentina.munoz@mail.com","productovisto":"Colchón","taps":12.3,"partition":2,"offset":41,"worker":"w-1","latency_ms":250}"#;

    #[test]
    fn the_masters_object_parses() {
        let n = Notice::parse(Some(b"QZX-0042"), GOOD.as_bytes()).unwrap();
        assert_eq!(n.kind, Kind::Short);
        assert_eq!(n.folio, "QZX-0042");
        assert_eq!(n.email, "valentina.munoz@mail.com");
        assert_eq!(n.productovisto, "Colchón");
        assert_eq!(n.purchase().folio.as_deref(), Some("QZX-0042"));
    }

    #[test]
    fn malformed_values_have_a_reason() {
        /// Value, key, expected reason code.
        type Case<'a> = (&'a [u8], Option<&'a [u8]>, &'a str);
        let cases: &[Case] = &[
            (b"\xff\xfe", None, "not_utf8"),
            (b"", None, "not_json"),
            (b"[1,2]", None, "not_json"),
            (br#"{"kind":"short"}"#, None, "not_json"),
            (
                &GOOD.replace("short", "medium").into_bytes(),
                None,
                "bad_kind",
            ),
            (
                &GOOD.replace("QZX-0042", "qzx-42").into_bytes(),
                None,
                "bad_folio",
            ),
            (GOOD.as_bytes(), Some(b"ABC-0001"), "key_mismatch"),
            (&GOOD.replace("12.3", "-1").into_bytes(), None, "bad_taps"),
        ];
        for (value, key, code) in cases {
            let e = Notice::parse(*key, value).unwrap_err();
            assert_eq!(e.code(), *code, "{:?}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn a_reason_never_quotes_the_address() {
        let v = GOOD.replace("12.3", "\"valentina.munoz@mail.com\"");
        let e = Notice::parse(None, v.as_bytes()).unwrap_err().to_string();
        assert!(!e.contains("valentina"), "{e}");
    }
}
