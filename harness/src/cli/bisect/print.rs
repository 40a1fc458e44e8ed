//! The terminal side of a bisection: the header, then each step as it goes.

use kchaos_harness::analysis::bisect::{short, BisectRecord};
use kchaos_harness::analysis::reproduction::Target;
use kchaos_harness::run::bisect::{Event, Prepared};
use kchaos_model::bisect::plan::Phase;

pub(super) fn print_header(r: &BisectRecord, target: &Target) {
    let name = |i: usize| {
        r.points
            .get(i)
            .map_or_else(String::new, |p| match &p.subject {
                Some(s) => format!("{} ({s})", short(&p.id)),
                None => p.id.clone(),
            })
    };
    let what = match &r.source {
        Some(s) => format!("{} commits of {}", r.points.len(), s.repo),
        None => format!("{} kernels", r.points.len()),
    };
    println!(
        "bisecting {} over {what}: good {}, bad {}, until {}",
        r.scenario,
        name(r.good),
        name(r.bad),
        target.describe()
    );
    if let Some(s) = &r.source {
        println!(
            "building in {} ({}; fragments: {})",
            s.build_space,
            if s.ccache {
                "through ccache"
            } else {
                "without ccache"
            },
            if s.fragments.is_empty() {
                "none".to_owned()
            } else {
                s.fragments.join(", ")
            }
        );
    }
}

pub(super) fn secs(s: f64) -> String {
    kchaos_harness::analysis::bisect::duration_text(s)
}

/// Prints each step as it goes: what is built, how long it took, what the runs said.
#[derive(Debug, Default)]
pub(super) struct Printer {
    pub(super) step: usize,
}

impl Printer {
    pub(super) fn event(&mut self, e: &Event<'_>) {
        match e {
            Event::Starting { phase, index, runs } => {
                self.step += 1;
                let what = match phase {
                    Phase::Calibrate => "the bad end, calibrating",
                    Phase::CheckGood => "the good end",
                    Phase::Bisect => "bisecting",
                };
                println!("step {} ({what}): #{index}, up to {runs} runs", self.step);
            }
            Event::Built(p) => print_built(p),
            Event::Done(s) => {
                let point = match &s.subject {
                    Some(sub) => format!("{} {sub}", short(&s.point)),
                    None => s.point.clone(),
                };
                let p = match (s.probability, s.interval95) {
                    (Some(p), Some((lo, hi))) => format!(", p {p:.2} [{lo:.2}-{hi:.2}]"),
                    _ => String::new(),
                };
                let conf = s
                    .confidence
                    .map(|c| format!(", confidence {c:.3}"))
                    .unwrap_or_default();
                let why = s
                    .why
                    .as_ref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                println!(
                    "  {point}: {}{why}, {}/{} runs hit{p}{conf}; boot {}, runs {}",
                    s.verdict,
                    s.hits,
                    s.runs,
                    s.boot_ms
                        .map_or_else(|| "-".to_owned(), |b| format!("{:.1}s", b as f64 / 1000.0)),
                    secs(s.run_seconds)
                );
            }
        }
    }
}

fn print_built(p: &Prepared) {
    let Some(b) = &p.build else { return };
    if b.cached {
        println!("  built earlier: {}", p.kernel.as_deref().unwrap_or(""));
        return;
    }
    let cc = match (b.ccache_hits, b.ccache_misses) {
        (Some(h), Some(m)) => format!("; ccache {h} hits, {m} misses"),
        _ => String::new(),
    };
    match &p.kernel {
        Ok(_) => println!(
            "  built in {} (checkout {}; {} files compiled{cc})",
            secs(b.seconds),
            secs(b.checkout_seconds),
            b.compiled
        ),
        Err(why) => println!("  {why}"),
    }
}
