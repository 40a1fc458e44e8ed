//! `repro --set PATH=V1,V2`: scenario variants written next to the results, every
//! combination of the values, each validated as a scenario before it runs.

use std::path::{Path, PathBuf};

/// `(label, file)` per combination; the scenario itself when nothing is swept.
pub fn variants(
    scenario: &Path,
    sets: &[String],
    out: &Path,
) -> Result<Vec<(String, PathBuf)>, String> {
    if sets.is_empty() {
        return Ok(vec![(String::new(), scenario.to_path_buf())]);
    }
    let text =
        std::fs::read_to_string(scenario).map_err(|e| format!("{}: {e}", scenario.display()))?;
    let base: toml::Value =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", scenario.display()))?;
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for set in sets {
        let (path, values) = set
            .split_once('=')
            .ok_or_else(|| format!("`{set}`: a sweep is PATH=V1,V2,..."))?;
        axes.push((
            path.trim().to_owned(),
            values.split(',').map(value).collect(),
        ));
    }
    let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (path, values) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((path.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    let dir = out.join("variants");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for combo in combos {
        let mut doc = base.clone();
        let mut label = Vec::new();
        for (path, v) in &combo {
            set_path(&mut doc, path, v.clone())?;
            label.push(format!("{}={}", path, plain(v)));
        }
        let label = label.join(",");
        let slug: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let file = dir.join(format!("{slug}.toml"));
        let body = toml::to_string(&doc).map_err(|e| e.to_string())?;
        std::fs::write(
            &file,
            format!("# {} with {label}\n{body}", base_name(&base)),
        )
        .map_err(|e| format!("{}: {e}", file.display()))?;
        // A variant must still be a valid scenario.
        kchaos_model::scenario::parse(&file.display().to_string(), &body)
            .map_err(|e| format!("{label}: {e}"))?;
        files.push((label, file));
    }
    Ok(files)
}

fn base_name(doc: &toml::Value) -> String {
    doc.get("scenario")
        .and_then(|s| s.get("name"))
        .and_then(toml::Value::as_str)
        .unwrap_or("scenario")
        .to_owned()
}

fn plain(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `8` → integer, `0.5` → float, `true` → bool, anything else a string (`10s`).
fn value(text: &str) -> toml::Value {
    let t = text.trim();
    if let Ok(i) = t.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(f) = t.parse::<f64>() {
        toml::Value::Float(f)
    } else if let Ok(b) = t.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(t.to_owned())
    }
}

/// Sets `workload.0.concurrency` (tables by key, arrays by index).
fn set_path(doc: &mut toml::Value, path: &str, v: toml::Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    let Some((last, init)) = parts.split_last() else {
        return Err(format!("`{path}`: empty path"));
    };
    let mut at = doc;
    for part in init {
        at = match at {
            toml::Value::Table(t) => t
                .get_mut(*part)
                .ok_or_else(|| format!("`{path}`: no `{part}` in the scenario"))?,
            toml::Value::Array(a) => {
                let i: usize = part
                    .parse()
                    .map_err(|_| format!("`{path}`: `{part}` is not an index"))?;
                let len = a.len();
                a.get_mut(i)
                    .ok_or_else(|| format!("`{path}`: index {i} out of {len}"))?
            }
            _ => return Err(format!("`{path}`: `{part}` is not a table or array")),
        };
    }
    match at {
        toml::Value::Table(t) => {
            t.insert((*last).to_owned(), v);
            Ok(())
        }
        _ => Err(format!("`{path}`: cannot set `{last}` there")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_make_every_combination_as_valid_scenarios() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "[scenario]\nname = \"s\"\nduration = \"5s\"\n\n[vm]\ncpus = 2\n\n[[probe]]\nkind = \"d-state\"\nname = \"d\"\n",
        )
        .unwrap();
        let v = variants(
            &file,
            &["vm.cpus=1,2".into(), "scenario.duration=3s,9s".into()],
            dir.path(),
        )
        .unwrap();
        let labels: Vec<&str> = v.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "vm.cpus=1,scenario.duration=3s",
                "vm.cpus=1,scenario.duration=9s",
                "vm.cpus=2,scenario.duration=3s",
                "vm.cpus=2,scenario.duration=9s"
            ]
        );
        let text = std::fs::read_to_string(&v[1].1).unwrap();
        assert!(
            text.contains("cpus = 1") && text.contains("duration = \"9s\""),
            "{text}"
        );
        let bad = variants(&file, &["vm.nope.x=1".into()], dir.path()).unwrap_err();
        assert!(bad.contains("no `nope`"), "{bad}");
        let invalid = variants(&file, &["vm.cpus=zero".into()], dir.path()).unwrap_err();
        assert!(invalid.contains("vm.cpus=zero"), "{invalid}");
    }
}
