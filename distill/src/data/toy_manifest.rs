//! The manifest of a test's toy cache (test builds only): what the loaders read comes from the test, the
//! rest (tool, model, dates) is one fixed stand-in.

use vl2v::cache::{
    ClassInfo, Counts, DatasetInfo, EmbeddingDtype, EncoderInfo, EncoderRole, Manifest, ViewSet,
    FORMAT_VERSION,
};

/// A toy cache: its encoder's role, domains and classes (folder = name), embedding width and dtype,
/// augmented views per image, images and part files. A teacher's manifest has CLIP's logit scale 100 and
/// normalised embeddings; templates are the test's to set.
pub struct ToyCache<'a> {
    pub role: EncoderRole,
    pub domains: &'a [&'a str],
    pub classes: Vec<String>,
    pub dim: usize,
    pub dtype: EmbeddingDtype,
    pub views: u32,
    pub images: u64,
    pub parts: Vec<String>,
}

impl ToyCache<'_> {
    pub fn manifest(self) -> Manifest {
        let teacher = self.role == EncoderRole::Teacher;
        Manifest {
            format_version: FORMAT_VERSION,
            tool_version: "test".into(),
            dataset: DatasetInfo {
                name: "toy".into(),
                root: "/toy".into(),
                domains: self.domains.iter().map(|d| d.to_string()).collect(),
                classes: self
                    .classes
                    .into_iter()
                    .map(|c| ClassInfo {
                        folder: c.clone(),
                        name: c,
                    })
                    .collect(),
            },
            encoder: EncoderInfo {
                model: "tiny".into(),
                revision: None,
                commit: None,
                weights_sha256: "00".repeat(32),
                role: self.role,
                architecture: "test".into(),
                embedding_dim: self.dim,
                normalized: teacher,
            },
            preprocess: serde_json::json!({}),
            views: ViewSet {
                count: self.views,
                seed: 0,
                recipe: "test".into(),
            },
            embedding_dtype: self.dtype,
            logit_scale: teacher.then_some(100.0),
            templates: vec![],
            counts: Counts {
                images: self.images,
                rows: self.images * u64::from(self.views + 1),
                ..Counts::default()
            },
            skipped: vec![],
            parts: self.parts,
            shards: 1,
            computed_on: Vec::new(),
            created: "2025-01-01T00:00:00Z".into(),
            finished: "2025-01-01T00:00:00Z".into(),
        }
    }
}
