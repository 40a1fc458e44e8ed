//! What the flood learns from systemd's messages, as pure state fed with timestamps:
//! how far systemd's D-Bus cookie advanced (the incident's clock), the longest time
//! systemd said nothing while the flood waited on it, and when leftover units count as
//! leaked.

use std::time::{Duration, Instant};

/// The first cookie sd-bus uses after `0xffffffff` since the overflow fix (systemd
/// PR 11818): the top bit marks that the counter cycled. Before the fix the counter
/// went on to `0x100000000`, which sealing refuses (EOPNOTSUPP): systemd stopped
/// sending.
pub const COOKIE_CYCLED: u32 = 0x8000_0000;

/// How one observed cookie relates to the newest one seen before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieStep {
    /// Newer by this many messages.
    Advance(u64),
    /// Newer, across the overflow (`0xffffffff` → [`COOKIE_CYCLED`]…): this many
    /// messages.
    Cycled(u64),
    /// Far below the newest: a new connection, whose cookie sd-bus starts at 1.
    /// systemd reconnects to the bus when its connection closes, and an sd-bus without
    /// the overflow fix closes it when sealing past `0xffffffff` fails.
    Restarted,
    /// The same or an older message: signals reach every subscribed connection, and
    /// one connection's copy can be read after another's newer one.
    Stale,
}

/// Messages further apart than this are not two steps of one counter a flood sees
/// milliseconds apart (2^24 would be hours of systemd's fastest traffic).
const NEAR: u32 = 1 << 24;

/// Classifies `next` against `newest`. Cookies only grow; a step "backwards" from near
/// the top to just above [`COOKIE_CYCLED`] is the fixed sd-bus cycling, one to a small
/// number far below is a new connection, anything else a stale copy.
pub fn cookie_step(newest: u32, next: u32) -> CookieStep {
    if next > newest && next - newest < NEAR {
        return CookieStep::Advance(u64::from(next - newest));
    }
    if newest > u32::MAX - NEAR && (COOKIE_CYCLED..COOKIE_CYCLED + NEAR).contains(&next) {
        let before = u64::from(u32::MAX - newest);
        let after = u64::from(next - COOKIE_CYCLED) + 1;
        return CookieStep::Cycled(before + after);
    }
    if next < NEAR && newest - next >= NEAR {
        return CookieStep::Restarted;
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
    cycles: u32,
    /// Messages since the first cycle.
    after_cycle: u64,
    /// Cookies at or below this are from before a fast-forward ([`CookieClock::seed`]).
    floor: u32,
    /// The newest cookie before the first restart, and the first one after it.
    restart: Option<(u32, u32)>,
}

impl CookieClock {
    /// Starts the clock at a cookie observed outside the flood (the reply that
    /// verified a fast-forward); signals at or below `floor` are leftovers from before
    /// it that a listener may still deliver.
    pub fn seed(&mut self, cookie: u32, floor: u32, at: Instant) {
        self.first = Some((cookie, at));
        self.newest = Some((cookie, at));
        self.floor = floor;
    }

    pub fn observe(&mut self, cookie: u32, at: Instant) {
        let Some((newest, _)) = self.newest else {
            self.first = Some((cookie, at));
            self.newest = Some((cookie, at));
            return;
        };
        if cookie <= self.floor {
            return;
        }
        match cookie_step(newest, cookie) {
            CookieStep::Advance(n) => {
                self.advance += n;
                if self.cycles > 0 {
                    self.after_cycle += n;
                }
            }
            CookieStep::Cycled(n) => {
                self.advance += n;
                self.after_cycle += u64::from(cookie - COOKIE_CYCLED) + 1;
                self.cycles += 1;
            }
            CookieStep::Restarted => {
                // The new connection's messages so far.
                self.advance += u64::from(cookie);
                self.restart.get_or_insert((newest, cookie));
                // Leftovers of the fast-forward are indistinguishable from the new
                // connection's first messages from now on.
                self.floor = 0;
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
        self.cycles > 0
    }

    /// Times the cookie passed `0xffffffff` and cycled (the fix's behaviour).
    pub fn cycles(&self) -> u32 {
        self.cycles
    }

    /// Messages systemd sent after the first cycle: how much of the flood ran past the
    /// overflow.
    pub fn after_cycle(&self) -> u64 {
        self.after_cycle
    }

    /// The first restart of systemd's connection: the newest cookie before it and the
    /// first after it.
    pub fn restart(&self) -> Option<(u32, u32)> {
        self.restart
    }

    /// Messages per second over the observed span; `None` until two observations
    /// at least 100ms apart make a rate.
    pub fn rate(&self) -> Option<f64> {
        let ((_, t0), (_, t1)) = (self.first?, self.newest?);
        let span = t1.checked_duration_since(t0)?;
        (span >= Duration::from_millis(100)).then(|| self.advance as f64 / span.as_secs_f64())
    }
}

/// How close below `0xffffffff` the newest cookie must be for what systemd does next
/// to be its overflow: the messages of a few units.
pub const NEAR_TOP: u32 = 256;

/// What an sd-bus without the overflow fix does at the top of its cookie space: it
/// cannot seal a serial above `0xffffffff` (EOPNOTSUPP), so its connection falls silent
/// or is closed (and systemd reconnects with a fresh cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Silent for the bound while the flood waited, at this cookie.
    Silent { at: u32 },
    /// The connection restarted from this cookie near the top, at that one.
    Reconnected { from: u32, to: u32 },
}

/// Whether the flood saw systemd's cookie overflow without the fix: a restart of the
/// connection from within [`NEAR_TOP`] of `0xffffffff`, or — never having cycled — a
/// silence of `bound` (`gap`, now) with the newest cookie that close to the top.
pub fn overflow(clock: &CookieClock, gap: Duration, bound: Duration) -> Option<Overflow> {
    if let Some((from, to)) = clock
        .restart()
        .filter(|(from, _)| *from >= u32::MAX - NEAR_TOP)
    {
        return Some(Overflow::Reconnected { from, to });
    }
    let newest = clock.newest()?;
    (!clock.cycled() && newest >= u32::MAX - NEAR_TOP && gap >= bound)
        .then_some(Overflow::Silent { at: newest })
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

    /// How long systemd has said nothing while the flood waits on it, now.
    pub fn current(&self, now: Instant) -> Duration {
        match self.since {
            Some(since) if self.outstanding > 0 => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        }
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
            // A new connection (sd-bus starts at 1) is not an advance across the top.
            (max, 1, CookieStep::Restarted),
            (max - 5, 300, CookieStep::Restarted),
            (1 << 25, 40, CookieStep::Restarted),
            // A stale copy from a little earlier is not a restart.
            (20_000, 19_990, CookieStep::Stale),
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
    fn the_cookie_clock_counts_cycles_and_the_messages_after_them() {
        let t0 = Instant::now();
        let mut c = CookieClock::default();
        c.observe(u32::MAX - 100, t0);
        c.observe(u32::MAX, t0);
        assert_eq!((c.cycles(), c.after_cycle()), (0, 0));
        c.observe(COOKIE_CYCLED, t0);
        assert_eq!((c.cycles(), c.after_cycle()), (1, 1));
        c.observe(COOKIE_CYCLED + 50, t0);
        // A stale copy from before the cycle changes nothing.
        c.observe(u32::MAX - 3, t0);
        assert_eq!((c.cycles(), c.after_cycle(), c.messages()), (1, 51, 151));
    }

    #[test]
    fn silence_or_a_restart_at_the_top_of_the_cookie_space_is_the_overflow() {
        let t0 = Instant::now();
        let bound = Duration::from_secs(5);
        let clock = |cookies: &[u32]| {
            let mut c = CookieClock::default();
            for &k in cookies {
                c.observe(k, t0);
            }
            c
        };
        let top = u32::MAX;
        for (cookies, gap, want) in [
            (
                vec![top - 300, top - 1],
                6,
                Some(Overflow::Silent { at: top - 1 }),
            ),
            (vec![top - 300, top], 6, Some(Overflow::Silent { at: top })),
            // Not silent long enough.
            (vec![top - 300, top - 1], 4, None),
            // Far from the top: silence is a hang, not the overflow.
            (vec![1000, 2000], 60, None),
            // Cycled: the fix works; a later silence is something else.
            (vec![top - 3, COOKIE_CYCLED + 2], 60, None),
            (vec![], 60, None),
            // The connection closed at the top and systemd reconnected.
            (
                vec![top - 200, top - 2, 7, 90],
                0,
                Some(Overflow::Reconnected {
                    from: top - 2,
                    to: 7,
                }),
            ),
            // A reconnection far below the top (a restarted dbus) is not the overflow.
            (vec![1 << 25, 9, 50], 0, None),
        ] {
            assert_eq!(
                overflow(&clock(&cookies), Duration::from_secs(gap), bound),
                want,
                "{cookies:x?} silent {gap}s"
            );
        }
    }

    #[test]
    fn a_seeded_clock_sees_the_crossing_and_ignores_leftovers_from_before_it() {
        let t0 = Instant::now();
        // The fixed sd-bus: the fast-forward's reply was 0xffffff01, the first signal
        // the flood reads is already past the cycle.
        let mut c = CookieClock::default();
        c.seed(0xffff_ff01, 0x40, t0);
        c.observe(0x30, t0); // a signal from before the fast-forward, read late
        c.observe(COOKIE_CYCLED + 0x400, t0);
        assert_eq!((c.cycles(), c.after_cycle()), (1, 0x401));
        assert_eq!(c.restart(), None);
        // Without the fix: the next signal comes from a new connection.
        let mut c = CookieClock::default();
        c.seed(0xffff_ff01, 0x40, t0);
        c.observe(0x30, t0);
        c.observe(0x2000, t0);
        assert_eq!(c.restart(), Some((0xffff_ff01, 0x2000)));
        assert!(!c.cycled());
    }

    #[test]
    fn the_current_gap_counts_only_while_waiting() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut s = Silence::default();
        assert_eq!(s.current(at(100)), Duration::ZERO);
        s.begin(at(1_000));
        assert_eq!(s.current(at(3_000)), Duration::from_secs(2));
        s.heard(at(3_000));
        assert_eq!(s.current(at(3_500)), Duration::from_millis(500));
        s.end(at(4_000));
        assert_eq!(s.current(at(9_000)), Duration::ZERO);
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
