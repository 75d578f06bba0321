//! What `embed` runs over the images: the CLIP teacher, or a frozen student backbone whose features
//! `distill` aligns and probes on the same views.

use vl2v::cache::EncoderRole;
use vl2v::model::students::{Student, StudentConfig, STUDENT_NAMES};
use vl2v::model::{ClipTeacher, Device, ModelError, ModelFiles};

pub enum Encoder {
    // Boxed: the tokenizer makes the teacher large.
    Teacher(Box<ClipTeacher>),
    // Boxed too: with the `cuda` feature candle's `Device` makes this variant large.
    Student {
        model: Box<Student>,
        name: String,
        device: Device,
    },
}

impl Encoder {
    pub fn load_student(name: &str, files: &ModelFiles, device: &Device) -> anyhow::Result<Self> {
        let config = StudentConfig::by_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown student '{name}'; known students: {}",
                STUDENT_NAMES.join(", ")
            )
        })?;
        let model = Box::new(Student::load_frozen(&files.weights, &config, device)?);
        Ok(Self::Student {
            model,
            name: name.to_string(),
            device: device.clone(),
        })
    }

    pub fn image_size(&self) -> usize {
        match self {
            Self::Teacher(t) => t.image_size(),
            Self::Student { model, .. } => model.config().image_size(),
        }
    }

    pub fn embedding_dim(&self) -> usize {
        match self {
            Self::Teacher(t) => t.embedding_dim(),
            Self::Student { model, .. } => model.dim(),
        }
    }

    /// Teacher embeddings are L2-normalised (only their direction is used); student features are kept raw,
    /// as the official code feeds them to the projection and the linear probe.
    pub fn normalized(&self) -> bool {
        matches!(self, Self::Teacher(_))
    }

    pub fn role(&self) -> EncoderRole {
        match self {
            Self::Teacher(_) => EncoderRole::Teacher,
            Self::Student { .. } => EncoderRole::Student,
        }
    }

    pub fn teacher(&self) -> Option<&ClipTeacher> {
        match self {
            Self::Teacher(t) => Some(t),
            Self::Student { .. } => None,
        }
    }

    pub fn architecture(&self) -> String {
        match self {
            Self::Teacher(t) => t.architecture(),
            Self::Student { name, model, .. } => {
                vl2v::model::students::architecture_label(name, model.dim())
            }
        }
    }

    /// `n` preprocessed images as one CHW f32 buffer → one embedding per image.
    pub fn embed_images(&self, pixels: &[f32], n: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        match self {
            Self::Teacher(t) => t.embed_images(pixels, n),
            Self::Student { model, device, .. } => model.features(pixels, n, device),
        }
    }
}
