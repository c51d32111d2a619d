//! The purchase record as it travels through `DataTopic`: its fields, their
//! order on the wire, and the one strict way to parse it from JSON.
//!
//! Serialization follows field declaration order, so two producers building
//! the same `Purchase` write the same bytes. Unknown fields are tolerated on
//! input; duplicate keys and non-object values are rejected.

use std::{fmt, marker::PhantomData};

use serde::{
    de::{value::MapAccessDeserializer, MapAccess, Visitor},
    Deserialize, Deserializer, Serialize,
};

/// Where the shopper is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ubicacion {
    pub direccion: String,
    pub ciudad: String,
    pub pais: String,
}

/// One shopper's visit, bought or not. Field order is the wire order.
///
/// Parse records with [`Purchase::from_json`]: the derived `Deserialize`
/// alone would also accept the fields as a JSON array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    /// 24 hexadecimal characters; also the Kafka key.
    pub id: String,
    pub nombre: String,
    pub apellido: String,
    pub edad: i64,
    pub email: String,
    pub telefono: String,
    #[serde(deserialize_with = "object")]
    pub ubicacion: Ubicacion,
    pub productovisto: String,
    /// Minutes the purchase took, one decimal; `None` or `0.0` means the
    /// shopper did not buy. Written as `null` when absent.
    pub taps: Option<f64>,
    /// `ABC-1234`, present only when there was a purchase; written as `null`
    /// otherwise.
    pub folio: Option<String>,
}

impl Purchase {
    /// Parses one record: exactly one JSON object, nothing but whitespace
    /// around it.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        let mut de = serde_json::Deserializer::from_str(text);
        let purchase = object(&mut de)?;
        de.end()?;
        Ok(purchase)
    }
}

/// Deserializes `T` from a map only. Derived structs also accept a sequence of
/// their fields in order (`["id", "nombre", ...]`), which is not a record.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(de: D) -> Result<T, D::Error> {
    struct ObjectOnly<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    de.deserialize_map(ObjectOnly(PhantomData))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid short purchase, as the producer would build it.
    pub(crate) fn sample() -> Purchase {
        Purchase {
            id: "65f1c0ffee0123456789abcd".into(),
            nombre: "Valentina".into(),
            apellido: "Rojas".into(),
            edad: 34,
            email: "valentina.rojas@mail.com".into(),
            telefono: "+56 912-345-6789".into(),
            ubicacion: Ubicacion {
                direccion: "Av. Providencia 1234".into(),
                ciudad: "Santiago".into(),
                pais: "Chile".into(),
            },
            productovisto: "Colchón".into(),
            taps: Some(12.3),
            folio: Some("QZX-0042".into()),
        }
    }

    #[test]
    fn serializes_in_field_order_with_nulls() {
        let p = Purchase {
            taps: None,
            folio: None,
            ..sample()
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"id":"65f1c0ffee0123456789abcd","nombre":"Valentina","apellido":"Rojas","edad":34,"email":"valentina.rojas@mail.com","telefono":"+56 912-345-6789","ubicacion":{"direccion":"Av. Providencia 1234","ciudad":"Santiago","pais":"Chile"},"productovisto":"Colchón","taps":null,"folio":null}"#
        );
    }

    #[test]
    fn taps_keep_one_decimal() {
        for (taps, text) in [(12.3, "12.3"), (0.0, "0.0"), (30.0, "30.0")] {
            let json = serde_json::to_string(&Purchase {
                taps: Some(taps),
                ..sample()
            })
            .unwrap();
            assert!(json.contains(&format!(r#""taps":{text},"#)), "{json}");
        }
    }

    #[test]
    fn round_trips_non_ascii() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert!(json.contains("\"Colchón\""));
        assert_eq!(Purchase::from_json(&json).unwrap(), sample());
    }

    #[test]
    fn absent_options_are_none() {
        let mut v = serde_json::to_value(sample()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("taps");
        obj.remove("folio");
        let p = Purchase::from_json(&v.to_string()).unwrap();
        assert_eq!((p.taps, p.folio), (None, None));
    }

    #[test]
    fn rejects_arrays_in_place_of_objects() {
        let p = sample();
        let as_array = serde_json::json!([
            p.id,
            p.nombre,
            p.apellido,
            p.edad,
            p.email,
            p.telefono,
            p.ubicacion,
            p.productovisto,
            p.taps,
            p.folio
        ]);
        assert!(Purchase::from_json(&as_array.to_string()).is_err());

        let mut v = serde_json::to_value(&p).unwrap();
        v["ubicacion"] = serde_json::json!(["a", "b", "c"]);
        assert!(Purchase::from_json(&v.to_string()).is_err());
    }

    #[test]
    fn rejects_trailing_data() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert!(Purchase::from_json(&format!(" {json}\n")).is_ok());
        assert!(Purchase::from_json(&format!("{json}{json}")).is_err());
    }
}
