//! Short kernel labels for the report's column headers and legends (with the topology,
//! on a topology axis: each kernel on each topology is a column).
//!
//! A `path:` spec is the whole command-line argument
//! (`path:/…/arch/x86/boot/bzImage,modules=/…,config=/…`): as a column header or a legend
//! entry it overflowed every box. The report shows the kernel list's name for the spec
//! when it has one (`deb612`), else the kernel's release for a local build
//! (`6.13.0-rc1`), else the resolved Debian spec (`debian:6.1.0-56-cloud`, already
//! short); the full spec stays in the header's tooltip and the kernels table.

use std::collections::BTreeMap;

use kchaos_images::kernel_list::KernelList;

use crate::results::{CellResult, KernelInfo};

/// Kernel-list names by spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelNames(BTreeMap<String, String>);

impl KernelNames {
    /// Every named kernel of `list`; of two names for one spec, the first in name order.
    pub fn from_list(list: &KernelList) -> KernelNames {
        let mut names = BTreeMap::new();
        for (name, kernel) in &list.kernels {
            names
                .entry(kernel.spec.clone())
                .or_insert_with(|| name.clone());
        }
        KernelNames(names)
    }

    /// The names of the default kernel list, if there is one here; none otherwise (the
    /// report then labels kernels by release).
    pub fn from_default_list() -> KernelNames {
        KernelList::load_default()
            .map(|l| KernelNames::from_list(&l))
            .unwrap_or_default()
    }

    pub fn get(&self, spec: &str) -> Option<&str> {
        self.0.get(spec).map(String::as_str)
    }
}

/// Longest label shown as is; longer ones are cut in the middle.
const MAX_LABEL: usize = 32;

/// A kernel as the report groups and shows it: on a topology axis, a kernel on one
/// topology (the report shows topologies like kernels, a column each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelColumn {
    /// What cells are grouped by: the kernel as resolved, else as asked, and the
    /// topology when the cells have one.
    pub key: String,
    /// What headers and legends show, unique among the columns (`deb61 [2s1c]`).
    pub label: String,
    /// The first cell's view of the kernel: spec, resolution, release, package.
    pub info: KernelInfo,
    pub topology: Option<String>,
}

impl KernelColumn {
    /// The tooltip: every name the kernel has, and the topology.
    pub fn title(&self) -> String {
        let mut out = self.info.spec.clone();
        for (what, v) in [
            ("resolved", &self.info.resolved),
            ("release", &self.info.release),
            ("package", &self.info.package),
            ("topology", &self.topology),
        ] {
            if let Some(v) = v {
                out.push_str(&format!("\n{what}: {v}"));
            }
        }
        out
    }
}

/// The key cells are grouped by: the kernel, and the topology when there is one.
pub fn kernel_key(cell: &CellResult) -> String {
    let kernel = cell
        .kernel
        .resolved
        .clone()
        .unwrap_or_else(|| cell.kernel.spec.clone());
    crate::results::scenario_label(&kernel, cell.topology.as_deref())
}

/// The kernels of `cells` in the order they first appear (the matrix order), labelled.
pub fn columns<'a>(
    cells: impl IntoIterator<Item = &'a CellResult>,
    names: &KernelNames,
) -> Vec<KernelColumn> {
    let mut out: Vec<KernelColumn> = Vec::new();
    for cell in cells {
        let key = kernel_key(cell);
        match out.iter_mut().find(|c| c.key == key) {
            // A later cell may know the release a pre-boot one did not.
            Some(col) if col.info.release.is_none() => {
                col.info.release.clone_from(&cell.kernel.release);
            }
            Some(_) => {}
            None => out.push(KernelColumn {
                key,
                label: String::new(),
                info: cell.kernel.clone(),
                topology: cell.topology.clone(),
            }),
        }
    }
    let mut labels: Vec<String> = out
        .iter()
        .map(|c| {
            crate::results::scenario_label(&short_label(&c.info, names), c.topology.as_deref())
        })
        .collect();
    // Two local builds of one release: number them, in matrix order.
    for i in 0..labels.len() {
        let same: Vec<usize> = (i..labels.len())
            .filter(|&j| labels[j] == labels[i])
            .collect();
        if same.len() > 1 {
            let base = labels[i].clone();
            for (n, j) in same.into_iter().enumerate() {
                labels[j] = format!("{base} #{}", n + 1);
            }
        }
    }
    for (col, label) in out.iter_mut().zip(labels) {
        col.label = label;
    }
    out
}

/// The name the kernel list gives the spec, else the release of a local build, else
/// the resolved spec, cut to [`MAX_LABEL`] characters.
pub fn short_label(info: &KernelInfo, names: &KernelNames) -> String {
    if let Some(name) = names.get(&info.spec) {
        return cut(name);
    }
    let local = !info.spec.starts_with("debian:");
    let label = match (&info.release, &info.resolved) {
        (Some(release), _) if local => release.clone(),
        (_, Some(resolved)) if !local => resolved.clone(),
        _ => info.spec.clone(),
    };
    cut(&label)
}

/// `path:/home/…/bzImage`: the start and the end of a long text.
fn cut(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= MAX_LABEL {
        return text.to_owned();
    }
    let keep = (MAX_LABEL - 1) / 2;
    let head: String = chars[..keep].iter().collect();
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::kernel_info;

    const LONG: &str = "path:/home/someone/src/linux/arch/x86/boot/bzImage,modules=/home/someone/src/linux/mods/lib/modules/6.13.0-rc1,config=/home/someone/src/linux/.config";

    #[test]
    fn labels_are_the_list_name_the_release_or_the_resolved_spec() {
        let list = KernelList::parse(
            std::path::Path::new("k.toml"),
            "[kernels.deb612]\nspec = \"debian:6.12-cloud\"\n[kernels.a]\nspec = \"debian:6.1-cloud\"\n[kernels.b]\nspec = \"debian:6.1-cloud\"\n",
        )
        .unwrap();
        let names = KernelNames::from_list(&list);
        let table: &[(KernelInfo, &str)] = &[
            (
                kernel_info(
                    "debian:6.12-cloud",
                    Some("debian:6.12.48-1-cloud"),
                    Some("6.12.48+deb13-cloud-amd64"),
                ),
                "deb612",
            ),
            // Two names for one spec: the first in name order.
            (kernel_info("debian:6.1-cloud", None, None), "a"),
            (
                kernel_info(
                    "debian:6.1.0-56-cloud",
                    Some("debian:6.1.0-56-cloud"),
                    Some("6.1.0-56-cloud-amd64"),
                ),
                "debian:6.1.0-56-cloud",
            ),
            (
                kernel_info(LONG, Some("local-6.13.0-rc1"), Some("6.13.0-rc1")),
                "6.13.0-rc1",
            ),
            // A build that never booted has no release yet: its spec, cut short.
            (
                kernel_info(LONG, None, None),
                "path:/home/some…c/linux/.config",
            ),
        ];
        for (i, want) in table {
            assert_eq!(short_label(i, &names), *want, "{i:?}");
            assert!(want.chars().count() <= MAX_LABEL);
        }
        assert_eq!(
            short_label(
                &kernel_info("debian:6.1-cloud", None, None),
                &KernelNames::default()
            ),
            "debian:6.1-cloud"
        );
    }

    #[test]
    fn columns_are_in_matrix_order_with_unique_labels() {
        let mut cells = Vec::new();
        for (id, spec, release) in [
            ("m/a", LONG.to_owned(), "6.13.0"),
            ("m/b", "path:/other/bzImage".to_owned(), "6.13.0"),
            ("m/c", "debian:6.1-cloud".to_owned(), "6.1.0-56-cloud-amd64"),
            ("n/a", LONG.to_owned(), "6.13.0"),
        ] {
            let mut c = crate::results::test_cell(id, kchaos_model::verdict::Verdict::Pass, 1e6);
            c.kernel = kernel_info(&spec, Some(&spec), Some(release));
            cells.push(c);
        }
        let cols = columns(&cells, &KernelNames::default());
        let labels: Vec<&str> = cols.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["6.13.0 #1", "6.13.0 #2", "debian:6.1-cloud"]);
        assert!(cols[0].title().starts_with(LONG));
        assert!(cols[0].title().contains("release: 6.13.0"));
    }

    #[test]
    fn a_kernel_on_each_topology_is_a_column_of_its_own() {
        let cells: Vec<CellResult> = [("m/k/topo-1", Some("1")), ("m/k/topo-2s1c", Some("2s1c"))]
            .into_iter()
            .map(|(id, topology)| {
                let mut c =
                    crate::results::test_cell("m/k", kchaos_model::verdict::Verdict::Pass, 1e6);
                id.clone_into(&mut c.id);
                c.topology = topology.map(str::to_owned);
                c
            })
            .collect();
        let cols = columns(&cells, &KernelNames::default());
        let labels: Vec<&str> = cols.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["debian:k [1]", "debian:k [2s1c]"]);
        assert_ne!(kernel_key(&cells[0]), kernel_key(&cells[1]));
        assert!(
            cols[1].title().ends_with("topology: 2s1c"),
            "{}",
            cols[1].title()
        );
    }
}
