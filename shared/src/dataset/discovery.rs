//! Walks a DomainBed-layout folder into a sorted list of images with domain and label.
//!
//! Order follows torchvision's `ImageFolder` as DomainBed uses it: domains and classes are sorted folder
//! names (byte order, which equals Python's code-point order), images sorted by path within a class.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DatasetSpec;

/// Extensions (lower case) recognised as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "gif"];

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("unknown dataset '{name}'; known datasets: {known} (or pass --root DIR for any folder in root/<domain>/<class>/<image> layout)")]
    UnknownDataset { name: String, known: String },
    #[error("dataset folder {0} does not exist (for the known benchmarks run `make data DATASET=<name>`, or pass --root DIR)")]
    MissingRoot(PathBuf),
    #[error("{root} has no domain folders (expected root/<domain>/<class>/<image>)")]
    NoDomains { root: PathBuf },
    #[error("{root} is missing the domain folder '{domain}' of {dataset}")]
    MissingDomain {
        root: PathBuf,
        dataset: String,
        domain: String,
    },
    #[error("domain '{domain}' has no class folders (expected {root}/{domain}/<class>/<image>)")]
    NoClasses { root: PathBuf, domain: String },
    #[error("domain '{domain}' has different classes from '{reference}': {detail}")]
    ClassMismatch {
        domain: String,
        reference: String,
        detail: String,
    },
    #[error("no images found under {0}")]
    NoImages(PathBuf),
    #[error("path is not valid UTF-8: {0}")]
    NonUtf8(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A class: its folder name (label order) and display name (`_` → space).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassInfo {
    pub folder: String,
    pub name: String,
}

/// One image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Relative to the dataset root, `/`-separated.
    pub path: String,
    /// Index into `Dataset::domains`.
    pub domain: usize,
    /// Index into `Dataset::classes`.
    pub label: usize,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub root: PathBuf,
    pub domains: Vec<String>,
    pub classes: Vec<ClassInfo>,
    pub images: Vec<ImageEntry>,
}

impl Dataset {
    pub fn domain_display_name(&self, domain: usize) -> String {
        self.domains[domain].replace('_', " ")
    }
}

/// Discovers the dataset under `root`. With a registered `spec`, exactly its domain folders are used;
/// otherwise every non-hidden sub-folder of `root` is a domain.
pub fn discover(
    name: &str,
    root: &Path,
    spec: Option<&DatasetSpec>,
) -> Result<Dataset, DiscoveryError> {
    if !root.is_dir() {
        return Err(DiscoveryError::MissingRoot(root.to_path_buf()));
    }
    let domains = match spec {
        Some(spec) => {
            for domain in spec.domains {
                if !root.join(domain).is_dir() {
                    return Err(DiscoveryError::MissingDomain {
                        root: root.to_path_buf(),
                        dataset: spec.name.to_string(),
                        domain: domain.to_string(),
                    });
                }
            }
            spec.domains.iter().map(|d| d.to_string()).collect()
        }
        None => sorted_subdirs(root)?,
    };
    if domains.is_empty() {
        return Err(DiscoveryError::NoDomains {
            root: root.to_path_buf(),
        });
    }

    let mut class_folders: Option<(String, Vec<String>)> = None;
    for domain in &domains {
        let classes = sorted_subdirs(&root.join(domain))?;
        if classes.is_empty() {
            return Err(DiscoveryError::NoClasses {
                root: root.to_path_buf(),
                domain: domain.clone(),
            });
        }
        match &class_folders {
            None => class_folders = Some((domain.clone(), classes)),
            Some((reference, expected)) if *expected != classes => {
                return Err(DiscoveryError::ClassMismatch {
                    domain: domain.clone(),
                    reference: reference.clone(),
                    detail: describe_difference(expected, &classes),
                })
            }
            Some(_) => {}
        }
    }
    let (_, class_folders) = class_folders.expect("at least one domain");

    let mut images = Vec::new();
    for (d, domain) in domains.iter().enumerate() {
        for (label, class) in class_folders.iter().enumerate() {
            let mut files = Vec::new();
            collect_images(&root.join(domain).join(class), &mut files)?;
            for file in files {
                let relative = file.strip_prefix(root).expect("walked under root");
                images.push(ImageEntry {
                    path: slash_path(relative)?,
                    domain: d,
                    label,
                });
            }
        }
    }
    if images.is_empty() {
        return Err(DiscoveryError::NoImages(root.to_path_buf()));
    }
    let classes = class_folders
        .into_iter()
        .map(|folder| ClassInfo {
            name: folder.replace('_', " "),
            folder,
        })
        .collect();
    Ok(Dataset {
        name: name.to_string(),
        root: root.to_path_buf(),
        domains,
        classes,
        images,
    })
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn read_dir(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, DiscoveryError> {
    let io = |source| DiscoveryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| DiscoveryError::NonUtf8(path.clone()))?;
        if is_hidden(&name) {
            continue;
        }
        // Follows symlinks, so datasets assembled from links work.
        let is_dir = path.is_dir();
        entries.push((name, path, is_dir));
    }
    entries.sort();
    Ok(entries)
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<String>, DiscoveryError> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter(|e| e.2)
        .map(|e| e.0)
        .collect())
}

/// Recursive, in torchvision `ImageFolder`'s order, which DomainBed's splits index into: folders sorted
/// by their whole path string (`sorted(os.walk(...))`), then each folder's own files by name. So a
/// class folder's files come before those of its sub-folders, and `a/x` sorts after `a-b`.
fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DiscoveryError> {
    let mut folders: Vec<(String, Vec<PathBuf>)> = Vec::new();
    walk(dir, String::new(), &mut folders)?;
    folders.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(folders.into_iter().flat_map(|(_, files)| files));
    Ok(())
}

fn walk(
    dir: &Path,
    key: String,
    folders: &mut Vec<(String, Vec<PathBuf>)>,
) -> Result<(), DiscoveryError> {
    let mut files = Vec::new();
    for (name, path, is_dir) in read_dir(dir)? {
        if is_dir {
            walk(&path, format!("{key}/{name}"), folders)?;
        } else if has_image_extension(&name) {
            files.push(path);
        }
    }
    // read_dir sorts by name already.
    folders.push((key, files));
    Ok(())
}

fn has_image_extension(name: &str) -> bool {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => IMAGE_EXTENSIONS
            .iter()
            .any(|known| ext.eq_ignore_ascii_case(known)),
        _ => false,
    }
}

fn slash_path(relative: &Path) -> Result<String, DiscoveryError> {
    let parts: Option<Vec<&str>> = relative
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect();
    parts
        .map(|p| p.join("/"))
        .ok_or_else(|| DiscoveryError::NonUtf8(relative.to_path_buf()))
}

fn describe_difference(expected: &[String], found: &[String]) -> String {
    let expected: BTreeSet<_> = expected.iter().collect();
    let found: BTreeSet<_> = found.iter().collect();
    let list = |set: Vec<&&String>| {
        set.iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing = list(expected.difference(&found).collect());
    let extra = list(found.difference(&expected).collect());
    match (missing.is_empty(), extra.is_empty()) {
        (false, false) => format!("missing {missing}; extra {extra}"),
        (false, true) => format!("missing {missing}"),
        _ => format!("extra {extra}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::lookup;

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    #[test]
    fn sorted_domains_classes_and_labels_with_edge_cases() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for domain in ["Real World", "Art"] {
            touch(root, &format!("{domain}/Alarm_Clock/b.JPG"));
            touch(root, &format!("{domain}/Alarm_Clock/a.jpeg"));
            touch(root, &format!("{domain}/Alarm_Clock/notes.txt"));
            touch(root, &format!("{domain}/Alarm_Clock/.hidden.jpg"));
            touch(root, &format!("{domain}/Alarm_Clock/nested/c.Png"));
            touch(root, &format!("{domain}/Alarm_Clock/nested-2/d.png"));
            touch(root, &format!("{domain}/Alarm_Clock/nested/deep/e.png"));
            touch(root, &format!("{domain}/Alarm_Clock/z.png"));
            touch(root, &format!("{domain}/Bike/x.webp"));
            touch(root, &format!("{domain}/.cache/x.jpg"));
        }
        touch(root, "README.md");
        let ds = discover("mine", root, None).unwrap();
        assert_eq!(ds.domains, ["Art", "Real World"]);
        assert_eq!(
            ds.classes
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["Alarm Clock", "Bike"]
        );
        assert_eq!(ds.classes[0].folder, "Alarm_Clock");
        let paths: Vec<_> = ds
            .images
            .iter()
            .map(|i| (i.path.as_str(), i.domain, i.label))
            .collect();
        assert_eq!(
            paths,
            [
                // ImageFolder's order (checked with Python): the folder's own files, then folders by
                // path string, so "nested-2" comes before "nested/deep" ('-' < '/').
                ("Art/Alarm_Clock/a.jpeg", 0, 0),
                ("Art/Alarm_Clock/b.JPG", 0, 0),
                ("Art/Alarm_Clock/z.png", 0, 0),
                ("Art/Alarm_Clock/nested/c.Png", 0, 0),
                ("Art/Alarm_Clock/nested-2/d.png", 0, 0),
                ("Art/Alarm_Clock/nested/deep/e.png", 0, 0),
                ("Art/Bike/x.webp", 0, 1),
                ("Real World/Alarm_Clock/a.jpeg", 1, 0),
                ("Real World/Alarm_Clock/b.JPG", 1, 0),
                ("Real World/Alarm_Clock/z.png", 1, 0),
                ("Real World/Alarm_Clock/nested/c.Png", 1, 0),
                ("Real World/Alarm_Clock/nested-2/d.png", 1, 0),
                ("Real World/Alarm_Clock/nested/deep/e.png", 1, 0),
                ("Real World/Bike/x.webp", 1, 1),
            ]
        );
        assert_eq!(ds.domain_display_name(1), "Real World");
    }

    #[test]
    fn class_mismatch_names_the_domain_and_classes() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a/dog/1.jpg");
        touch(dir.path(), "a/cat/1.jpg");
        touch(dir.path(), "b/dog/1.jpg");
        touch(dir.path(), "b/horse/1.jpg");
        let err = discover("x", dir.path(), None).unwrap_err().to_string();
        assert_eq!(
            err,
            "domain 'b' has different classes from 'a': missing 'cat'; extra 'horse'"
        );
    }

    #[test]
    fn missing_root_empty_root_and_missing_registered_domain() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(discover("x", &missing, None)
            .unwrap_err()
            .to_string()
            .contains("nope does not exist"));
        assert!(discover("x", dir.path(), None)
            .unwrap_err()
            .to_string()
            .contains("has no domain folders"));
        touch(dir.path(), "Art/dog/1.jpg");
        let err = discover(
            "officehome",
            dir.path(),
            Some(lookup("officehome").unwrap()),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("missing the domain folder 'Clipart' of officehome"),
            "{err}"
        );
    }

    #[test]
    fn registered_dataset_ignores_extra_folders() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["art_painting", "cartoon", "photo", "sketch"] {
            touch(dir.path(), &format!("{d}/dog/1.jpg"));
        }
        touch(dir.path(), "kfold_extra/dog/1.jpg");
        let ds = discover("pacs", dir.path(), Some(lookup("pacs").unwrap())).unwrap();
        assert_eq!(ds.domains.len(), 4);
        assert_eq!(ds.images.len(), 4);
    }
}
