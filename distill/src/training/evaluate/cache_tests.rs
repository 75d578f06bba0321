//! Evaluation on caches written by the cache's own writers: the features it hands `predict` are the Parquet
//! parts' view-0 embeddings, f16 caches score as f32 ones within rounding, and the chunk size changes
//! nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vl2v::cache::{
    read_image_rows, write_image_part, write_texts, EmbeddingDtype, EncoderRole, ImageRow,
    Manifest, TextRow, TEXTS_FILE,
};
use vl2v::rng::SplitMix64;
use vl2v::views::ViewParams;

use super::*;
use crate::algorithms::{lookup, Batch, Metrics, NamedTensor, Overrides, Setup};
use crate::data::cache_tables::TeacherCache;
use crate::data::toy_manifest::ToyCache;
use crate::data::{Reads, ViewTable};
use crate::prompt_styles::PHOTO;

const DOMAINS: [&str; 2] = ["art", "photo"];
const CLASSES: usize = 4;
const PER_CLASS: usize = 50;
/// Augmented views per image.
const VIEWS: u32 = 2;
const DT: usize = 16;
/// Above the GEMM's 512-wide blocks of the inner dimension, which small products use otherwise.
const DS: usize = 640;

fn noise(seed: u64, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..dim).map(|_| rng.unit_f32() * 2.0 - 1.0).collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Class codes: the teacher's texts (`DT`) and the student's (`DS`).
fn codes(dim: usize, salt: u64) -> Vec<Vec<f32>> {
    (0..CLASSES)
        .map(|c| unit(&noise(salt + c as u64, dim)))
        .collect()
}

fn manifest(role: EncoderRole, dim: usize, dtype: EmbeddingDtype, parts: Vec<String>) -> Manifest {
    let mut m = ToyCache {
        role,
        domains: &DOMAINS,
        classes: (0..CLASSES).map(|c| format!("c{c}")).collect(),
        dim,
        dtype,
        views: VIEWS,
        images: (DOMAINS.len() * CLASSES * PER_CLASS) as u64,
        parts,
    }
    .manifest();
    if role == EncoderRole::Teacher {
        m.templates = vec![PHOTO.into()];
    }
    m
}

/// A teacher cache (`<dir>/teacher`, unit embeddings near their class text) and a student cache
/// (`<dir>/student`, raw features near a class code) of the same images in `dtype`. Each part holds its
/// rows views descending, images in reverse, so that reading them in file order would be wrong.
fn write_pair(dir: &Path, dtype: EmbeddingDtype) -> (PathBuf, PathBuf) {
    let texts = codes(DT, 100);
    let student_codes = codes(DS, 200);
    let mut images = Vec::new();
    for domain in DOMAINS {
        for label in 0..CLASSES {
            for i in 0..PER_CLASS {
                images.push((format!("{domain}/c{label}/{i:02}.png"), domain, label));
            }
        }
    }
    let mut out = Vec::new();
    for (name, role, dim, class_codes, spread) in [
        ("teacher", EncoderRole::Teacher, DT, &texts, 0.6f32),
        ("student", EncoderRole::Student, DS, &student_codes, 1.5f32),
    ] {
        let cache = dir.join(name);
        std::fs::create_dir_all(cache.join("images")).unwrap();
        let mut parts = Vec::new();
        for (p, chunk) in images.chunks(images.len().div_ceil(3)).enumerate() {
            let mut rows = Vec::new();
            for (k, (path, domain, label)) in chunk.iter().enumerate().rev() {
                for view in (0..=VIEWS).rev() {
                    let seed = (p * 1000 + k) as u64 * 16 + u64::from(view) + dim as u64 * 7919;
                    let e: Vec<f32> = class_codes[*label]
                        .iter()
                        .zip(noise(seed, dim))
                        .map(|(c, n)| c + spread * n)
                        .collect();
                    rows.push(ImageRow {
                        path: path.clone(),
                        domain: domain.to_string(),
                        label: *label as i32,
                        view: view as i16,
                        params: ViewParams::identity(),
                        embedding: if role == EncoderRole::Teacher {
                            unit(&e)
                        } else {
                            e
                        },
                    });
                }
            }
            let part = format!("images/part-{p:05}.parquet");
            write_image_part(&cache.join(&part), dim, dtype, &rows, &[]).unwrap();
            parts.push(part);
        }
        if role == EncoderRole::Teacher {
            let rows: Vec<TextRow> = (0..CLASSES)
                .map(|c| TextRow {
                    label: c as i32,
                    class_name: format!("c{c}"),
                    template: PHOTO.into(),
                    domain: None,
                    prompt: format!("a photo of a c{c}"),
                    embedding: texts[c].clone(),
                })
                .collect();
            write_texts(&cache.join(TEXTS_FILE), dim, dtype, &rows).unwrap();
        }
        manifest(role, dim, dtype, parts).write(&cache).unwrap();
        out.push(cache);
    }
    (out[0].clone(), out[1].clone())
}

/// The view-0 embedding of every path, as the Parquet parts store it (f16 widened).
fn parquet_view0(cache: &Path) -> HashMap<String, Vec<f32>> {
    let m = Manifest::read(cache).unwrap();
    let mut out = HashMap::new();
    for part in &m.parts {
        for row in read_image_rows(&cache.join(part)).unwrap() {
            if row.view == 0 {
                out.insert(row.path, row.embedding);
            }
        }
    }
    out
}

/// A cache pair opened as `distill run` opens it.
struct Opened {
    teacher: TeacherCache,
    teacher_views: ViewTable,
    student_views: ViewTable,
    /// Parquet's view-0 rows by path.
    teacher_rows: HashMap<String, Vec<f32>>,
    student_rows: HashMap<String, Vec<f32>>,
}

fn open(dir: &Path, dtype: EmbeddingDtype) -> Opened {
    let (t, s) = write_pair(dir, dtype);
    let teacher = TeacherCache::open(&t).unwrap();
    let paths = teacher.images.paths().to_vec();
    let views = VIEWS as usize + 1;
    let teacher_views = ViewTable::load(
        &t,
        &teacher.manifest,
        &paths,
        views,
        "teacher",
        Reads::View0,
    )
    .unwrap();
    let sm = Manifest::read(&s).unwrap();
    let student_views = ViewTable::load(&s, &sm, &paths, views, "student", Reads::Sampled).unwrap();
    Opened {
        teacher,
        teacher_views,
        student_views,
        teacher_rows: parquet_view0(&t),
        student_rows: parquet_view0(&s),
    }
}

impl Opened {
    fn tables(&self) -> EvalTables<'_> {
        EvalTables {
            student: Some(&self.student_views),
            teacher: &self.teacher_views,
        }
    }

    /// Domain 0 as the held-out domain (its 200 images, `predict_labels`), domain 1 as a training domain's
    /// out split (its images backwards: `predict` and the loss).
    fn sets(&self) -> Vec<EvalSet> {
        let index = &self.teacher.images;
        let labels = index.labels();
        let test: Vec<usize> = index.rows_where(|d| d == 0);
        let mut out: Vec<usize> = index.rows_where(|d| d == 1);
        out.reverse();
        [(test, Some("in")), (out, None)]
            .into_iter()
            .enumerate()
            .map(|(k, (images, test_split))| EvalSet {
                key: format!("env{k}"),
                test_split,
                labels: images.iter().map(|&i| labels[i]).collect(),
                images,
            })
            .collect()
    }

    fn texts(&self) -> Vec<f32> {
        self.teacher.texts.get(PHOTO, None).unwrap().to_vec()
    }
}

/// One `predict` call's rows: images, student features, teacher features.
type Call = (Vec<usize>, Vec<f32>, Vec<f32>);

/// Records what evaluation hands it; predicts class 0.
struct Probe {
    from: PredictsFrom,
    seen: Mutex<Vec<Call>>,
}

impl Algorithm for Probe {
    fn hparams(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn batch_size(&self) -> usize {
        0
    }
    fn update(&mut self, _: &Batch) -> anyhow::Result<Metrics> {
        unreachable!()
    }
    fn predicts_from(&self) -> PredictsFrom {
        self.from
    }
    fn predict(&self, rows: &EvalRows) -> anyhow::Result<Vec<f32>> {
        self.seen.lock().unwrap().push((
            rows.images.to_vec(),
            rows.student.to_vec(),
            rows.teacher.to_vec(),
        ));
        Ok(vec![0.0; rows.images.len() * CLASSES])
    }
    fn parameters(&self) -> anyhow::Result<Vec<NamedTensor>> {
        Ok(vec![])
    }
    fn state(&self) -> anyhow::Result<(Vec<NamedTensor>, u64)> {
        Ok((vec![], 0))
    }
    fn load_state(&mut self, _: &HashMap<String, Vec<f32>>, _: u64) -> anyhow::Result<()> {
        Ok(())
    }
}

#[test]
fn evaluation_reads_view_zero_of_the_parts() {
    for dtype in [EmbeddingDtype::F32, EmbeddingDtype::F16] {
        let tmp = tempfile::tempdir().unwrap();
        let o = open(tmp.path(), dtype);
        let sets = o.sets();
        let paths = o.teacher.images.paths();
        for from in [
            PredictsFrom::StudentFeatures,
            PredictsFrom::TeacherFeatures,
            PredictsFrom::Images,
        ] {
            for chunk in [70, EVAL_CHUNK] {
                let probe = Probe {
                    from,
                    seen: Mutex::new(Vec::new()),
                };
                let results =
                    evaluate_in_chunks(&probe, &sets, o.tables(), CLASSES, chunk).unwrap();
                assert_eq!(results.len(), 2);
                let seen = probe.seen.into_inner().unwrap();
                let mut images: Vec<usize> = Vec::new();
                let (mut student, mut teacher): (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
                for (i, s, t) in &seen {
                    let n = i.len();
                    if from == PredictsFrom::Images {
                        assert!(
                            sets.iter().any(|set| set.images == *i),
                            "one call per split"
                        );
                    } else {
                        assert!(
                            n <= chunk && n > 64,
                            "{n} images in a call, chunks of {chunk}"
                        );
                    }
                    if from == PredictsFrom::Images {
                        assert!(
                            s.is_empty() && t.is_empty(),
                            "{from:?}: no features gathered"
                        );
                    } else {
                        let (want, other, dim) = match from {
                            PredictsFrom::StudentFeatures => (s, t, DS),
                            _ => (t, s, DT),
                        };
                        assert_eq!(want.len(), n * dim);
                        assert!(other.is_empty(), "{from:?}: only its features are gathered");
                    }
                    images.extend(i);
                    student.extend(s);
                    teacher.extend(t);
                }
                let all: Vec<usize> = sets.iter().flat_map(|s| s.images.clone()).collect();
                assert_eq!(
                    images, all,
                    "{dtype:?} {from:?} chunk {chunk}: images in order"
                );
                let expect = |rows: &HashMap<String, Vec<f32>>| -> Vec<f32> {
                    all.iter().flat_map(|&i| rows[&paths[i]].clone()).collect()
                };
                match from {
                    PredictsFrom::StudentFeatures => {
                        assert_eq!(student, expect(&o.student_rows), "{dtype:?} chunk {chunk}")
                    }
                    PredictsFrom::TeacherFeatures => {
                        assert_eq!(teacher, expect(&o.teacher_rows), "{dtype:?} chunk {chunk}")
                    }
                    PredictsFrom::Images => {}
                }
            }
        }
        if dtype == EmbeddingDtype::F16 {
            // The values are not f16-exact: the f16 cache holds rounded ones, which evaluation gets.
            let f32_dir = tempfile::tempdir().unwrap();
            let (t32, _) = write_pair(f32_dir.path(), EmbeddingDtype::F32);
            let exact = parquet_view0(&t32);
            let path = &paths[3];
            assert_ne!(exact[path], o.teacher_rows[path]);
            let rounded: Vec<f32> = exact[path]
                .iter()
                .map(|&x| half::f16::from_f32(x).to_f32())
                .collect();
            assert_eq!(rounded, o.teacher_rows[path]);
        }
    }
}

/// Accuracy and mean cross-entropy (logits `scale · score`) of scores computed in f64 by `score(row,
/// class)` over `images`, and how many images' best two classes are within `tie` of each other.
fn reference(
    images: &[usize],
    labels: &[usize],
    scale: f64,
    tie: f64,
    score: impl Fn(usize, usize) -> f64,
) -> (f64, f64, usize) {
    let (mut correct, mut loss, mut ties) = (0usize, 0.0f64, 0usize);
    for (&i, &y) in images.iter().zip(labels) {
        let s: Vec<f64> = (0..CLASSES).map(|c| score(i, c)).collect();
        let best = (0..CLASSES).fold(0, |b, c| if s[c] > s[b] { c } else { b });
        let second = (0..CLASSES)
            .filter(|&c| c != best)
            .map(|c| s[c])
            .fold(f64::NEG_INFINITY, f64::max);
        correct += usize::from(best == y);
        ties += usize::from(s[best] - second < tie);
        let max = s[best] * scale;
        let sum: f64 = s.iter().map(|v| (v * scale - max).exp()).sum();
        loss += max + sum.ln() - s[y] * scale;
    }
    let n = images.len() as f64;
    (correct as f64 / n, loss / n, ties)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

fn setup<'a>(texts: &'a [f32]) -> Setup<'a> {
    Setup {
        student_dim: Some(DS),
        teacher_dim: DT,
        classes: CLASSES,
        texts,
        templates: &[PHOTO],
        logit_scale: 100.0,
        seed: 3,
        backbone: None,
        prompts: None,
        test_domain: 0,
    }
}

/// A projection `DS → DT` that maps each student class code to its class text (least squares over the
/// codes), so that adip-align predicts well above chance.
fn fitted_projection() -> HashMap<String, Vec<f32>> {
    let (texts, student_codes) = (codes(DT, 100), codes(DS, 200));
    let mut weight = vec![0.0f32; DT * DS];
    for (t, s) in texts.iter().zip(&student_codes) {
        for o in 0..DT {
            for i in 0..DS {
                weight[o * DS + i] += t[o] * s[i];
            }
        }
    }
    HashMap::from([
        ("proj.weight".to_string(), weight),
        ("proj.bias".to_string(), vec![0.0; DT]),
    ])
}

#[test]
fn f16_caches_evaluate_as_f32_ones_within_rounding() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let opened = [
        open(dirs[0].path(), EmbeddingDtype::F32),
        open(dirs[1].path(), EmbeddingDtype::F16),
    ];
    // f16 keeps 11 significant bits: each value moves by at most 2^-11 of itself, so a cosine (or a
    // projected score) moves by about 2^-10 of the vectors' lengths at most.
    let rounding = 2f64.powi(-10);
    for name in ["zeroshot", "adip-align"] {
        let mut scores = Vec::new();
        for o in &opened {
            let texts = o.texts();
            let mut algorithm =
                (lookup(name).unwrap().build)(&setup(&texts), &Overrides::default()).unwrap();
            let projection = fitted_projection();
            if name == "adip-align" {
                algorithm.load_parameters(&projection).unwrap();
            }
            let results = evaluate(algorithm.as_ref(), &o.sets(), o.tables(), CLASSES).unwrap();
            let paths = o.teacher.images.paths();
            let unit_texts: Vec<Vec<f32>> = texts.chunks(DT).map(unit).collect();
            // The reference, in f64 from the Parquet rows: the cosine with each class text, of the
            // teacher's embedding (zeroshot) or of the projected student feature (adip-align).
            let score = |i: usize, c: usize| -> f64 {
                let t = &unit_texts[c];
                if name == "zeroshot" {
                    let x = &o.teacher_rows[&paths[i]];
                    dot(x, t) / norm(x)
                } else {
                    let x = &o.student_rows[&paths[i]];
                    let w = &projection["proj.weight"];
                    let p: Vec<f32> = (0..DT)
                        .map(|r| dot(&w[r * DS..(r + 1) * DS], x) as f32)
                        .collect();
                    dot(&p, t) / norm(&p)
                }
            };
            let mut per_set = Vec::new();
            for (set, r) in o.sets().iter().zip(&results) {
                let (acc, loss, ties) = reference(&set.images, &set.labels, 100.0, 1e-5, score);
                let n = set.images.len() as f64;
                assert!(
                    (r.acc - acc).abs() <= ties as f64 / n + 1e-12,
                    "{name}: accuracy {} against the reference's {acc} ({ties} ties)",
                    r.acc
                );
                if let Some(l) = r.loss {
                    assert!(
                        (l - loss).abs() < 1e-3 * loss.max(1.0),
                        "{name}: loss {l} vs {loss}"
                    );
                }
                // Rows that f16's rounding could flip, judged on this cache's values.
                let (_, _, near) =
                    reference(&set.images, &set.labels, 100.0, 4.0 * rounding, score);
                per_set.push((r.acc, r.loss, near, n));
            }
            scores.push(per_set);
        }
        eprintln!(
            "{name}: (accuracy, loss, rows within rounding, rows) f32 {:?}, f16 {:?}",
            scores[0], scores[1]
        );
        let mut any_wrong = false;
        for ((acc32, loss32, near, n), (acc16, loss16, _, _)) in scores[0].iter().zip(&scores[1]) {
            assert!(
                (acc32 - acc16).abs() <= *near as f64 / n + 1e-12,
                "{name}: f16 accuracy {acc16} against f32's {acc32}, {near} rows within rounding"
            );
            if let (Some(a), Some(b)) = (loss32, loss16) {
                // Logits are 100 × a cosine; each row's cross-entropy moves by at most twice the largest
                // logit change.
                assert!(
                    (a - b).abs() <= 2.0 * 100.0 * 2.0 * rounding,
                    "{name}: loss {a} vs {b}"
                );
            }
            any_wrong |= *acc32 < 1.0;
            assert!(
                *acc32 > 1.5 / CLASSES as f64,
                "{name}: {acc32} is near chance"
            );
        }
        assert!(any_wrong, "{name}: the task is too easy to tell anything");
    }
}

#[test]
fn chunks_change_no_result() {
    let tmp = tempfile::tempdir().unwrap();
    let o = open(tmp.path(), EmbeddingDtype::F16);
    let texts = o.texts();
    for name in ["zeroshot", "adip-align", "erm-lp"] {
        let algorithm =
            (lookup(name).unwrap().build)(&setup(&texts), &Overrides::default()).unwrap();
        let sets = o.sets();
        let whole = evaluate(algorithm.as_ref(), &sets, o.tables(), CLASSES).unwrap();
        // Splits of 200 images: chunks of 67 or 66, then of 100.
        for chunk in [70, 130] {
            let chunked =
                evaluate_in_chunks(algorithm.as_ref(), &sets, o.tables(), CLASSES, chunk).unwrap();
            assert_eq!(chunked, whole, "{name}, chunks of {chunk}");
        }
    }
}
