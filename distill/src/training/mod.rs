//! The training loop and its records: one leave-one-domain-out run ([`trainer`]), evaluation and
//! DomainBed's selection ([`evaluate`]), SWAD ([`swad`]), the run folder ([`run_dir`]), and the backbone
//! that trains end to end ([`trainable_backbone`]) with where it comes from ([`backbone_from_caches`]).

pub mod backbone_from_caches;
pub mod evaluate;
pub mod run_dir;
pub mod swad;
pub mod trainable_backbone;
pub mod trainer;
