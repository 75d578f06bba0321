//! DomainBed's hyper-parameter selection over the configurations of a sweep (`model_selection.py`,
//! `SelectionMethod.hparams_accs` with `IIDAccuracySelectionMethod`): for each held-out domain and
//! replicate, the configuration whose selected evaluation has the highest training-domain validation
//! accuracy (`train_out`) wins, and its held-out accuracy is the sweep's.

use std::collections::BTreeMap;

use crate::commands::report::RunResult;

/// The winning configuration of one (held-out domain, replicate).
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub domain: String,
    pub replicate: (i64, u64),
    /// The winner's run folder (`<algorithm>@<tag>`).
    pub configuration: String,
    pub train_out: f64,
    /// The winner's OOD figure (its SWAD model's when it has one, as the report counts it).
    pub test: f64,
}

/// (held-out domain index, replicate) → (the rank of the best configuration so far, its run).
type Best<'r> = BTreeMap<(u64, (i64, u64)), (usize, &'r RunResult)>;

/// Picks among `runs` of the `configurations` (run folders) per (held-out domain, replicate), in the
/// order of held-out domain index, then replicate. Ties go to the configuration listed first.
pub fn select(runs: &[RunResult], configurations: &[String]) -> Vec<Choice> {
    let mut best: Best = BTreeMap::new();
    for run in runs {
        let Some(rank) = configurations.iter().position(|c| *c == run.algorithm) else {
            continue;
        };
        let slot = best.entry((run.env, run.replicate)).or_insert((rank, run));
        let better = run.selected.train_out > slot.1.selected.train_out
            || (run.selected.train_out == slot.1.selected.train_out && rank < slot.0);
        if better {
            *slot = (rank, run);
        }
    }
    best.into_values()
        .map(|(_, run)| Choice {
            domain: run.domain.clone(),
            replicate: run.replicate,
            configuration: run.algorithm.clone(),
            train_out: run.selected.train_out,
            test: run.selected.ood(),
        })
        .collect()
}

/// The choices as markdown: one line per (held-out domain, replicate), then the mean held-out accuracy
/// over the choices of each domain and their average.
pub fn markdown(title: &str, choices: &[Choice]) -> String {
    let mut s = format!(
        "## {title}: chosen by training-domain validation (DomainBed's hyper-parameter selection)\n\n\
         | held-out domain | trial seed | seed | chosen | train-domain val % | test acc % |\n\
         |---|---|---|---|---|---|\n"
    );
    let mut per_domain: Vec<(String, Vec<f64>)> = Vec::new();
    for c in choices {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} |\n",
            c.domain,
            c.replicate.0,
            c.replicate.1,
            c.configuration,
            100.0 * c.train_out,
            100.0 * c.test
        ));
        match per_domain.last_mut() {
            Some((d, v)) if *d == c.domain => v.push(c.test),
            _ => per_domain.push((c.domain.clone(), vec![c.test])),
        }
    }
    if !per_domain.is_empty() {
        let means: Vec<f64> = per_domain
            .iter()
            .map(|(_, v)| v.iter().sum::<f64>() / v.len() as f64)
            .collect();
        let cells: Vec<String> = per_domain
            .iter()
            .zip(&means)
            .map(|((d, _), m)| format!("{d} {:.1}", 100.0 * m))
            .collect();
        s.push_str(&format!(
            "\nHeld-out accuracy of the chosen configurations: {}; Avg-OOD {:.1} %\n",
            cells.join(", "),
            100.0 * means.iter().sum::<f64>() / means.len() as f64
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::trainer::Selected;

    fn run(config: &str, env: u64, trial: i64, train_out: f64, test_in: f64) -> RunResult {
        RunResult {
            algorithm: config.into(),
            env,
            domain: ["art", "photo"][env as usize].into(),
            replicate: (trial, 0),
            selected: Selected {
                step: 0,
                train_out,
                test_in,
                swad_test_in: None,
                swad_train_out: None,
            },
        }
    }

    /// By hand: per (domain, trial seed) the highest train_out wins, whatever its test accuracy; a tie
    /// goes to the configuration listed first; configurations not in the list are ignored.
    #[test]
    fn the_best_validation_wins_per_domain_and_replicate() {
        let configs = [
            "adip-align@lambda0.3".to_string(),
            "adip-align@lambda0.7".into(),
        ];
        let runs = [
            run("adip-align@lambda0.3", 0, 0, 0.80, 0.50),
            run("adip-align@lambda0.7", 0, 0, 0.85, 0.40),
            run("adip-align@lambda0.3", 0, 1, 0.90, 0.60),
            run("adip-align@lambda0.7", 0, 1, 0.70, 0.90),
            run("adip-align@lambda0.7", 1, 0, 0.75, 0.30),
            run("adip-align@lambda0.3", 1, 0, 0.75, 0.20),
            run("kd", 1, 0, 0.99, 0.99),
        ];
        let chosen = select(&runs, &configs);
        let picked: Vec<(&str, i64, &str, f64)> = chosen
            .iter()
            .map(|c| {
                (
                    c.domain.as_str(),
                    c.replicate.0,
                    c.configuration.as_str(),
                    c.test,
                )
            })
            .collect();
        assert_eq!(
            picked,
            [
                ("art", 0, "adip-align@lambda0.7", 0.40),
                ("art", 1, "adip-align@lambda0.3", 0.60),
                ("photo", 0, "adip-align@lambda0.3", 0.20),
            ]
        );
        let md = markdown("toy — adip-align", &chosen);
        // art: (0.40 + 0.60) / 2 = 50.0; photo 20.0; Avg-OOD (50 + 20) / 2 = 35.0.
        assert!(md.contains("art 50.0, photo 20.0; Avg-OOD 35.0 %"), "{md}");
    }
}
