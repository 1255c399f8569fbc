//! The tenant sandbox: every storage location a tenant's job names — its tables' paths, its
//! checkpoint and savepoint directories, the savepoint it starts from — must lie under one of
//! the tenant's storage roots, or the submission is refused with 403 `forbidden-location`
//! naming the option.
//!
//! The operator sets the roots as templates in which `{tenant}` stands for the tenant's id
//! (`s3://bucket/tenants/{tenant}/`). A location is compared after it is made plain: a URL's
//! scheme and bucket must match and no `.` or `..` segment may climb out; a local path is made
//! absolute (against the base directory, when there is one: relative paths have no meaning on
//! a cluster's workers), `..` is resolved, and symbolic links are followed as far as the path
//! exists, so a link under a root cannot lead out of it. Some directories are never a job's,
//! whatever the roots say: the server's own data directory (its metadata, admin token, and the
//! state of every tenant's jobs).
//!
//! `weir standalone`'s roots are its current directory, so the README's demo runs unchanged; a
//! cluster has the roots its operator gives, and none by default: a job there may only use the
//! state directory the operator set.

use std::path::{Component, Path, PathBuf};

use weir_dataflow::config::NamedLocation;
use weir_dataflow::wire::ErrorCode;

use super::problem::ApiError;
use crate::metadata::ids::TenantId;

/// Where the jobs of each tenant may read and write.
#[derive(Clone, Debug, Default)]
pub struct Sandbox {
    /// Root templates; `{tenant}` is replaced by the tenant's id.
    roots: Vec<String>,
    /// What relative local paths are resolved against; `None`: they are refused.
    base: Option<PathBuf>,
    /// Directories no job may name, whatever the roots (canonical paths).
    forbidden: Vec<PathBuf>,
}

/// A location made plain for comparing.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    Local(PathBuf),
    /// `scheme://rest`, `rest` without `.`/`..` segments or repeated slashes.
    Url {
        scheme: String,
        rest: String,
    },
}

impl Sandbox {
    /// Jobs may use locations under `roots` (templates with `{tenant}`), relative local paths
    /// resolved against `base` (`None`: refused).
    pub fn new(roots: Vec<String>, base: Option<PathBuf>) -> Sandbox {
        Sandbox { roots, base, forbidden: Vec::new() }
    }

    /// Whatever the roots say, no job may name `dir` or anything under it.
    pub fn forbid(mut self, dir: &Path) -> Sandbox {
        self.forbidden.push(resolve_links(&lexical(dir)));
        self
    }

    /// Checks every location of a job of `tenant`.
    pub fn check(&self, tenant: &TenantId, locations: &[NamedLocation]) -> Result<(), ApiError> {
        let roots: Vec<(String, Option<Place>)> = self
            .roots
            .iter()
            .map(|template| {
                let root = template.replace("{tenant}", &tenant.0);
                let place = self.place(&root).ok();
                (root, place)
            })
            .collect();
        for named in locations {
            let refuse = |why: String| {
                ApiError::new(ErrorCode::ForbiddenLocation, format!("{} = '{}': {why}", named.option, named.location))
                    .with("option", named.option.clone())
            };
            let place = self.place(&named.location).map_err(refuse)?;
            if let Place::Local(path) = &place
                && self.forbidden.iter().any(|dir| path.starts_with(dir))
            {
                return Err(refuse("this directory belongs to the server, not to jobs".into()));
            }
            if !roots.iter().any(|(_, root)| root.as_ref().is_some_and(|root| place.is_under(root))) {
                let allowed: Vec<&str> = roots.iter().map(|(root, _)| root.as_str()).collect();
                let why = if allowed.is_empty() {
                    "this cluster gives jobs no storage of their own; ask its operator for a storage root".to_string()
                } else {
                    format!("a job of tenant '{tenant}' may only use locations under {}", allowed.join(", "))
                };
                return Err(refuse(why));
            }
        }
        Ok(())
    }

    /// `location` made plain, or why it cannot be.
    fn place(&self, location: &str) -> Result<Place, String> {
        let location = location.trim();
        if let Some((scheme, rest)) = location.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme == "file" {
                return self.local(Path::new(rest));
            }
            let mut segments = Vec::new();
            for segment in rest.split('/').filter(|segment| !segment.is_empty()) {
                if segment == "." || segment == ".." {
                    return Err("a URL may not have `.` or `..` segments".into());
                }
                segments.push(segment);
            }
            return Ok(Place::Url { scheme, rest: segments.join("/") });
        }
        self.local(Path::new(location))
    }

    fn local(&self, path: &Path) -> Result<Place, String> {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            match &self.base {
                Some(base) => base.join(path),
                None => return Err("a relative path has no meaning on a cluster; give a full URL or path".into()),
            }
        };
        Ok(Place::Local(resolve_links(&lexical(&absolute))))
    }
}

impl Place {
    fn is_under(&self, root: &Place) -> bool {
        match (self, root) {
            (Place::Local(path), Place::Local(root)) => path.starts_with(root),
            (Place::Url { scheme, rest }, Place::Url { scheme: root_scheme, rest: root_rest }) => {
                scheme == root_scheme
                    && (rest == root_rest || root_rest.is_empty() || rest.starts_with(&format!("{root_rest}/")))
            }
            _ => false,
        }
    }
}

/// `path` with `.` dropped and `..` applied to what precedes it (never above the root).
fn lexical(path: &Path) -> PathBuf {
    let mut plain = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                plain.pop();
            }
            Component::CurDir => {}
            other => plain.push(other),
        }
    }
    plain
}

/// An absolute, lexically plain `path` with symbolic links followed in its longest existing
/// prefix, so that what it names is where it really leads.
fn resolve_links(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |real, name: &std::ffi::OsString| real.join(name));
        }
        match (existing.file_name().map(ToOwned::to_owned), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(option: &str, location: &str) -> NamedLocation {
        NamedLocation { option: option.into(), location: location.into() }
    }

    fn refused(sandbox: &Sandbox, tenant: &str, location: &str) -> Option<String> {
        let locations = [named("table 't' option 'path'", location)];
        sandbox.check(&TenantId::from(tenant), &locations).err().map(|e| {
            assert_eq!(e.code(), ErrorCode::ForbiddenLocation);
            assert_eq!(e.status(), 403);
            e.detail().to_string()
        })
    }

    #[test]
    fn urls_must_lie_under_the_tenants_own_root() {
        let sandbox = Sandbox::new(vec!["s3://bucket/tenants/{tenant}/".into()], None);
        for fine in ["s3://bucket/tenants/acme/in/", "S3://bucket//tenants/acme/x.json", "s3://bucket/tenants/acme"] {
            assert_eq!(refused(&sandbox, "acme", fine), None, "{fine}");
        }
        for bad in [
            "s3://bucket/tenants/globex/in/",
            "s3://bucket/tenants/acme-evil/",
            "s3://bucket/tenants/acme/../globex/",
            "s3://other/tenants/acme/",
            "gs://bucket/tenants/acme/",
            "/etc/passwd",
            "in.json",
        ] {
            let detail = refused(&sandbox, "acme", bad).unwrap_or_else(|| panic!("{bad} is refused"));
            assert!(detail.contains("table 't' option 'path'"), "{detail}");
        }
        let none = Sandbox::new(Vec::new(), None);
        let detail = refused(&none, "acme", "s3://bucket/x").expect("refused");
        assert!(detail.contains("ask its operator"), "{detail}");
    }

    #[test]
    fn local_paths_are_resolved_before_they_are_compared() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path().join("work");
        let data = root.join("weir-data");
        std::fs::create_dir_all(&data).expect("dirs");
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).expect("a link");
        let sandbox = Sandbox::new(vec![root.display().to_string()], Some(root.clone())).forbid(&data);
        for fine in ["in.json", "./out/", "sub/../in.json", &format!("file://{}/x", root.display())] {
            assert_eq!(refused(&sandbox, "default", fine), None, "{fine}");
        }
        for bad in ["../outside", "/etc/passwd", "etc-link/passwd", "weir-data/admin-token", "weir-data/../weir-data"] {
            assert!(refused(&sandbox, "default", bad).is_some(), "{bad} is refused");
        }
        let detail = refused(&sandbox, "default", "weir-data/admin-token").expect("refused");
        assert!(detail.contains("belongs to the server"), "{detail}");
        let on_a_cluster = Sandbox::new(vec![root.display().to_string()], None);
        let detail = refused(&on_a_cluster, "default", "in.json").expect("refused");
        assert!(detail.contains("relative path"), "{detail}");
    }
}
