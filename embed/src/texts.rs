//! Class-text embeddings: every class × template (× domain) prompt, in `texts.parquet`. A cache that gets
//! new templates (`embed --templates FILE` on an existing cache) gets the prompts it lacks added; the
//! ones it holds are kept as they are.

use std::collections::HashSet;

use anyhow::{Context, Result};
use vl2v::cache::{read_texts, write_texts, TextRow, TEXTS_FILE};
use vl2v::prompts::expand;

use crate::job::{lock_texts, Job};

/// Writes `texts.parquet` (teachers only) with every prompt of the job's templates, embedding only those
/// that an earlier run (or another shard) has not.
pub fn ensure(job: &Job) -> Result<()> {
    let path = job.dir.join(TEXTS_FILE);
    let Some(teacher) = job.encoder.teacher() else {
        return Ok(());
    };
    let _lock = lock_texts(&job.dir)?;
    let mut rows = if path.exists() {
        read_texts(&path).with_context(|| format!("cannot read {}", path.display()))?
    } else {
        Vec::new()
    };
    let cached = rows.len();
    let have: HashSet<(i32, &str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.label, r.template.as_str(), r.domain.as_deref()))
        .collect();
    let prompts: Vec<_> = expand(&job.settings.templates, &job.dataset)
        .into_iter()
        .filter(|p| !have.contains(&(p.label, p.template.as_str(), p.domain.as_deref())))
        .collect();
    if prompts.is_empty() {
        return Ok(());
    }
    let texts: Vec<String> = prompts.iter().map(|p| p.text.clone()).collect();
    let embeddings = teacher.embed_texts(&texts, 256)?;
    rows.extend(
        prompts
            .into_iter()
            .zip(embeddings)
            .map(|(p, embedding)| TextRow {
                label: p.label,
                class_name: p.class_name,
                template: p.template,
                domain: p.domain,
                prompt: p.text,
                embedding,
            }),
    );
    if cached == 0 {
        eprintln!("embedded {} prompts", rows.len());
    } else {
        eprintln!(
            "embedded {} new prompts ({} in {TEXTS_FILE})",
            rows.len() - cached,
            rows.len()
        );
    }
    write_texts(&path, teacher.embedding_dim(), job.settings.dtype, &rows)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
