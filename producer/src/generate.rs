//! Synthetic shoppers: every field of the record in DESIGN.md, drawn from
//! word lists embedded at compile time, reproducible from a seed.
//!
//! The same seed and ratios always give byte-identical records in the same
//! order (ChaCha8 is a portable, fixed-algorithm generator).

use common::record::{Purchase, Ubicacion};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What the producer meant a record to be; the summary counts by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    NoPurchase,
    Short,
    Long,
    Invalid,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::NoPurchase, Class::Short, Class::Long, Class::Invalid];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::NoPurchase => "no_purchase",
            Class::Short => "short",
            Class::Long => "long",
            Class::Invalid => "invalid",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Shares of all records that are no-purchase, long and deliberately invalid;
/// the rest are short purchases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    pub no_purchase: f64,
    pub long: f64,
    pub invalid: f64,
}

impl Ratios {
    /// Checks each share is in [0, 1] and that they add up to at most 1.
    pub fn new(no_purchase: f64, long: f64, invalid: f64) -> Result<Self, String> {
        for (name, v) in [
            ("--no-purchase-ratio", no_purchase),
            ("--long-ratio", long),
            ("--invalid-ratio", invalid),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        let sum = no_purchase + long + invalid;
        if sum > 1.0 + 1e-9 {
            return Err(format!(
                "--no-purchase-ratio + --long-ratio + --invalid-ratio must be at most 1 \
                 (the rest are short purchases), got {sum}"
            ));
        }
        Ok(Self {
            no_purchase,
            long,
            invalid,
        })
    }

    /// The share of short purchases.
    pub fn short(&self) -> f64 {
        (1.0 - self.no_purchase - self.long - self.invalid).max(0.0)
    }
}

/// One record ready to send: key = `id`, value = the JSON (or, for a
/// deliberately invalid record, whatever bytes exercise the dead-letter path).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    pub class: Class,
}

struct Words {
    nombres: Vec<&'static str>,
    apellidos: Vec<&'static str>,
    ciudades: Vec<&'static str>,
    direcciones: Vec<&'static str>,
    paises: Vec<&'static str>,
    productos: Vec<&'static str>,
}

fn lines(text: &'static str) -> Vec<&'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

impl Words {
    fn embedded() -> Self {
        Self {
            nombres: lines(include_str!("../data/nombres.txt")),
            apellidos: lines(include_str!("../data/apellidos.txt")),
            ciudades: lines(include_str!("../data/ciudades.txt")),
            direcciones: lines(include_str!("../data/direcciones.txt")),
            paises: lines(include_str!("../data/paises.txt")),
            productos: lines(include_str!("../data/productos.txt")),
        }
    }
}

/// The ways a deliberately invalid record is broken, one per record.
const INVALID_KINDS: usize = 9;

/// Deterministic stream of shoppers.
pub struct Generator {
    rng: ChaCha8Rng,
    ratios: Ratios,
    words: Words,
}

impl Generator {
    pub fn new(seed: u64, ratios: Ratios) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            ratios,
            words: Words::embedded(),
        }
    }

    /// The next shopper.
    pub fn next_record(&mut self) -> Record {
        let r: f64 = self.rng.gen();
        let Ratios {
            invalid,
            no_purchase,
            long,
        } = self.ratios;
        let class = if r < invalid {
            Class::Invalid
        } else if r < invalid + no_purchase {
            Class::NoPurchase
        } else if r < invalid + no_purchase + long {
            Class::Long
        } else {
            Class::Short
        };
        let purchase = self.purchase(class);
        let value = match class {
            Class::Invalid => self.break_record(purchase.clone()),
            _ => serde_json::to_vec(&purchase).expect("a Purchase always serializes"),
        };
        Record {
            key: purchase.id,
            value,
            class,
        }
    }

    fn pick(&mut self, list: fn(&Words) -> &Vec<&'static str>) -> &'static str {
        list(&self.words)
            .choose(&mut self.rng)
            .copied()
            .expect("embedded word lists are not empty")
    }

    fn purchase(&mut self, class: Class) -> Purchase {
        let id: String = (0..24)
            .map(|_| char::from_digit(self.rng.gen_range(0..16), 16).expect("digit < 16"))
            .collect();
        let nombre = self.pick(|w| &w.nombres);
        let apellido = self.pick(|w| &w.apellidos);
        let email = format!("{}.{}@mail.com", ascii_fold(nombre), ascii_fold(apellido));
        let telefono = format!(
            "+{:02} {:03}-{:03}-{:04}",
            self.rng.gen_range(10..100),
            self.rng.gen_range(100..1000),
            self.rng.gen_range(0..1000),
            self.rng.gen_range(0..10000)
        );
        let direccion = format!(
            "{} {}",
            self.pick(|w| &w.direcciones),
            self.rng.gen_range(1..10000)
        );
        let ubicacion = Ubicacion {
            direccion,
            ciudad: self.pick(|w| &w.ciudades).to_owned(),
            pais: self.pick(|w| &w.paises).to_owned(),
        };
        let productovisto = self.pick(|w| &w.productos).to_owned();
        let edad = self.rng.gen_range(18..=85);
        // Tenths of a minute, so taps always has exactly one decimal.
        let (taps, folio) = match class {
            Class::NoPurchase => {
                // The seed writes both 0 and null for shoppers who did not buy.
                let taps = if self.rng.gen_bool(0.5) {
                    Some(0.0)
                } else {
                    None
                };
                (taps, None)
            }
            Class::Short | Class::Invalid => (Some(self.tenths(1..300)), Some(self.folio())),
            Class::Long => (Some(self.tenths(300..=1800)), Some(self.folio())),
        };
        Purchase {
            id,
            nombre: nombre.to_owned(),
            apellido: apellido.to_owned(),
            edad,
            email,
            telefono,
            ubicacion,
            productovisto,
            taps,
            folio,
        }
    }

    fn tenths<R: rand::distributions::uniform::SampleRange<u32>>(&mut self, range: R) -> f64 {
        f64::from(self.rng.gen_range(range)) / 10.0
    }

    fn folio(&mut self) -> String {
        let letters: String = (0..3)
            .map(|_| char::from(b'A' + self.rng.gen_range(0..26u8)))
            .collect();
        format!("{letters}-{:04}", self.rng.gen_range(0..10000))
    }

    /// Breaks a valid purchase in one of several ways the workers must route
    /// to the dead-letter topic.
    fn break_record(&mut self, mut p: Purchase) -> Vec<u8> {
        let json = |p: &Purchase| serde_json::to_vec(p).expect("a Purchase always serializes");
        match self.rng.gen_range(0..INVALID_KINDS) {
            0 => {
                p.folio = None; // a purchase without a folio
                json(&p)
            }
            1 => {
                p.taps = Some(0.0); // a folio without a purchase
                json(&p)
            }
            2 => {
                p.taps = p.taps.map(|t| -t); // negative minutes
                json(&p)
            }
            3 => {
                p.folio = p.folio.map(|f| f.to_lowercase()); // malformed folio
                json(&p)
            }
            4 => {
                p.edad = 250; // absurd age
                json(&p)
            }
            5 => {
                // taps as a string
                let mut v = serde_json::to_value(&p).expect("a Purchase always serializes");
                v["taps"] = serde_json::Value::String(format!("{:.1}", p.taps.unwrap_or(1.0)));
                serde_json::to_vec(&v).expect("a Value always serializes")
            }
            6 => {
                let mut bytes = json(&p); // truncated JSON
                bytes.truncate(bytes.len() / 2);
                bytes
            }
            7 => {
                let mut bytes = json(&p); // not UTF-8
                bytes.insert(1, 0xff);
                bytes
            }
            _ => Vec::new(), // empty value
        }
    }
}

/// Lower-case ASCII for e-mail addresses: "Sofía" -> "sofia", "Muñoz" -> "munoz"
/// (`deunicode` transliterates; what is then not a letter or digit is left out).
pub fn ascii_fold(s: &str) -> String {
    deunicode::deunicode(s)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::classify::{classify, Classification, Kind, Rules};

    fn ratios() -> Ratios {
        Ratios::new(0.3, 0.2, 0.05).unwrap()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let take = |seed| {
            let mut g = Generator::new(seed, ratios());
            (0..500).map(|_| g.next_record()).collect::<Vec<_>>()
        };
        assert_eq!(take(42), take(42));
        assert_ne!(take(42), take(43));
    }

    #[test]
    fn every_record_classifies_as_intended() {
        let mut g = Generator::new(7, ratios());
        let rules = Rules::default();
        for _ in 0..5000 {
            let r = g.next_record();
            let got = classify(&r.value, &rules);
            let ok = match (r.class, &got) {
                (Class::NoPurchase, Classification::NoPurchase(_)) => true,
                (Class::Short, Classification::Purchase { kind, .. }) => *kind == Kind::Short,
                (Class::Long, Classification::Purchase { kind, .. }) => *kind == Kind::Long,
                (Class::Invalid, Classification::Invalid(_)) => true,
                _ => false,
            };
            assert!(ok, "{:?} classified as {got:?}", r.class);
            assert_eq!(r.key.len(), 24);
        }
    }

    #[test]
    fn fields_have_the_documented_shapes() {
        let mut g = Generator::new(1, Ratios::new(0.0, 0.0, 0.0).unwrap());
        for _ in 0..200 {
            let r = g.next_record();
            let p = Purchase::from_json(std::str::from_utf8(&r.value).unwrap()).unwrap();
            assert_eq!(p.id, r.key);
            assert!(p.id.chars().all(|c| c.is_ascii_hexdigit()));
            assert!(p.email.ends_with("@mail.com") && p.email.is_ascii());
            let t = p.telefono.as_bytes();
            assert_eq!(t.len(), 16, "{}", p.telefono);
            assert_eq!((t[0], t[3], t[7], t[11]), (b'+', b' ', b'-', b'-'));
            let taps = p.taps.unwrap();
            assert!((0.1..30.0).contains(&taps));
            assert_eq!((taps * 10.0).round() / 10.0, taps);
        }
    }

    #[test]
    fn ratios_are_checked() {
        assert!(Ratios::new(0.6, 0.5, 0.0).is_err());
        assert!(Ratios::new(-0.1, 0.0, 0.0).is_err());
        assert!((Ratios::new(0.3, 0.2, 0.1).unwrap().short() - 0.4).abs() < 1e-12);
    }

    #[test]
    fn folding() {
        assert_eq!(ascii_fold("Sofía"), "sofia");
        assert_eq!(ascii_fold("Muñoz"), "munoz");
        assert_eq!(ascii_fold("Álvarez"), "alvarez");
    }
}
