//! Property tests: whatever bytes a scenario file or the control channel holds, the
//! parser and the frame decoder answer (a located error, a decoded frame, or a
//! complaint about skipped bytes) and never panic.

use kchaos_model::protocol::{self, FrameDecoder, FrameEvent, GuestMessage};
use proptest::prelude::*;

const SHIPPED: &[&str] = &[
    include_str!("../../scenarios/memcg-dying-cgroups.toml"),
    include_str!("../../scenarios/memcg-kmem-churn.toml"),
    include_str!("../../scenarios/cfs-quota-starvation.toml"),
    include_str!("../../scenarios/veth-netns-storm.toml"),
    include_str!("../../scenarios/veth-storm-traffic.toml"),
    include_str!("../../scenarios/systemd-transient-flood.toml"),
];

/// Every error is one line, `FILE:LINE:COL: ...`, with a line and column inside the file.
fn assert_located(
    source: &str,
    result: Result<kchaos_model::scenario::Scenario, kchaos_model::scenario::ScenarioErrors>,
) {
    let Err(errors) = result else { return };
    assert!(
        !errors.0.is_empty(),
        "an error result names at least one problem"
    );
    let lines = source.lines().count().max(1) + 1;
    for e in &errors.0 {
        let text = e.to_string();
        assert!(!text.contains('\n'), "one line per error: {text:?}");
        assert!(text.starts_with("t.toml:"), "{text}");
        assert!(
            e.line >= 1 && e.line <= lines,
            "line {} of {lines}: {text}",
            e.line
        );
        assert!(e.column >= 1, "{text}");
    }
}

/// A mutation of a shipped scenario: bytes replaced, inserted or removed.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, char),
    Insert(usize, String),
    Remove(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let interesting = prop_oneof![
        Just("0".to_owned()),
        Just("\"0s\"".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("\"99999999999999999999EiB\"".to_owned()),
        Just("[[workload]]\n".to_owned()),
        Just("[[probe]]\nkind = \"counter\"\n".to_owned()),
        Just("\n[vm]\n".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("-1".to_owned()),
        Just("1e308".to_owned()),
        "[ -~\n]{0,12}",
    ];
    prop_oneof![
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), interesting).prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<usize>(), 0usize..40).prop_map(|(i, n)| Edit::Remove(i, n)),
    ]
}

fn apply(source: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = source.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match e {
            Edit::Replace(i, c) => {
                if !chars.is_empty() {
                    let at = i % chars.len();
                    chars[at] = *c;
                }
            }
            Edit::Insert(i, s) => {
                let at = i % (len + 1).min(chars.len() + 1);
                chars.splice(at..at, s.chars());
            }
            Edit::Remove(i, n) => {
                if !chars.is_empty() {
                    let at = i % chars.len();
                    let end = (at + n).min(chars.len());
                    chars.drain(at..end);
                }
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_parser(source in "\\PC{0,400}") {
        assert_located(&source, kchaos_model::scenario::parse("t.toml", &source));
    }

    #[test]
    fn mutated_shipped_scenarios_parse_or_give_located_errors(
        which in 0..SHIPPED.len(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let source = apply(SHIPPED[which], &edits);
        assert_located(&source, kchaos_model::scenario::parse("t.toml", &source));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
    ) {
        let mut d = FrameDecoder::new();
        let mut total = 0usize;
        for chunk in &chunks {
            total += chunk.len();
            d.push(chunk);
            while let Some(ev) = d.next_event() {
                if let FrameEvent::Frame(payload) = ev {
                    // A frame that passed its checksum may still be no message.
                    let _ = protocol::frame::decode::<GuestMessage>(&payload);
                }
            }
        }
        prop_assert!(d.pending() <= total);
    }

    #[test]
    fn frames_survive_garbage_and_any_split(
        before in prop::collection::vec(any::<u8>(), 0..200),
        after in prop::collection::vec(any::<u8>(), 0..200),
        cut in prop::collection::vec(1usize..64, 1..40),
        message in "[ -~]{0,80}",
    ) {
        let msg = GuestMessage::Note { message: message.clone() };
        let frame = match protocol::encode(&msg) {
            Ok(f) => f,
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        };
        // Garbage that happens to contain the magic can swallow a frame's start; keep
        // the property about garbage that cannot.
        let clean = |b: &[u8]| !b.windows(3).any(|w| w == b"KCH");
        prop_assume!(clean(&before) && clean(&after));
        let mut stream = before.clone();
        stream.extend_from_slice(&frame);
        stream.extend_from_slice(&after);
        let mut d = FrameDecoder::new();
        let mut found = Vec::new();
        let mut at = 0usize;
        let mut sizes = cut.iter().cycle();
        while at < stream.len() {
            let n = (*sizes.next().unwrap_or(&1)).min(stream.len() - at);
            d.push(&stream[at..at + n]);
            at += n;
            while let Some(ev) = d.next_event() {
                if let FrameEvent::Frame(p) = ev {
                    found.push(p);
                }
            }
        }
        prop_assert_eq!(found.len(), 1);
        let decoded: GuestMessage = match protocol::frame::decode(&found[0]) {
            Ok(m) => m,
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        };
        prop_assert_eq!(decoded, GuestMessage::Note { message });
    }
}
