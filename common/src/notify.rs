//! The customer-facing notification text (Spanish): one line per purchase
//! for the console, and the e-mail's subject and HTML part.

use std::borrow::Cow;

use crate::{classify::Kind, record::Purchase};

/// Renders the notification for a classified purchase, addressed to
/// `nombre` and naming the product, the folio and the minutes it took.
///
/// Always exactly one line: control characters and line separators in the
/// record's fields are replaced by spaces.
pub fn render_text(kind: Kind, p: &Purchase) -> String {
    let nombre = one_line(&p.nombre);
    let producto = one_line(&p.productovisto);
    let folio = one_line(p.folio.as_deref().unwrap_or("sin folio"));
    let taps = p.taps.unwrap_or(0.0);
    match kind {
        Kind::Short => format!(
            "¡Gracias, {nombre}! Tu compra de {producto} (folio {folio}) quedó lista en solo \
             {taps:.1} minutos. ¡Sigue aprovechando las ofertas del Cyberday!"
        ),
        Kind::Long => format!(
            "Lamentamos la espera, {nombre}: tu compra de {producto} (folio {folio}) tardó \
             {taps:.1} minutos. Cuéntanos qué salió mal: nos pondremos en \
             contacto contigo."
        ),
    }
}

/// The e-mail subject for a classified purchase, naming the customer and
/// the folio; one line.
pub fn render_subject(kind: Kind, p: &Purchase) -> String {
    let nombre = one_line(&p.nombre);
    let folio = one_line(p.folio.as_deref().unwrap_or("sin folio"));
    match kind {
        Kind::Short => format!("¡Gracias por tu compra, {nombre}! Folio {folio}"),
        Kind::Long => format!("Lamentamos la espera, {nombre}: tu compra {folio}"),
    }
}

/// The e-mail's HTML part: the same sentence as [`render_text`], every
/// field escaped, in a small document.
pub fn render_html(kind: Kind, p: &Purchase) -> String {
    let title = escape_html(&render_subject(kind, p));
    let text = escape_html(&render_text(kind, p));
    format!(
        "<!DOCTYPE html>\n<html lang=\"es\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><p>{text}</p>\n<p>Equipo Cyberday</p></body></html>\n"
    )
}

/// `&`, `<`, `>`, `"` and `'` as HTML entities.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn one_line(field: &str) -> Cow<'_, str> {
    let breaks = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if field.contains(breaks) {
        Cow::Owned(field.replace(breaks, " "))
    } else {
        Cow::Borrowed(field)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::tests::sample;

    #[test]
    fn short_text() {
        assert_eq!(
            render_text(Kind::Short, &sample()),
            "¡Gracias, Valentina! Tu compra de Colchón (folio QZX-0042) quedó lista en solo \
             12.3 minutos. ¡Sigue aprovechando las ofertas del Cyberday!"
        );
    }

    #[test]
    fn long_text() {
        let p = Purchase {
            taps: Some(45.0),
            ..sample()
        };
        assert_eq!(
            render_text(Kind::Long, &p),
            "Lamentamos la espera, Valentina: tu compra de Colchón (folio QZX-0042) tardó \
             45.0 minutos. Cuéntanos qué salió mal: nos pondremos en contacto \
             contigo."
        );
    }

    #[test]
    fn subject_and_html() {
        let p = sample();
        assert_eq!(
            render_subject(Kind::Short, &p),
            "¡Gracias por tu compra, Valentina! Folio QZX-0042"
        );
        assert_eq!(
            render_subject(Kind::Long, &p),
            "Lamentamos la espera, Valentina: tu compra QZX-0042"
        );
        let html = render_html(Kind::Short, &p);
        assert!(html.contains("<p>¡Gracias, Valentina! Tu compra de Colchón (folio QZX-0042)"));
        let evil = Purchase {
            nombre: "<script>\"x\"&'".into(),
            ..sample()
        };
        let html = render_html(Kind::Long, &evil);
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;&quot;x&quot;&amp;&#39;"),
            "{html}"
        );
    }

    #[test]
    fn control_characters_never_break_the_line() {
        let p = Purchase {
            nombre: "Ana\nMaría\r".into(),
            productovisto: "Sofá\u{2028}cama\t\u{1b}[31m".into(),
            folio: Some("ABC-\u{0}1234".into()),
            ..sample()
        };
        for kind in [Kind::Short, Kind::Long] {
            let text = render_text(kind, &p);
            assert!(text.contains("Ana María "), "{text}");
            assert!(
                !text.chars().any(|c| c.is_control() || c == '\u{2028}'),
                "{text}"
            );
        }
    }

    proptest! {
        #[test]
        fn one_line_naming_the_purchase(
            nombre in "\\PC{1,20}",
            productovisto in "\\PC{1,40}",
            folio in "[A-Z]{3}-[0-9]{4}",
            tenths in 1u32..100_000,
            long in any::<bool>(),
            noise in "\\PC*[\n\r\u{85}\u{2028}]\\PC*",
        ) {
            let kind = if long { Kind::Long } else { Kind::Short };
            let p = Purchase {
                nombre: nombre.replace(['\u{2028}', '\u{2029}'], ""),
                productovisto: productovisto.replace(['\u{2028}', '\u{2029}'], ""),
                folio: Some(folio.clone()),
                taps: Some(f64::from(tenths) / 10.0),
                ..sample()
            };
            let text = render_text(kind, &p);
            prop_assert_eq!(text.lines().count(), 1);
            prop_assert!(text.contains(&p.nombre));
            prop_assert!(text.contains(&p.productovisto));
            prop_assert!(text.contains(&folio));

            let noisy = Purchase { nombre: noise.clone(), productovisto: noise, ..p };
            let text = render_text(kind, &noisy);
            prop_assert_eq!(text.lines().count(), 1);
            let breaks = ['\n', '\r', '\u{85}', '\u{2028}'];
            prop_assert!(!text.contains(breaks), "{:?}", text);
        }
    }
}
