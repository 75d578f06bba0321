//! The benchmarks vl2v knows by name, with the folder layout DomainBed's download script produces.

use super::DiscoveryError;

/// A benchmark known by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetSpec {
    pub name: &'static str,
    /// Folder under `data/` as DomainBed's `download.py` names it.
    pub folder: &'static str,
    /// Domain folders, exactly as on disk, in sorted order.
    pub domains: &'static [&'static str],
    /// DomainBed's name of the dataset (its class in `domainbed/datasets.py`, whose environments are these
    /// domains in this order), or `None` for a benchmark DomainBed lacks.
    pub domainbed: Option<&'static str>,
}

pub const REGISTRY: &[DatasetSpec] = &[
    DatasetSpec {
        name: "officehome",
        folder: "office_home",
        domains: &["Art", "Clipart", "Product", "Real World"],
        domainbed: Some("OfficeHome"),
    },
    DatasetSpec {
        name: "pacs",
        folder: "PACS",
        domains: &["art_painting", "cartoon", "photo", "sketch"],
        domainbed: Some("PACS"),
    },
    DatasetSpec {
        name: "vlcs",
        folder: "VLCS",
        domains: &["Caltech101", "LabelMe", "SUN09", "VOC2007"],
        domainbed: Some("VLCS"),
    },
    DatasetSpec {
        name: "terraincognita",
        folder: "terra_incognita",
        domains: &["location_100", "location_38", "location_43", "location_46"],
        domainbed: Some("TerraIncognita"),
    },
    DatasetSpec {
        name: "domainnet",
        folder: "domain_net",
        domains: &[
            "clipart",
            "infograph",
            "painting",
            "quickdraw",
            "real",
            "sketch",
        ],
        domainbed: Some("DomainNet"),
    },
    // Generated offline by `synthdg benchmark` (shared/src/synth), for demos without downloads.
    DatasetSpec {
        name: "synthdg",
        folder: "synthdg",
        domains: &["clipart", "painting", "photo", "sketch"],
        domainbed: None,
    },
];

/// Finds a registered benchmark by name (case-insensitive).
pub fn lookup(name: &str) -> Result<&'static DatasetSpec, DiscoveryError> {
    REGISTRY
        .iter()
        .find(|spec| spec.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| DiscoveryError::UnknownDataset {
            name: name.to_string(),
            known: REGISTRY
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_listed_in_sorted_folder_order() {
        for spec in REGISTRY {
            let mut sorted = spec.domains.to_vec();
            sorted.sort();
            assert_eq!(sorted, spec.domains, "{}", spec.name);
        }
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = lookup("imagenet").unwrap_err().to_string();
        assert!(err.contains("imagenet"), "{err}");
        assert!(
            err.contains("officehome, pacs, vlcs, terraincognita, domainnet"),
            "{err}"
        );
        assert_eq!(lookup("PACS").unwrap().folder, "PACS");
    }
}
