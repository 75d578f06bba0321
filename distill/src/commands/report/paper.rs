//! The paper's published OOD accuracies (`distill/paper/tables.json`: Tables 1–2 of VL2V-ADiP, per dataset,
//! as docs/PAPER.md transcribes them), which `distill report` prints beside its own Avg-OOD for the rows and
//! datasets the paper has.

use serde::Deserialize;

const TABLES: &str = include_str!("../../../paper/tables.json");

#[derive(Debug, Deserialize)]
struct File {
    datasets: Vec<String>,
    tables: Vec<Table>,
}

#[derive(Debug, Deserialize)]
struct Table {
    table: String,
    rows: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct Row {
    method: String,
    algorithm: String,
    ood: Vec<f64>,
    /// The paper's own average, read by the test that checks the transcription against it.
    #[cfg_attr(not(test), allow(dead_code))]
    avg_ood: f64,
}

/// One published number: the method's OOD accuracy (%) on a dataset, and where it is printed.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub ood: f64,
    pub method: String,
    pub table: String,
}

fn file() -> File {
    // The file is committed and parsed by a test: a failure here is a build defect.
    serde_json::from_str(TABLES).expect("distill/paper/tables.json parses")
}

/// The paper's OOD accuracy on `dataset` (vl2v's name) of the method `row` runs (`<algorithm>[@<tag>]`).
pub fn published(dataset: &str, row: &str) -> Option<Published> {
    let algorithm = row.split('@').next().unwrap_or(row);
    let file = file();
    let column = file.datasets.iter().position(|d| d == dataset)?;
    file.tables.iter().find_map(|t| {
        t.rows
            .iter()
            .find(|r| r.algorithm == algorithm)
            .map(|r| Published {
                ood: r.ood[column],
                method: r.method.clone(),
                table: t.table.clone(),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_averages_to_the_papers_avg_ood() {
        let file = file();
        assert_eq!(file.datasets.len(), 5);
        let mut algorithms = Vec::new();
        for table in &file.tables {
            for row in &table.rows {
                assert_eq!(row.ood.len(), 5, "{}", row.method);
                let mean = row.ood.iter().sum::<f64>() / 5.0;
                // The paper prints two decimals, of averages of unrounded numbers: ERM linear probe's
                // five columns average 56.804, printed 56.81.
                assert!(
                    (mean - row.avg_ood).abs() <= 0.01 + 1e-9,
                    "{} {}: mean {mean} vs {}",
                    table.table,
                    row.method,
                    row.avg_ood
                );
                assert!(crate::algorithms::REGISTRY
                    .iter()
                    .any(|e| e.name == row.algorithm));
                algorithms.push(row.algorithm.clone());
            }
        }
        let n = algorithms.len();
        algorithms.sort();
        algorithms.dedup();
        assert_eq!(algorithms.len(), n, "one published row per algorithm");
    }

    #[test]
    fn rows_and_tags_find_their_published_number() {
        // docs/PAPER.md: Table 2, VL2V-ADiP on PACS; Table 1, zero-shot on DomainNet.
        let p = published("pacs", "adip-distill@lambda0.5").unwrap();
        assert_eq!((p.ood, p.table.as_str()), (94.94, "Table 2"));
        let p = published("domainnet", "zeroshot").unwrap();
        assert_eq!((p.ood, p.method.as_str()), (57.70, "Zero-shot"));
        assert_eq!(published("synthdg", "adip-distill"), None);
        assert_eq!(published("officehome", "adip-align"), None);
    }
}
