//! Datasets in DomainBed layout: `root/<domain>/<class>/<image>`.

mod discovery;
mod registry;

pub use discovery::{discover, ClassInfo, Dataset, DiscoveryError, ImageEntry, IMAGE_EXTENSIONS};
pub use registry::{lookup, DatasetSpec, REGISTRY};
