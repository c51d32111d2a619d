//! Arbitrary bytes through the one parser and classifier, as a worker reads
//! them from `DataTopic`. Besides "never panics", it checks:
//!
//! - a purchase's notification text is exactly one line;
//! - a well-formed record (purchase or not) re-serializes to JSON that
//!   classifies the same way, to an equal record (`taps` within one ULP);
//! - an invalid record's reason has a code and a bounded detail (both go
//!   into dead-letter headers).
//!
//! Run it with `bench/fuzz.sh`; seeds are in `fuzz/corpus/classify/seed-*`.

#![no_main]

use common::classify::{classify, Classification, Rules};
use common::notify::render_text;
use libfuzzer_sys::fuzz_target;

/// Characters that end a line for some reader of the console output.
const LINE_BREAKS: [char; 6] = ['\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{2028}'];

/// Longest reason text we accept in a dead-letter header.
const MAX_DETAIL_CHARS: usize = 512;

fuzz_target!(|data: &[u8]| {
    let rules = Rules::default();
    let class = classify(data, &rules);
    match &class {
        Classification::Purchase { kind, purchase } => {
            let text = render_text(*kind, purchase);
            assert!(
                !text.contains(LINE_BREAKS) && !text.contains('\u{2029}'),
                "notification is not one line: {text:?}"
            );
            assert_eq!(text.lines().count(), 1, "{text:?}");
        }
        Classification::NoPurchase(_) => {}
        Classification::Invalid(reason) => {
            assert!(!reason.code().is_empty());
            let detail = reason.to_string();
            assert!(
                detail.chars().count() <= MAX_DETAIL_CHARS,
                "detail of {} chars: {detail:.300}",
                detail.chars().count()
            );
            return;
        }
    }

    let (kind, purchase) = match &class {
        Classification::Purchase { kind, purchase } => (Some(*kind), purchase),
        Classification::NoPurchase(purchase) => (None, purchase),
        Classification::Invalid(_) => unreachable!(),
    };
    let again = serde_json::to_vec(purchase).expect("a parsed record serializes");
    // Our serialization may be a few bytes longer than the input (`1` is
    // written `1.0`), so a record at the size limit could cross it; the size
    // rule is not what this checks.
    let unbounded = Rules {
        max_record_bytes: usize::MAX,
        ..rules
    };
    let shown = || String::from_utf8_lossy(&again).into_owned();
    let (kind_again, purchase_again) = match classify(&again, &unbounded) {
        Classification::Purchase { kind, purchase } => (Some(kind), purchase),
        Classification::NoPurchase(purchase) => (None, purchase),
        Classification::Invalid(reason) => panic!("re-serialized as {} is {reason}", shown()),
    };
    assert_eq!(kind_again, kind, "re-serialized as {}", shown());
    // serde_json without its `float_roundtrip` feature may parse a number
    // one unit in the last place off (seen only at extreme exponents, e.g.
    // 6.955846811516258e-298), so taps is compared within one ULP.
    let (taps, taps_again) = (purchase.taps, purchase_again.taps);
    assert!(
        match (taps, taps_again) {
            (Some(a), Some(b)) => a == b || a.to_bits().abs_diff(b.to_bits()) <= 1,
            (a, b) => a == b,
        },
        "taps {taps:?} re-serialized as {}",
        shown()
    );
    let purchase_again = common::record::Purchase {
        taps,
        ..purchase_again
    };
    assert_eq!(&purchase_again, purchase, "re-serialized as {}", shown());
});
