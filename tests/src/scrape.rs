//! Reading `--metrics-listen` as Prometheus and a browser would: a plain
//! HTTP/1.1 GET over a `TcpStream` (no client library, so nothing of the
//! server's stack is shared), a parser of the text exposition format, and
//! Prometheus's own checker (`promtool check metrics`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no end of headers in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One scrape: every sample by its series (`name{labels}` as written).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: BTreeMap<String, f64>,
    /// `# TYPE` of each family.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Scrapes `/metrics` on `port`; panics unless it answers 200 with the
    /// text format.
    pub fn get(port: u16) -> Self {
        let (status, body) = http_get(port, "/metrics")
            .unwrap_or_else(|e| panic!("scraping 127.0.0.1:{port}/metrics: {e}"));
        assert_eq!(status, 200, "/metrics on {port} answered {status}: {body}");
        Self::parse(&body)
    }

    /// The body of `/metrics` on `port`, unparsed; panics unless it answers 200.
    pub fn text(port: u16) -> String {
        let (status, body) = http_get(port, "/metrics")
            .unwrap_or_else(|e| panic!("scraping 127.0.0.1:{port}/metrics: {e}"));
        assert_eq!(status, 200, "/metrics on {port} answered {status}: {body}");
        body
    }

    /// Parses a text exposition; panics on a malformed line.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                s.types.insert(name.into(), kind.into());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample without a value: {line}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|e| panic!("bad value in {line}: {e}")),
            };
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line}"
            );
            assert!(
                s.samples.insert(series.to_owned(), value).is_none(),
                "series {series} twice"
            );
        }
        s
    }

    /// The value of one series, e.g. `m{kind="short"}`; 0 when absent.
    pub fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// Every series of family `name`, by its label text (`kind="short"`;
    /// empty for an unlabelled sample).
    pub fn family(&self, name: &str) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter_map(|(series, v)| {
                let labels = match series.strip_prefix(name)? {
                    "" => "",
                    rest => rest.strip_prefix('{')?.strip_suffix('}')?,
                };
                Some((labels.to_owned(), *v))
            })
            .collect()
    }

    /// The sum over every series of family `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.family(name).values().sum()
    }
}

/// Runs `promtool check metrics` on `text` (a scrape of `what`); panics with
/// what promtool said unless it found the exposition valid and lint-free.
pub fn promtool_check(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool not runnable ({e}): run the tests with deploy/local/test.sh, which \
                 installs it, or: go install github.com/prometheus/prometheus/cmd/promtool@{}",
                PROMTOOL_VERSION
            )
        });
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("writing the scrape to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed on the {what}'s scrape ({}):\n{}{}\n--- the scrape:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// The promtool `deploy/local/prereqs.sh` installs (the Go module's version).
pub const PROMTOOL_VERSION: &str = "v0.316.0";
