//! Where systemd keeps its sd-bus cookie, found from the outside, as pure functions over
//! memory snapshots: no symbols, no debugger.
//!
//! sd-bus seals every message it sends with `++bus->cookie` (a `uint64_t` in `struct
//! sd_bus`, 8-byte aligned, on the heap) and the serial a client reads off systemd's
//! reply is that value. So the cookie is an aligned 64-bit word that equals the serial
//! of systemd's latest reply, give or take the few messages systemd may have sealed
//! between its reply and our read (`slack`). One snapshot matches many words (small
//! numbers are everywhere); each further round — another reply, its serial further on —
//! keeps only the words that moved with it. A word that tracked every serial over
//! rounds spread wider than the slack is the cookie; none or several is an error that
//! says so, never a guess.

/// Bytes of one word: the cookie is a `uint64_t`.
pub const WORD: usize = 8;

/// One snapshot round: the serial of systemd's reply, and the candidates' values read
/// right after it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub serial: u32,
    /// `(address, value)` for every candidate still in play.
    pub values: Vec<(u64, u64)>,
}

/// Whether `value`, read after a reply with `serial`, can be the cookie: sd-bus sealed
/// the reply with it and may have sealed up to `slack` more messages since.
pub fn tracks(value: u64, serial: u32, slack: u32) -> bool {
    value
        .checked_sub(u64::from(serial))
        .is_some_and(|ahead| ahead <= u64::from(slack))
}

/// Addresses of the aligned words in `bytes` (mapped at `base`) that can be the cookie
/// after a reply with `serial`.
pub fn candidates(base: u64, bytes: &[u8], serial: u32, slack: u32) -> Vec<u64> {
    // Words are aligned in the target's address space, not in our buffer.
    let skip = usize::try_from((WORD as u64 - base % WORD as u64) % WORD as u64).unwrap_or(0);
    let Some(aligned) = bytes.get(skip..) else {
        return Vec::new();
    };
    aligned
        .chunks_exact(WORD)
        .enumerate()
        .filter_map(|(i, chunk)| {
            let mut word = [0u8; WORD];
            word.copy_from_slice(chunk);
            let value = u64::from_le_bytes(word);
            tracks(value, serial, slack).then(|| base + (skip + i * WORD) as u64)
        })
        .collect()
}

/// What the rounds so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Exactly one word tracked every round, over serials spread wider than the slack.
    At(u64),
    /// More rounds are needed: this many words still track.
    Narrowing(usize),
    /// No word tracked every round: the cookie is not in the memory searched.
    Lost,
    /// Several words tracked every round although the serials moved far.
    Ambiguous(Vec<u64>),
}

/// The addresses of `round` whose value still tracks its serial.
pub fn narrow(round: &Round, slack: u32) -> Vec<u64> {
    round
        .values
        .iter()
        .filter(|(_, v)| tracks(*v, round.serial, slack))
        .map(|(a, _)| *a)
        .collect()
}

/// The location from the survivors of the latest round and how far the serials moved
/// over all rounds (`spread`, newest serial minus the first). A word that merely holds
/// a number near the serials stays in the window until the serials have moved past it,
/// so one survivor counts only once the serials moved further than the slack, twice
/// over; several survivors past `max_rounds` rounds are ambiguous.
pub fn located(
    survivors: &[u64],
    spread: u64,
    slack: u32,
    rounds: u32,
    max_rounds: u32,
) -> Located {
    let settled = spread > 2 * u64::from(slack);
    match survivors {
        [] => Located::Lost,
        [only] if settled => Located::At(*only),
        _ if settled && rounds >= max_rounds => Located::Ambiguous(survivors.to_vec()),
        _ => Located::Narrowing(survivors.len()),
    }
}

/// Whether the first reply after the write shows the new value in use: its serial is
/// just past `written` (the cookie is incremented before sealing), by at most `slack`,
/// or — when `written` was close to the top — past the cycle to `0x80000000` that the
/// fixed sd-bus makes.
pub fn verified(written: u32, serial: u32, slack: u32) -> bool {
    const CYCLED: u32 = 0x8000_0000;
    let ahead = serial.wrapping_sub(written);
    if serial > written {
        return ahead <= slack;
    }
    // Cycled: u32::MAX - written messages before the top, then CYCLED, CYCLED + 1, ...
    let before = u32::MAX - written;
    serial >= CYCLED && before.saturating_add(serial - CYCLED + 1) <= slack
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn candidates_are_aligned_words_at_or_just_past_the_serial() {
        // serial 1000, slack 4: 1000..=1004 match; 999, 1005 and a 32-bit half do not.
        let bytes = memory(&[7, 1000, 999, 1004, 1005, (1000 << 32) | 5, 1002]);
        assert_eq!(
            candidates(0x5000, &bytes, 1000, 4),
            vec![0x5008, 0x5018, 0x5030]
        );
    }

    #[test]
    fn candidates_follow_the_targets_alignment_not_the_buffers() {
        // The snapshot starts 4 bytes before an aligned address: the first 4 bytes
        // belong to the previous word and are skipped.
        let mut bytes = vec![0xaa; 4];
        bytes.extend(memory(&[1000, 3]));
        assert_eq!(candidates(0x5004, &bytes, 1000, 0), vec![0x5008]);
        assert!(candidates(0x5004, &[0u8; 3], 1000, 0).is_empty());
    }

    #[test]
    fn narrowing_keeps_only_words_that_moved_with_the_serial() {
        let round = Round {
            serial: 2000,
            values: vec![(0x10, 2001), (0x18, 1003), (0x20, 2000), (0x28, 9000)],
        };
        assert_eq!(narrow(&round, 4), vec![0x10, 0x20]);
    }

    #[test]
    fn a_location_needs_one_survivor_and_serials_that_moved_past_the_slack() {
        let slack = 16;
        for (survivors, spread, rounds, want) in [
            (vec![], 100, 3, Located::Lost),
            (vec![0x10], 100, 3, Located::At(0x10)),
            // One survivor, but the serials moved less than twice the slack: a word
            // holding a nearby constant could still be in the window.
            (vec![0x10], 20, 3, Located::Narrowing(1)),
            (vec![0x10, 0x20], 100, 3, Located::Narrowing(2)),
            (
                vec![0x10, 0x20],
                100,
                8,
                Located::Ambiguous(vec![0x10, 0x20]),
            ),
            (vec![0x10, 0x20], 20, 8, Located::Narrowing(2)),
        ] {
            assert_eq!(
                located(&survivors, spread, slack, rounds, 8),
                want,
                "{survivors:?} spread {spread} rounds {rounds}"
            );
        }
    }

    #[test]
    fn a_synthetic_heap_narrows_to_the_cookie_over_rounds() {
        // A heap where the cookie sits at 0x1040 among words that happen to equal the
        // first serial (a length, a stale copy in a freed message) and one that
        // counts along for a while.
        let base = 0x1000;
        let mut words = vec![0u64; 32];
        words[3] = 500; // stale copy
        words[8] = 500; // the cookie
        words[12] = 502; // a nearby constant
        words[20] = 500; // a counter that stops counting
        let slack = 4;
        let mut alive = candidates(base, &memory(&words), 500, slack);
        assert_eq!(alive, vec![0x1018, 0x1040, 0x1060, 0x10a0]);
        let first = 500u64;
        let mut rounds = 1;
        let mut serial = 500u32;
        let mut result = Located::Narrowing(alive.len());
        while let Located::Narrowing(_) = result {
            serial += 5;
            words[8] = u64::from(serial);
            if serial < 510 {
                words[20] = u64::from(serial);
            }
            let round = Round {
                serial,
                values: alive
                    .iter()
                    .map(|a| (*a, words[((a - base) / 8) as usize]))
                    .collect(),
            };
            alive = narrow(&round, slack);
            rounds += 1;
            result = located(&alive, u64::from(serial) - first, slack, rounds, 8);
        }
        assert_eq!(result, Located::At(0x1040));
    }

    #[test]
    fn the_incoming_message_counter_next_to_the_cookie_is_told_apart() {
        // struct sd_bus: `uint64_t cookie; uint64_t read_counter;`. Answered pings move
        // both; unanswered ones (64 a round) only the counter. 17 answered a round.
        let slack = 16;
        let (mut cookie, mut read_counter) = (3000u64, 3001u64);
        let words = |c: u64, r: u64| memory(&[c, r, 3005]);
        let mut alive = candidates(0x100, &words(cookie, read_counter), 3000, slack);
        assert_eq!(
            alive.len(),
            3,
            "at first the cookie, the counter and a constant match"
        );
        let mut rounds = 1;
        let result = loop {
            match located(&alive, cookie - 3000, slack, rounds, 12) {
                Located::Narrowing(_) => {}
                done => break done,
            }
            read_counter += 64 + 17;
            cookie += 17;
            let mem = [cookie, read_counter, 3005];
            let round = Round {
                serial: u32::try_from(cookie).unwrap(),
                values: alive
                    .iter()
                    .map(|a| (*a, mem[((a - 0x100) / 8) as usize]))
                    .collect(),
            };
            alive = narrow(&round, slack);
            rounds += 1;
        };
        assert_eq!(result, Located::At(0x100));
    }

    #[test]
    fn the_write_is_verified_by_the_next_serial() {
        for (written, serial, ok) in [
            (0xffff_ff00, 0xffff_ff01, true),
            (0xffff_ff00, 0xffff_ff04, true),
            (0xffff_ff00, 0xffff_ff05, false),
            (0xffff_ff00, 0xffff_ff00, false), // not incremented: the write did not land
            (0xffff_ff00, 0xffff_ff20, false), // too far: not our word
            (0xffff_ff00, 1234, false),        // the old counter goes on
            (0xffff_fffe, 0x8000_0000, true),  // fixed sd-bus cycled right away
            (0xffff_fffe, 0x8000_0002, true),
            (0xffff_fffe, 0x8000_0003, false),
            (0xffff_fff0, 0x8000_0003, false), // 19 messages: beyond the slack
        ] {
            assert_eq!(
                verified(written, serial, 4),
                ok,
                "{written:#x} -> {serial:#x}"
            );
        }
    }
}
