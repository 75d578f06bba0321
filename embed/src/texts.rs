//! Class-text embeddings: every class × template (× domain) prompt, written once to `texts.parquet`.

use anyhow::{Context, Result};
use vl2v::cache::{write_texts, TextRow, TEXTS_FILE};
use vl2v::prompts::expand;

use crate::job::Job;

/// Writes `texts.parquet` (teachers only) unless an earlier run (or another shard) already did.
pub fn ensure(job: &Job) -> Result<()> {
    let path = job.dir.join(TEXTS_FILE);
    let Some(teacher) = job.encoder.teacher() else {
        return Ok(());
    };
    if path.exists() {
        return Ok(());
    }
    let prompts = expand(&job.settings.templates, &job.dataset);
    let texts: Vec<String> = prompts.iter().map(|p| p.text.clone()).collect();
    let embeddings = teacher.embed_texts(&texts, 256)?;
    let rows: Vec<TextRow> = prompts
        .into_iter()
        .zip(embeddings)
        .map(|(p, embedding)| TextRow {
            label: p.label,
            class_name: p.class_name,
            template: p.template,
            domain: p.domain,
            prompt: p.text,
            embedding,
        })
        .collect();
    eprintln!("embedded {} prompts", rows.len());
    write_texts(&path, teacher.embedding_dim(), job.settings.dtype, &rows)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
