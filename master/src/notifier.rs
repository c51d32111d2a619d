//! The console notifier: the product's output. One line per notification
//! on stdout, through a buffer that is flushed whenever the queue runs dry
//! and before every checkpoint, so a checkpoint (and so a commit) never
//! covers a line that is not yet written. The only code that writes to
//! stdout; logs go to stderr.
//!
//! Runs on a blocking thread: a slow reader of stdout stalls this thread,
//! then the bounded queue, then the coordinator, then the workers.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};

use common::classify::Kind;
use common::record::{Purchase, Ubicacion};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::config::NotifyFormat;
use crate::coordinator::{now_ms, Notification};

/// Capacity of the queue into the notifier, in batches.
pub const QUEUE_CAPACITY: usize = 64;

/// Positions (next offset per partition) whose notifications are all written.
pub type Checkpoint = BTreeMap<i32, i64>;

/// What the coordinator hands the console.
#[derive(Debug)]
pub enum NotifierMsg {
    /// Notifications of one accepted batch, in offset order.
    Notify(Vec<Notification>),
    /// Flush, then publish these positions for the committer.
    Checkpoint(Checkpoint),
}

/// Writes notifications until the queue closes. Every checkpoint is
/// published on `flushed` after stdout is flushed. A write error ends it: a
/// notifier that cannot write must not let offsets be committed.
pub fn run<W: Write>(
    mut queue: mpsc::Receiver<NotifierMsg>,
    out: W,
    format: NotifyFormat,
    flushed: watch::Sender<Option<Checkpoint>>,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut line = String::new();
    while let Some(msg) = queue.blocking_recv() {
        let mut next = Some(msg);
        // Drain what is queued, then flush once: one syscall per burst.
        while let Some(msg) = next {
            match msg {
                NotifierMsg::Notify(batch) => {
                    let now = now_ms();
                    for n in &batch {
                        line.clear();
                        render(format, n, now, &mut line);
                        line.push('\n');
                        out.write_all(line.as_bytes())?;
                    }
                }
                NotifierMsg::Checkpoint(positions) => {
                    out.flush()?;
                    flushed.send_replace(Some(positions));
                }
            }
            next = queue.try_recv().ok();
        }
        out.flush()?;
    }
    out.flush()
}

/// One notification as one line (without the newline), into `line`.
pub fn render(format: NotifyFormat, n: &Notification, now_ms: i64, line: &mut String) {
    match format {
        NotifyFormat::Text => line.push_str(&common::notify::render_text(n.kind, &purchase(n))),
        NotifyFormat::Json => {
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
            line.push_str(&serde_json::to_string(&json).expect("plain struct serializes"));
        }
    }
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
    use std::sync::{Arc, Mutex};

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
        render(NotifyFormat::Text, &sample(Kind::Short), 0, &mut line);
        assert_eq!(
            line,
            "¡Gracias, Valentina! Tu compra de Colchón (folio QZX-0042) quedó lista en solo \
             12.3 minutos. ¡Sigue aprovechando las ofertas del Cyberday!"
        );
    }

    #[test]
    fn json_has_exactly_the_documented_keys_in_order() {
        let mut line = String::new();
        render(NotifyFormat::Json, &sample(Kind::Long), 1_250, &mut line);
        assert_eq!(
            line,
            r#"{"kind":"long","folio":"QZX-0042","nombre":"Valentina","email":"valentina.munoz@mail.com","productovisto":"Colchón","taps":12.3,"partition":2,"offset":41,"worker":"w-1","latency_ms":250}"#
        );
        // Unknown timestamps and clock skew never give a negative latency.
        let mut n = sample(Kind::Short);
        n.timestamp_ms = 5_000;
        line.clear();
        render(NotifyFormat::Json, &n, 1_000, &mut line);
        assert!(line.ends_with(r#""latency_ms":0}"#), "{line}");
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
    fn checkpoints_are_published_after_the_lines_before_them() {
        let (tx, rx) = mpsc::channel(8);
        let (flushed_tx, flushed_rx) = watch::channel(None);
        let out = Shared::default();
        tx.try_send(NotifierMsg::Notify(vec![
            sample(Kind::Short),
            sample(Kind::Long),
        ]))
        .unwrap();
        tx.try_send(NotifierMsg::Checkpoint([(2, 42)].into()))
            .unwrap();
        drop(tx);
        run(rx, out.clone(), NotifyFormat::Text, flushed_tx).unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("Lamentamos la espera, Valentina"));
        assert_eq!(*flushed_rx.borrow(), Some([(2, 42)].into()));
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
    fn a_failed_write_publishes_no_checkpoint() {
        let (tx, rx) = mpsc::channel(8);
        let (flushed_tx, flushed_rx) = watch::channel(None);
        tx.try_send(NotifierMsg::Notify(vec![sample(Kind::Short)]))
            .unwrap();
        tx.try_send(NotifierMsg::Checkpoint([(2, 42)].into()))
            .unwrap();
        drop(tx);
        assert!(run(rx, Broken, NotifyFormat::Text, flushed_tx).is_err());
        assert_eq!(*flushed_rx.borrow(), None);
    }
}
