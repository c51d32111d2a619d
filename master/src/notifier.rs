//! The console notifier: one line per notification on stdout, printed as
//! soon as the coordinator accepts the result, through a buffer flushed
//! whenever the queue runs dry. The only code that writes to stdout; logs go
//! to stderr.
//!
//! The console is a view: the durable record is the notifications topic,
//! written in Kafka transactions (see [`crate::output`]). Around a crash or
//! an aborted transaction, the console may repeat the lines printed since
//! the last commit; the topic never does.
//!
//! Runs on a blocking thread: a slow reader of stdout stalls this thread,
//! then the bounded queue, then the coordinator, then the workers.

use std::io::{self, BufWriter, Write};
use std::sync::Arc;

use common::classify::Kind;
use common::record::{Purchase, Ubicacion};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::NotifyFormat;
use crate::coordinator::Notification;

/// Capacity of the queue into the notifier, in batches.
pub const QUEUE_CAPACITY: usize = 64;

/// An accepted notification with its JSON object, rendered once: the
/// console's `json` lines and the notifications topic's values are the
/// same bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub notification: Notification,
    pub json: String,
}

impl Notice {
    /// Renders `n` as accepted at `now_ms`.
    pub fn new(notification: Notification, now_ms: i64) -> Self {
        let json = render_json(&notification, now_ms);
        Self { notification, json }
    }
}

/// The notifications of one accepted batch, in offset order, shared by the
/// console and the transactional output.
pub type Notices = Arc<[Notice]>;

/// Writes notifications until the queue closes. A write error ends it (and
/// the master: a product that cannot show its output should not run).
pub fn run<W: Write>(
    mut queue: mpsc::Receiver<Notices>,
    out: W,
    format: NotifyFormat,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut line = String::new();
    while let Some(batch) = queue.blocking_recv() {
        let mut next = Some(batch);
        // Drain what is queued, then flush once: one syscall per burst.
        while let Some(batch) = next {
            for notice in batch.iter() {
                line.clear();
                render(format, notice, &mut line);
                line.push('\n');
                out.write_all(line.as_bytes())?;
            }
            next = queue.try_recv().ok();
        }
        out.flush()?;
    }
    out.flush()
}

/// One notification as one line (without the newline), into `line`.
pub fn render(format: NotifyFormat, notice: &Notice, line: &mut String) {
    match format {
        NotifyFormat::Text => line.push_str(&common::notify::render_text(
            notice.notification.kind,
            &purchase(&notice.notification),
        )),
        NotifyFormat::Json => line.push_str(&notice.json),
    }
}

/// The JSON object of `--notify-format json` (and of the notifications
/// topic); `latency_ms` is from the record's timestamp to `now_ms`.
pub fn render_json(n: &Notification, now_ms: i64) -> String {
    let latency_ms = if n.timestamp_ms > 0 {
        (now_ms - n.timestamp_ms).max(0)
    } else {
        0
    };
    let p = &n.purchase;
    let json = JsonLine {
        kind: n.kind,
        folio: &p.folio,
        nombre: &p.nombre,
        email: &p.email,
        productovisto: &p.productovisto,
        taps: p.taps,
        partition: n.partition,
        offset: n.offset,
        worker: &n.worker,
        latency_ms,
    };
    serde_json::to_string(&json).expect("plain struct serializes")
}

/// The `--notify-format json` line; field order is the output order.
#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(serialize_with = "kind_str")]
    kind: Kind,
    folio: &'a str,
    nombre: &'a str,
    email: &'a str,
    productovisto: &'a str,
    taps: f64,
    partition: i32,
    offset: i64,
    worker: &'a str,
    latency_ms: i64,
}

fn kind_str<S: serde::Serializer>(kind: &Kind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

/// The record fields the notification text uses, from the worker's summary.
fn purchase(n: &Notification) -> Purchase {
    let p = &n.purchase;
    Purchase {
        id: p.id.clone(),
        nombre: p.nombre.clone(),
        apellido: p.apellido.clone(),
        edad: 0,
        email: p.email.clone(),
        telefono: String::new(),
        ubicacion: Ubicacion {
            direccion: String::new(),
            ciudad: String::new(),
            pais: String::new(),
        },
        productovisto: p.productovisto.clone(),
        taps: Some(p.taps),
        folio: (!p.folio.is_empty()).then(|| p.folio.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use common::pb::PurchaseSummary;

    use super::*;

    fn sample(kind: Kind) -> Notification {
        Notification {
            kind,
            purchase: PurchaseSummary {
                id: "65f1c0ffee0123456789abcd".into(),
                nombre: "Valentina".into(),
                apellido: "Muñoz".into(),
                email: "valentina.munoz@mail.com".into(),
                productovisto: "Colchón".into(),
                folio: "QZX-0042".into(),
                taps: 12.3,
            },
            partition: 2,
            offset: 41,
            worker: "w-1".into(),
            timestamp_ms: 1_000,
        }
    }

    #[test]
    fn text_is_the_common_sentence() {
        let mut line = String::new();
        render(
            NotifyFormat::Text,
            &Notice::new(sample(Kind::Short), 0),
            &mut line,
        );
        assert_eq!(
            line,
            "¡Gracias, Valentina! Tu compra de Colchón (folio QZX-0042) quedó lista en solo \
             12.3 minutos. ¡Sigue aprovechando las ofertas del Cyberday!"
        );
    }

    #[test]
    fn json_has_exactly_the_documented_keys_in_order() {
        let notice = Notice::new(sample(Kind::Long), 1_250);
        assert_eq!(
            notice.json,
            r#"{"kind":"long","folio":"QZX-0042","nombre":"Valentina","email":"valentina.munoz@mail.com","productovisto":"Colchón","taps":12.3,"partition":2,"offset":41,"worker":"w-1","latency_ms":250}"#
        );
        let mut line = String::new();
        render(NotifyFormat::Json, &notice, &mut line);
        assert_eq!(line, notice.json, "the console prints the topic's value");
        // Unknown timestamps and clock skew never give a negative latency.
        let mut n = sample(Kind::Short);
        n.timestamp_ms = 5_000;
        assert!(render_json(&n, 1_000).ends_with(r#""latency_ms":0}"#));
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_notification_is_one_line_in_order() {
        let (tx, rx) = mpsc::channel(8);
        let out = Shared::default();
        let batch: Notices = [sample(Kind::Short), sample(Kind::Long)]
            .into_iter()
            .map(|n| Notice::new(n, 0))
            .collect();
        tx.try_send(batch).unwrap();
        drop(tx);
        run(rx, out.clone(), NotifyFormat::Text).unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("Lamentamos la espera, Valentina"));
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
        }
    }

    #[test]
    fn a_failed_write_ends_the_notifier() {
        let (tx, rx) = mpsc::channel(8);
        tx.try_send(Arc::from(vec![Notice::new(sample(Kind::Short), 0)]))
            .unwrap();
        drop(tx);
        assert!(run(rx, Broken, NotifyFormat::Text).is_err());
    }
}
