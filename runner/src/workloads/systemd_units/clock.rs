//! What the flood learns from systemd's messages, as pure state fed with timestamps:
//! how far systemd's D-Bus cookie advanced (the incident's clock), the longest time
//! systemd said nothing while the flood waited on it, and when leftover units count as
//! leaked.

use std::time::{Duration, Instant};

/// The first cookie sd-bus uses after `0xffffffff` since the overflow fix (systemd
/// PR 11818): the top bit marks that the counter cycled. Before the fix the next
/// cookie was 0, which sealing refuses (EOPNOTSUPP): systemd stopped sending.
pub const COOKIE_CYCLED: u32 = 0x8000_0000;

/// How one observed cookie relates to the newest one seen before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieStep {
    /// Newer by this many messages.
    Advance(u64),
    /// Newer, across the overflow (`0xffffffff` → [`COOKIE_CYCLED`]…): this many
    /// messages.
    Cycled(u64),
    /// The same or an older message: signals reach every subscribed connection, and
    /// one connection's copy can be read after another's newer one.
    Stale,
}

/// Classifies `next` against `newest`. Cookies only grow, and by far less than 2^24
/// between two messages a flood sees milliseconds apart (that would be hours of
/// systemd's fastest traffic); a step "backwards" from near the top to just above
/// [`COOKIE_CYCLED`] is the fixed sd-bus cycling, anything else is a stale copy.
pub fn cookie_step(newest: u32, next: u32) -> CookieStep {
    const NEAR: u32 = 1 << 24;
    let forward = next.wrapping_sub(newest);
    if forward != 0 && forward < NEAR {
        return CookieStep::Advance(u64::from(forward));
    }
    if newest > u32::MAX - NEAR && (COOKIE_CYCLED..COOKIE_CYCLED + NEAR).contains(&next) {
        let before = u64::from(u32::MAX - newest);
        let after = u64::from(next - COOKIE_CYCLED) + 1;
        return CookieStep::Cycled(before + after);
    }
    CookieStep::Stale
}

/// systemd's cookie on its system-bus connection, read from the serial of every
/// message it sent to the flood (dbus-daemon forwards serials unchanged). sd-bus takes
/// one cookie per message it seals, whoever receives it, so the advance counts every
/// message systemd sent on the bus, not only the flood's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CookieClock {
    first: Option<(u32, Instant)>,
    newest: Option<(u32, Instant)>,
    advance: u64,
    cycled: bool,
}

impl CookieClock {
    pub fn observe(&mut self, cookie: u32, at: Instant) {
        let Some((newest, _)) = self.newest else {
            self.first = Some((cookie, at));
            self.newest = Some((cookie, at));
            return;
        };
        match cookie_step(newest, cookie) {
            CookieStep::Advance(n) => self.advance += n,
            CookieStep::Cycled(n) => {
                self.advance += n;
                self.cycled = true;
            }
            CookieStep::Stale => return,
        }
        self.newest = Some((cookie, at));
    }

    /// Messages systemd sent between the first and the newest observation.
    pub fn messages(&self) -> u64 {
        self.advance
    }

    /// The newest cookie seen: how far this systemd is from the overflow.
    pub fn newest(&self) -> Option<u32> {
        self.newest.map(|(c, _)| c)
    }

    pub fn cycled(&self) -> bool {
        self.cycled
    }

    /// Messages per second over the observed span; `None` until two observations
    /// at least 100ms apart make a rate.
    pub fn rate(&self) -> Option<f64> {
        let ((_, t0), (_, t1)) = (self.first?, self.newest?);
        let span = t1.checked_duration_since(t0)?;
        (span >= Duration::from_millis(100)).then(|| self.advance as f64 / span.as_secs_f64())
    }
}

/// The longest time systemd sent nothing while the flood waited on it (a call or a job
/// outstanding). A loaded host slows every answer but keeps them coming; a systemd
/// that hangs, or one whose cookie overflowed, answers nothing at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Silence {
    outstanding: u32,
    /// When systemd last spoke, or when the flood began to wait, whichever is later.
    since: Option<Instant>,
    longest: Duration,
}

impl Silence {
    /// The flood sent a call or began to wait for a job.
    pub fn begin(&mut self, at: Instant) {
        if self.outstanding == 0 {
            self.since = Some(at);
        }
        self.outstanding += 1;
    }

    /// A message from systemd arrived.
    pub fn heard(&mut self, at: Instant) {
        self.close_gap(at);
        self.since = Some(at);
    }

    /// A call or job wait ended (answered or given up).
    pub fn end(&mut self, at: Instant) {
        self.close_gap(at);
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    fn close_gap(&mut self, at: Instant) {
        if let (true, Some(since)) = (self.outstanding > 0, self.since) {
            self.longest = self.longest.max(at.saturating_duration_since(since));
        }
    }

    pub fn longest(&self) -> Duration {
        self.longest
    }
}

/// Waiting for stopped units to be unloaded. systemd unloads them from its garbage
/// collection queue; on a loaded host that takes longer, but the count keeps falling.
/// Units still loaded after the count stood still for `grace` (or after `cap` in all)
/// are leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unloading {
    started: Instant,
    changed: Instant,
    count: Option<usize>,
    grace: Duration,
    cap: Duration,
}

/// What to do after one listing of the leftover units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadPoll {
    /// None left.
    Clean,
    /// Still falling, or not yet still for the grace: list again.
    Wait,
    /// Still loaded after the grace: leaked.
    Leaked,
}

impl Unloading {
    pub fn new(started: Instant, grace: Duration, cap: Duration) -> Unloading {
        Unloading {
            started,
            changed: started,
            count: None,
            grace,
            cap,
        }
    }

    pub fn observe(&mut self, count: usize, at: Instant) -> UnloadPoll {
        if count == 0 {
            return UnloadPoll::Clean;
        }
        if self.count.is_none_or(|c| count < c) {
            self.count = Some(count);
            self.changed = at;
        }
        let still = at.saturating_duration_since(self.changed);
        let total = at.saturating_duration_since(self.started);
        if still >= self.grace || total >= self.cap {
            UnloadPoll::Leaked
        } else {
            UnloadPoll::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_steps() {
        let max = u32::MAX;
        for (newest, next, step) in [
            (100, 101, CookieStep::Advance(1)),
            (100, 160, CookieStep::Advance(60)),
            (100, 100, CookieStep::Stale),
            (100, 99, CookieStep::Stale),
            (100, 100 + COOKIE_CYCLED, CookieStep::Stale),
            // Unfixed sd-bus would go to 0; it never sends it, but nothing may count it
            // as half the cookie space.
            (max, 0, CookieStep::Advance(1)),
            (max, COOKIE_CYCLED, CookieStep::Cycled(1)),
            (max - 2, COOKIE_CYCLED + 3, CookieStep::Cycled(6)),
            // A stale copy seen after the cycle is not a second cycle.
            (COOKIE_CYCLED + 3, max - 1, CookieStep::Stale),
            (COOKIE_CYCLED + 3, COOKIE_CYCLED + 4, CookieStep::Advance(1)),
        ] {
            assert_eq!(cookie_step(newest, next), step, "{newest:#x} -> {next:#x}");
        }
    }

    #[test]
    fn the_cookie_clock_counts_messages_and_their_rate() {
        let t0 = Instant::now();
        let mut c = CookieClock::default();
        assert_eq!(c.rate(), None);
        c.observe(1000, t0);
        c.observe(1010, t0 + Duration::from_millis(500));
        // The same signal on a second connection, read late.
        c.observe(1005, t0 + Duration::from_millis(600));
        c.observe(1200, t0 + Duration::from_secs(2));
        assert_eq!(c.messages(), 200);
        assert_eq!(c.newest(), Some(1200));
        assert_eq!(c.rate(), Some(100.0));
        assert!(!c.cycled());
    }

    #[test]
    fn the_cookie_clock_sees_the_fixed_overflow() {
        let t0 = Instant::now();
        let mut c = CookieClock::default();
        c.observe(u32::MAX - 9, t0);
        c.observe(COOKIE_CYCLED + 9, t0 + Duration::from_secs(1));
        assert_eq!(c.messages(), 19);
        assert!(c.cycled());
    }

    #[test]
    fn silence_counts_only_while_the_flood_waits() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut s = Silence::default();
        // Nothing outstanding: a quiet systemd is not a silent one.
        s.heard(at(0));
        s.heard(at(5_000));
        assert_eq!(s.longest(), Duration::ZERO);
        // Waiting from 6000: answers at 6300 and 7000, the wait ends at 7000.
        s.begin(at(6_000));
        s.heard(at(6_300));
        s.heard(at(7_000));
        s.end(at(7_000));
        assert_eq!(s.longest(), Duration::from_millis(700));
        // A second wait that is never answered: the gap lasts until it is given up.
        s.begin(at(8_000));
        s.begin(at(8_100));
        s.end(at(8_100 + 30_000));
        assert_eq!(s.longest(), Duration::from_millis(30_100));
        s.end(at(40_000));
        s.heard(at(50_000));
        assert_eq!(s.longest(), Duration::from_secs(32));
    }

    #[test]
    fn leftovers_are_leaked_only_once_their_count_stands_still() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let (grace, cap) = (Duration::from_secs(5), Duration::from_secs(30));
        for (counts, last) in [
            (vec![(0, 0)], UnloadPoll::Clean),
            (vec![(3, 0), (0, 1)], UnloadPoll::Clean),
            (vec![(3, 0), (3, 4)], UnloadPoll::Wait),
            (vec![(3, 0), (3, 5)], UnloadPoll::Leaked),
            // Falling slowly on a loaded host: still unloading after 8s.
            (vec![(9, 0), (6, 4), (3, 8)], UnloadPoll::Wait),
            (vec![(9, 0), (6, 4), (3, 8), (3, 13)], UnloadPoll::Leaked),
            // Falling forever is capped.
            (vec![(99, 0), (50, 28), (49, 30)], UnloadPoll::Leaked),
        ] {
            let mut u = Unloading::new(t0, grace, cap);
            let polls: Vec<UnloadPoll> = counts.iter().map(|&(c, s)| u.observe(c, at(s))).collect();
            assert_eq!(polls.last(), Some(&last), "{counts:?}");
        }
    }
}
