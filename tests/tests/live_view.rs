//! The master's live page in a real headless browser (Debian's `chromium`):
//! master + 2 workers with records flowing; the page, after its scripts ran
//! against `/api/status`, shows both workers, every partition with its lag,
//! the totals and the three charts with lines in them; and a screenshot of
//! it is a real picture (right size, many colours, not one flat colour).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 1000;

#[test]
fn the_live_page_shows_workers_partitions_lag_and_charts() {
    let chromium = chromium();
    let mut p = Pipeline::start("e2e-live", 6);
    p.start_worker("w1");
    p.start_worker("w2");
    let mut producer = p.produce_in_background(4_000, 400, 5);
    // A few seconds of history for the charts, with records flowing.
    wait_for_samples(&p, 5, Duration::from_secs(60));

    let url = format!("http://127.0.0.1:{}/", p.metrics_port);
    let dom = run_chromium(&chromium, &p.dir, &["--dump-dom"], &url);
    let shot = p.dir.join("live.png");
    run_chromium(
        &chromium,
        &p.dir,
        &[&format!("--screenshot={}", shot.display())],
        &url,
    );
    let _ = producer.child.wait();
    p.stop();
    std::fs::write(p.dir.join("live.html"), &dom).unwrap();
    // What the scripts made, not the templates in their source.
    let dom = without_scripts(&dom);

    // The scripts ran and filled the page from /api/status.
    assert!(
        dom.contains("class=\"ok\""),
        "the page did not show itself live (fetch failed?); DOM in {}",
        p.dir.display()
    );
    assert!(dom.contains(&format!(">{}<", p.topic)), "topic shown");
    for worker in ["w1", "w2"] {
        assert!(
            dom.contains(&format!("data-worker=\"{worker}\"")),
            "worker {worker} row missing"
        );
    }
    for partition in 0..6 {
        assert!(
            dom.contains(&format!("data-partition=\"{partition}\"")),
            "partition {partition} row missing"
        );
    }
    assert_eq!(
        dom.matches("class=\"num lag\"").count(),
        6,
        "one lag cell per partition"
    );
    for total in ["records", "short", "long", "invalid (DLQ)"] {
        assert!(
            dom.contains(&format!("data-total=\"{total}\"")),
            "total {total} missing"
        );
    }
    for chart in ["chart-throughput", "chart-latency", "chart-lag"] {
        let svg = element(&dom, &format!("id=\"{chart}\""), "</svg>");
        assert!(
            svg.contains("<path"),
            "{chart} has no line: {}",
            &svg[..svg.len().min(400)]
        );
    }

    let (width, height, colours, top_share) = picture(&shot);
    println!(
        "screenshot {width}x{height}, {} bytes, {colours} colours, most common colour {:.0}% of pixels",
        std::fs::metadata(&shot).unwrap().len(),
        100.0 * top_share
    );
    assert_eq!((width, height), (WIDTH, HEIGHT));
    assert!(colours >= 50, "only {colours} colours: a blank page?");
    assert!(
        top_share < 0.9,
        "one colour fills {top_share:.2} of the page"
    );
}

/// The browser: `$CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return path.into();
    }
    for name in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !path.is_empty() {
                return path.into();
            }
        }
    }
    panic!(
        "no headless browser: install Debian's chromium (`apt-get install -y chromium`; \
         deploy/local/prereqs.sh does) or set CHROMIUM=/path/to/chrome"
    );
}

/// Runs the browser headless on `url` with `extra` (e.g. `--dump-dom`),
/// giving the page 4 s of virtual time for its fetches; returns stdout.
fn run_chromium(chromium: &Path, dir: &Path, extra: &[&str], url: &str) -> String {
    let profile = dir.join(unique("chromium-profile"));
    let out = Command::new(chromium)
        .args([
            "--headless",
            // Root in CI containers: Chromium's sandbox refuses to run as root.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--window-size={WIDTH},{HEIGHT}"),
            "--virtual-time-budget=4000",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("running chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `/api/status` holds `n` per-second samples.
fn wait_for_samples(p: &Pipeline, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, body)) = http_get(p.metrics_port, "/api/status") {
            let v: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
            let workers = v["workers"].as_array().map_or(0, Vec::len);
            if v["samples"].as_array().map_or(0, Vec::len) >= n && workers == 2 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {n} samples after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn without_scripts(dom: &str) -> String {
    let mut out = String::new();
    let mut rest = dom;
    while let Some(start) = rest.find("<script") {
        out.push_str(&rest[..start]);
        rest = rest[start..]
            .find("</script>")
            .map_or("", |end| &rest[start + end + "</script>".len()..]);
    }
    out.push_str(rest);
    out
}

/// The element that starts at the tag holding `marker`, up to `end`.
fn element<'a>(dom: &'a str, marker: &str, end: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the page"));
    let start = dom[..at].rfind('<').unwrap();
    let stop = dom[at..]
        .find(end)
        .map_or(dom.len(), |e| at + e + end.len());
    &dom[start..stop]
}

/// Width, height, distinct colours and the share of the commonest colour.
fn picture(path: &Path) -> (u32, u32, usize, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("the screenshot was written"),
    ));
    let mut reader = decoder.read_info().expect("the screenshot is a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("sane PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let bytes = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for px in bytes.chunks_exact(step) {
        *counts.entry(&px[..step.min(3)]).or_default() += 1;
    }
    let pixels = bytes.len() / step;
    let top = counts.values().copied().max().unwrap_or(0);
    (
        info.width,
        info.height,
        counts.len(),
        top as f64 / pixels.max(1) as f64,
    )
}
