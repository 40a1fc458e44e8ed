//! A workload's or probe's metrics as the report lists them: each named
//! `<name>.<what>`, in the order they were added, so every workload names and builds
//! them the same way.

use kchaos_model::metrics::{Gauge, Metric};
use kchaos_model::units::Unit;

use crate::histogram::Latency;

#[derive(Debug)]
pub struct Named<'a> {
    name: &'a str,
    list: Vec<(String, Metric)>,
}

impl<'a> Named<'a> {
    pub fn new(name: &'a str) -> Named<'a> {
        Named {
            name,
            list: Vec::new(),
        }
    }

    /// `<name>.<what>`: the latencies `latency` recorded.
    pub fn latency(&mut self, what: &str, latency: &Latency) -> &mut Named<'a> {
        self.push(what, Metric::Histogram(latency.summary()))
    }

    /// `<name>.<what>`: one value in `unit`.
    pub fn value(&mut self, what: &str, unit: Unit, value: f64) -> &mut Named<'a> {
        self.push(what, Metric::Value(Gauge { unit, value }))
    }

    /// `<name>.<what>`: a count (errors, devices, cgroups).
    pub fn count(&mut self, what: &str, count: u64) -> &mut Named<'a> {
        self.value(what, Unit::Count, count as f64)
    }

    fn push(&mut self, what: &str, metric: Metric) -> &mut Named<'a> {
        self.list.push((format!("{}.{what}", self.name), metric));
        self
    }

    pub fn into_list(self) -> Vec<(String, Metric)> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_each_metric_after_its_owner_in_the_order_added() {
        let mut lat = Latency::new();
        lat.record(Duration::from_micros(5));
        let mut m = Named::new("churn");
        m.latency("mkdir", &lat)
            .count("errors", 3)
            .value("share", Unit::Ratio, 0.5);
        let list = m.into_list();
        let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["churn.mkdir", "churn.errors", "churn.share"]);
        assert!(matches!(&list[0].1, Metric::Histogram(s) if s.count == 1 && s.unit == Unit::Ns));
        assert!(matches!(&list[1].1, Metric::Value(g) if g.value == 3.0 && g.unit == Unit::Count));
        assert!(matches!(&list[2].1, Metric::Value(g) if g.value == 0.5 && g.unit == Unit::Ratio));
    }
}
