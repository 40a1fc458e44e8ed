//! Reading one number out of a kernel stats file. Missing keys are errors, never zero.

use kchaos_model::scenario::CounterSelect;

/// Extracts the selected value. `kB` suffixes (`/proc/meminfo`) become bytes.
pub fn parse_counter(text: &str, select: &CounterSelect) -> Result<f64, String> {
    match select {
        CounterSelect::Whole => number(text.trim(), None),
        CounterSelect::Key { key } => {
            for line in text.lines() {
                let mut tokens = line.split_whitespace();
                let Some(first) = tokens.next() else { continue };
                if first.trim_end_matches(':') == key {
                    let value = tokens
                        .next()
                        .ok_or_else(|| format!("key `{key}` has no value"))?;
                    return number(value, tokens.next());
                }
            }
            Err(format!("no key `{key}`"))
        }
        CounterSelect::Cell { row, column } => {
            let mut lines = text.lines();
            let header = lines.next().ok_or("empty file")?;
            let columns: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
            let index = columns
                .iter()
                .position(|c| c == column)
                .ok_or_else(|| format!("no column `{column}` (header: {})", columns.join(" ")))?;
            for line in lines {
                let cells: Vec<&str> = line.split_whitespace().collect();
                if cells.first() == Some(&row.as_str()) {
                    let value = cells
                        .get(index)
                        .ok_or_else(|| format!("row `{row}` has no column {index}"))?;
                    return number(value, None);
                }
            }
            Err(format!("no row `{row}`"))
        }
        CounterSelect::Lines { skip } => {
            let skip = usize::try_from(*skip).unwrap_or(usize::MAX);
            Ok(text
                .lines()
                .skip(skip)
                .filter(|l| !l.trim().is_empty())
                .count() as f64)
        }
    }
}

fn number(text: &str, suffix: Option<&str>) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    Ok(if suffix == Some("kB") {
        value * 1024.0
    } else {
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files() {
        let stat = "nr_descendants 3\nnr_dying_descendants 997\n";
        let key = |k: &str| CounterSelect::Key { key: k.to_owned() };
        assert_eq!(parse_counter(stat, &key("nr_dying_descendants")), Ok(997.0));
        assert!(parse_counter(stat, &key("nr_dying"))
            .unwrap_err()
            .contains("no key"));
        let meminfo =
            "MemTotal:        1000 kB\nSlab:             200 kB\nHugePages_Total:       0\n";
        assert_eq!(parse_counter(meminfo, &key("Slab")), Ok(204_800.0));
        assert_eq!(parse_counter(meminfo, &key("HugePages_Total")), Ok(0.0));
    }

    #[test]
    fn proc_cgroups_table() {
        let text =
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t1\t1\nmemory\t0\t1003\t1\n";
        let cell = CounterSelect::Cell {
            row: "memory".into(),
            column: "num_cgroups".into(),
        };
        assert_eq!(parse_counter(text, &cell), Ok(1003.0));
        let bad = CounterSelect::Cell {
            row: "memory".into(),
            column: "nope".into(),
        };
        assert!(parse_counter(text, &bad).is_err());
    }

    #[test]
    fn proc_net_dev_lines_are_devices() {
        let text = "Inter-|   Receive\n face |bytes\n    lo: 0 0\n  eth0: 1 2\n";
        assert_eq!(
            parse_counter(text, &CounterSelect::Lines { skip: 2 }),
            Ok(2.0)
        );
    }

    #[test]
    fn whole_file() {
        assert_eq!(parse_counter("4096\n", &CounterSelect::Whole), Ok(4096.0));
        assert!(parse_counter("max\n", &CounterSelect::Whole).is_err());
    }
}
