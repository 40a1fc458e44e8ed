//! What kchaos puts into every guest image, whatever its form (initramfs or systemd
//! disk): the runner, the kernel modules it loads and their order, host tools, and a
//! description of the image for the evidence trail.

use kchaos_model::image::{IMAGE_INFO_PATH, MODULE_ORDER_PATH};

use super::tools::ToolFile;
use crate::cache::{sha256_hex, KeyHasher};
use crate::kernel::modules::LoadableModule;

/// The inputs of an image.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    pub runner: &'a [u8],
    /// `uname -r` of the kernel the modules belong to.
    pub release: &'a str,
    pub modules: &'a [LoadableModule],
    /// Host programs and their libraries (`[vm] tools`).
    pub tools: &'a [ToolFile],
}

/// A file of the payload, at its absolute path in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
    pub origin: FileOrigin,
}

/// Where a payload file comes from: an image with its own userland keeps its own copy
/// of a host tool or library, never of kchaos's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOrigin {
    Runner,
    Module,
    /// Module order and image description.
    Kchaos,
    /// A host program or library (`[vm] tools`).
    Tool,
}

impl Payload<'_> {
    /// A content hash of the inputs, for cache keys; `format` names the image form and
    /// its layout version.
    pub fn key(&self, format: &str) -> String {
        let mut hasher = KeyHasher::new(format);
        hasher.field(self.runner).field(self.release.as_bytes());
        for m in self.modules {
            hasher.field(m.name.as_bytes()).field(&m.data);
        }
        for t in self.tools {
            hasher.field(t.path.as_bytes()).field(&t.data);
        }
        hasher.finish()
    }

    /// Every file, with the runner at `runner_path`.
    pub fn files(&self, runner_path: &str, format: &str) -> Vec<PayloadFile> {
        let mut files = vec![PayloadFile {
            path: runner_path.to_owned(),
            data: self.runner.to_vec(),
            mode: 0o755,
            origin: FileOrigin::Runner,
        }];
        let mut order = String::new();
        for m in self.modules {
            let path = format!("/lib/modules/{}/{}", self.release, m.relative.display());
            order.push_str(&path);
            order.push('\n');
            files.push(PayloadFile {
                path,
                data: m.data.clone(),
                mode: 0o644,
                origin: FileOrigin::Module,
            });
        }
        files.push(PayloadFile {
            path: MODULE_ORDER_PATH.to_owned(),
            data: order.into_bytes(),
            mode: 0o644,
            origin: FileOrigin::Kchaos,
        });
        for t in self.tools {
            files.push(PayloadFile {
                path: t.path.clone(),
                data: t.data.clone(),
                mode: if t.executable { 0o755 } else { 0o644 },
                origin: FileOrigin::Tool,
            });
        }
        let info = serde_json::json!({
            "format": format,
            "release": self.release,
            "modules": self.modules.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
            "tools": self.tools.iter().map(|t| t.path.clone()).collect::<Vec<_>>(),
            "runner_sha256": sha256_hex(self.runner),
        });
        files.push(PayloadFile {
            path: IMAGE_INFO_PATH.to_owned(),
            data: info.to_string().into_bytes(),
            mode: 0o644,
            origin: FileOrigin::Kchaos,
        });
        files
    }
}

/// The directories above `path` (relative, top-down): `a/b/c` → `a`, `a/b`.
pub fn parents(path: &str) -> Vec<String> {
    let rel = path.trim_start_matches('/');
    let mut out: Vec<String> = std::path::Path::new(rel)
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_put_modules_under_their_release_and_list_the_order() {
        let modules = vec![LoadableModule {
            name: "veth".into(),
            relative: "kernel/drivers/net/veth.ko".into(),
            data: b"\x7fELF".to_vec(),
        }];
        let p = Payload {
            runner: b"R",
            release: "6.1.0-t",
            modules: &modules,
            tools: &[],
        };
        let files = p.files("/init", "test");
        assert_eq!(files[0].path, "/init");
        assert_eq!(
            files[1].path,
            "/lib/modules/6.1.0-t/kernel/drivers/net/veth.ko"
        );
        let order = files.iter().find(|f| f.path == MODULE_ORDER_PATH).unwrap();
        assert_eq!(
            order.data,
            b"/lib/modules/6.1.0-t/kernel/drivers/net/veth.ko\n"
        );
        assert_ne!(p.key("a"), p.key("b"), "the form is part of the key");
        assert_eq!(parents("/lib/x/y.so"), ["lib", "lib/x"]);
    }
}
