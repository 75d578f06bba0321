//! `distill run --prompt-style N`: the prompt styles of the official code, which build the class-text
//! embeddings of every algorithm that predicts or trains with them (zeroshot, adip-align, adip-distill,
//! kd's teacher, sd). Official: `DistillCLIP.__init__` in `domainbed/algorithms/distill_clip.py` (lines
//! 157–210 of the mirrored val-iisc/VL2V-ADiP) picks the templates; `get_zeroshot_classifier` (lines
//! 90–122) embeds every template of a class, normalises each embedding, averages them, renormalises and
//! scales by exp(logit_scale) (the scale is the algorithms' business here: [`class_embeddings`] returns the
//! unit averages).
//!
//! Templates are written as `embed --templates` reads them: `{}` for the class's display name (the folder
//! name with `_` → space, as the official `name.replace("_", " ")` of line 158), `{label}` for its label
//! number. `distill/prompt_styles/style-N.txt` holds the templates of style N for `embed --templates`.

use std::borrow::Cow;
use std::path::Path;

use anyhow::{bail, Result};
use vl2v::cache::{ClassInfo, EmbeddingDtype, Manifest};

use crate::data::cache_tables::ClassTexts;

/// The official default: train_all.py line 88, `--prompt_style` default 2; no official script passes it.
pub const DEFAULT: u8 = 2;

/// "a photo of a {}", the template of style 2 (and of the analysis's E1 row).
pub const PHOTO: &str = crate::commands::analyze::PHOTO_TEMPLATE;

/// Styles 3 and 5: one template per OfficeHome domain, in OfficeHome's domain order (distill_clip.py lines
/// 174–177 and 194–197).
const OFFICEHOME_TEMPLATES: [&str; 4] = [
    "an art of a {}",
    "a clipart of a {}",
    "a photo of a {} product",
    PHOTO,
];

/// OfficeHome's domains, sorted as DomainBed (and the manifest) orders them: `tgt_dom` indexes
/// [`OFFICEHOME_TEMPLATES`] in this order.
const OFFICEHOME_DOMAINS: [&str; 4] = ["Art", "Clipart", "Product", "Real World"];

/// `--prompt-style`: 1 to 6; style 4 is refused (it cannot run in the official code).
pub fn parse(s: &str) -> Result<u8, String> {
    let style: u8 = s
        .parse()
        .ok()
        .filter(|n| (1..=6).contains(n))
        .ok_or_else(|| {
            format!("a prompt style is 1 to 6 (distill_clip.py lines 161–205), not '{s}'")
        })?;
    if style == 4 {
        return Err("style 4 cannot run in the official code: its templates (distill_clip.py lines \
                    184–187, \"an art photo of a {size} {{class_name}}\", …) hold the field {size}, which \
                    `template.format(class_name=classname)` (line 98) never fills, so it raises \
                    KeyError: 'size'; use 1, 2, 3, 5 or 6"
            .into());
    }
    Ok(style)
}

/// The templates of `style` for a run whose held-out domain is `domains[test]`.
pub fn templates(style: u8, domains: &[String], test: usize) -> Result<Vec<&'static str>> {
    Ok(match style {
        // Line 163: ["{class_name}"].
        1 => vec!["{}"],
        // Line 168: ["a photo of a {class_name}"].
        2 => vec![PHOTO],
        // Lines 173–178: OfficeHome's four domain templates, whatever the dataset.
        3 => OFFICEHOME_TEMPLATES.to_vec(),
        // Lines 193–199: the same four without the held-out domain's, `del templates[tgt_dom]`.
        5 => {
            let display: Vec<String> = domains.iter().map(|d| d.replace('_', " ")).collect();
            if display != OFFICEHOME_DOMAINS {
                bail!(
                    "--prompt-style 5 drops the held-out domain's template from OfficeHome's four, one per \
                     domain in the order {} (distill_clip.py lines 193–199); this dataset's domains ({}) \
                     have no templates of their own: use --prompt-style 3 (all four) or another style",
                    OFFICEHOME_DOMAINS.join(", "),
                    domains.join(", ")
                );
            }
            let mut t = OFFICEHOME_TEMPLATES.to_vec();
            t.remove(test);
            t
        }
        // Lines 203–205: the class names replaced by their label numbers, "a photo of a {class_name}".
        6 => vec!["a photo of a {label}"],
        _ => bail!("{}", parse(&style.to_string()).err().unwrap_or_default()),
    })
}

/// The file of `distill/prompt_styles/` with the templates of `style` (none for style 2: `embed` always
/// embeds "a photo of a {}").
pub fn file(style: u8) -> Option<String> {
    (style != DEFAULT).then(|| format!("distill/prompt_styles/style-{style}.txt"))
}

/// Every class's prompts of `style`, in label order: what the official code hands CLIP's tokenizer.
#[cfg_attr(not(test), allow(dead_code))]
pub fn prompts(
    style: u8,
    classes: &[ClassInfo],
    domains: &[String],
    test: usize,
) -> Result<Vec<Vec<String>>> {
    let templates = templates(style, domains, test)?;
    Ok(classes
        .iter()
        .enumerate()
        .map(|(label, class)| {
            templates
                .iter()
                .map(|t| vl2v::prompts::fill(t, &class.name, label, None))
                .collect()
        })
        .collect())
}

/// The class embeddings `[C, D]` of the templates whose cached `[C, D]` embeddings are `per_template`: one
/// template's as they are (what distill used before prompt styles, bit for bit); several, per class the
/// official average: normalise(mean(normalise(e) for each template's e)).
pub fn class_embeddings<'t>(per_template: &[&'t [f32]], dim: usize) -> Cow<'t, [f32]> {
    match per_template {
        [one] => Cow::Borrowed(one),
        _ => {
            let classes = per_template.first().map_or(0, |m| m.len() / dim);
            let mut out = Vec::with_capacity(classes * dim);
            for c in 0..classes {
                let rows = per_template.iter().map(|m| &m[c * dim..(c + 1) * dim]);
                out.extend(vl2v::zeroshot::mean_direction(rows, dim));
            }
            Cow::Owned(out)
        }
    }
}

/// The class embeddings of `style` for held-out domain `test` from a teacher cache's texts; a cache that
/// lacks a template gets one line naming the `embed` command that adds it.
pub fn texts<'t>(
    style: u8,
    texts: &'t ClassTexts,
    manifest: &'t Manifest,
    cache: &'t Path,
    test: usize,
) -> Result<Cow<'t, [f32]>> {
    let templates = templates(style, &manifest.dataset.domains, test)?;
    let wanted: Vec<(&str, Option<usize>)> = templates.iter().map(|t| (*t, None)).collect();
    let bank = PromptBank {
        texts,
        manifest,
        cache,
    };
    let per_template = bank.get(
        &wanted,
        &format!("--prompt-style {style}"),
        file(style).as_deref(),
    )?;
    Ok(class_embeddings(
        &per_template,
        manifest.encoder.embedding_dim,
    ))
}

/// A teacher cache's class-text embeddings, looked up by template (and domain, for `{domain}` templates),
/// for the algorithms that need prompts of their own (rise's ensemble and anchors).
#[derive(Clone, Copy)]
pub struct PromptBank<'t> {
    pub texts: &'t ClassTexts,
    pub manifest: &'t Manifest,
    /// The cache directory (named in the error that says how to add missing prompts).
    pub cache: &'t Path,
}

impl<'t> PromptBank<'t> {
    /// The `[C, D]` unit embeddings of each (template, domain) in `wanted`, in order. Missing ones get one
    /// line saying what needs them (`what`) and the `embed` command that adds them (with `--templates
    /// file`, the repository's file that holds them; none for the templates embed always embeds).
    pub fn get(
        &self,
        wanted: &[(&str, Option<usize>)],
        what: &str,
        file: Option<&str>,
    ) -> Result<Vec<&'t [f32]>> {
        let mut found = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for &(t, domain) in wanted {
            match self.texts.get(t, domain) {
                Some(m) => found.push(m),
                None => missing.push(format!("\"{t}\"")),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        missing.dedup();
        let with = match file {
            Some(file) => format!(" with --templates {file}"),
            None => String::new(), // embed always embeds its default templates
        };
        let add = format!(
            "add them, without embedding the images again, by rerunning the embed command that wrote the \
             cache{with}: {}",
            embed_command(self.manifest, self.cache, file)
        );
        bail!(
            "{}: texts.parquet lacks the prompts of {what} (template{} {}); {add}",
            self.cache.display(),
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        );
    }
}

/// `embed …[ --templates FILE]` with the options the manifest records (the cache directory is
/// `<cache-dir>/<dataset>/<name>`).
fn embed_command(m: &Manifest, cache: &Path, file: Option<&str>) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+:@=,".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut cmd = format!(
        "embed --dataset {} --root {} --model {}",
        quote(&m.dataset.name),
        quote(&m.dataset.root.display().to_string()),
        quote(&m.encoder.model)
    );
    if let Some(rev) = m.encoder.revision.as_deref().filter(|r| *r != "main") {
        cmd.push_str(&format!(" --revision {}", quote(rev)));
    }
    if let Some(mode) = m.preprocess.get("mode").and_then(|v| v.as_str()) {
        cmd.push_str(&format!(" --preprocess {}", quote(mode)));
    }
    cmd.push_str(&format!(
        " --views {} --seed {}",
        m.views.count, m.views.seed
    ));
    if m.embedding_dtype == EmbeddingDtype::F16 {
        cmd.push_str(" --dtype f16");
    }
    if let Some(dir) = cache.parent().and_then(Path::parent) {
        let dir = dir.display().to_string();
        cmd.push_str(&format!(
            " --cache-dir {}",
            quote(if dir.is_empty() { "." } else { &dir })
        ));
    }
    if let Some(file) = file {
        cmd.push_str(&format!(" --templates {file}"));
    }
    cmd
}

/// The `template` hyper-parameter recorded for the algorithms: the template, or the list of them.
pub fn hparam(templates: &[&str]) -> serde_json::Value {
    match templates {
        [one] => serde_json::json!(one),
        _ => serde_json::json!(templates),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vl2v::zeroshot::ZeroShotHead;

    fn classes() -> Vec<ClassInfo> {
        // OfficeHome's first class and one more, as embed's discovery names them.
        [("Alarm_Clock", "Alarm Clock"), ("Bike", "Bike")]
            .map(|(folder, name)| ClassInfo {
                folder: folder.into(),
                name: name.into(),
            })
            .to_vec()
    }

    fn officehome() -> Vec<String> {
        ["Art", "Clipart", "Product", "Real World"]
            .map(String::from)
            .to_vec()
    }

    /// The strings the official code builds, copied by hand from domainbed/algorithms/distill_clip.py
    /// (val-iisc/VL2V-ADiP) and formatted as `template.format(class_name=classname)` (line 98) formats
    /// them, with classnames = [name.replace("_", " ") for name in class_names] (line 158).
    #[test]
    fn each_style_gives_the_official_prompts() {
        let (c, d) = (classes(), officehome());
        // Line 163: templates = ["{class_name}"].
        assert_eq!(prompts(1, &c, &d, 0).unwrap(), [["Alarm Clock"], ["Bike"]]);
        // Line 168: templates = ["a photo of a {class_name}"].
        assert_eq!(
            prompts(2, &c, &d, 0).unwrap(),
            [["a photo of a Alarm Clock"], ["a photo of a Bike"]]
        );
        // Lines 173–178.
        let style3 = [
            [
                "an art of a Alarm Clock",
                "a clipart of a Alarm Clock",
                "a photo of a Alarm Clock product",
                "a photo of a Alarm Clock",
            ],
            [
                "an art of a Bike",
                "a clipart of a Bike",
                "a photo of a Bike product",
                "a photo of a Bike",
            ],
        ];
        assert_eq!(prompts(3, &c, &d, 0).unwrap(), style3);
        assert_eq!(
            prompts(3, &c, &d, 3).unwrap(),
            style3,
            "style 3 keeps every domain"
        );
        // Lines 193–199: the same list, `del templates[tgt_dom]`.
        for test in 0..4 {
            let want: Vec<Vec<&str>> = style3
                .iter()
                .map(|class| {
                    let mut p = class.to_vec();
                    p.remove(test);
                    p
                })
                .collect();
            assert_eq!(
                prompts(5, &c, &d, test).unwrap(),
                want,
                "test domain {test}"
            );
        }
        assert_eq!(
            prompts(5, &c, &d, 2).unwrap()[1],
            [
                "an art of a Bike",
                "a clipart of a Bike",
                "a photo of a Bike"
            ],
            "Product held out"
        );
        // The folder spelling Real_World is the same domain.
        let underscored = ["Art", "Clipart", "Product", "Real_World"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            prompts(5, &c, &underscored, 3).unwrap()[0],
            [
                "an art of a Alarm Clock",
                "a clipart of a Alarm Clock",
                "a photo of a Alarm Clock product"
            ]
        );
        // Lines 203–205: classnames = [str(i) for i in range(len(classnames))],
        // templates = ["a photo of a {class_name}"].
        assert_eq!(
            prompts(6, &c, &d, 0).unwrap(),
            [["a photo of a 0"], ["a photo of a 1"]]
        );
    }

    #[test]
    fn style_4_and_unknown_styles_are_refused_with_the_reason() {
        let err = parse("4").unwrap_err();
        assert!(err.contains("KeyError: 'size'"), "{err}");
        assert!(err.contains("distill_clip.py lines 184–187"), "{err}");
        assert!(!err.contains('\n'));
        for bad in ["0", "7", "x", "-1", ""] {
            let err = parse(bad).unwrap_err();
            assert!(err.starts_with("a prompt style is 1 to 6"), "{err}");
        }
        assert_eq!(parse("6"), Ok(6));
        assert_eq!(parse("2"), Ok(DEFAULT));
    }

    #[test]
    fn style_5_needs_officehome_domains() {
        let pacs = ["art_painting", "cartoon", "photo", "sketch"]
            .map(String::from)
            .to_vec();
        let err = templates(5, &pacs, 0).unwrap_err().to_string();
        assert!(
            err.contains("this dataset's domains (art_painting, cartoon, photo, sketch)"),
            "{err}"
        );
        assert!(templates(3, &pacs, 0).is_ok());
    }

    /// Each committed file of distill/prompt_styles/ holds exactly its style's templates.
    #[test]
    fn template_files_hold_each_styles_templates() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let d = officehome();
        for style in [1, 3, 5, 6] {
            let file = root.join(file(style).unwrap());
            let read = vl2v::prompts::read_templates(&file).unwrap();
            let mut want: Vec<&str> = templates(style, &d, 0).unwrap();
            if style == 5 {
                want = OFFICEHOME_TEMPLATES.to_vec(); // every held-out domain's three
            }
            assert_eq!(read, want, "{}", file.display());
        }
        assert_eq!(file(2), None);
    }

    /// Two prompts per class in 2-d, averaged by hand: class 0 has (3, 4) and (0, 2), unit (0.6, 0.8) and
    /// (0, 1), mean (0.3, 0.9), norm √0.9, so (1/√10, 3/√10) = (0.316228, 0.948683) (a plain mean would
    /// give (1.5, 3)/|…| = (0.447214, 0.894427)); class 1 has (1, 0) and (0, −5): mean (0.5, −0.5), so
    /// (0.707107, −0.707107). The head multiplies by logit_scale (100).
    #[test]
    fn an_ensemble_is_the_normalised_mean_of_normalised_prompts() {
        let a = [3.0, 4.0, 1.0, 0.0];
        let b = [0.0, 2.0, 0.0, -5.0];
        let e = class_embeddings(&[&a, &b], 2);
        let want = [0.316_227_77, 0.948_683_3, 0.707_106_77, -0.707_106_77];
        for (g, w) in e.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{e:?}");
        }
        let head = ZeroShotHead::from_prototypes(e.into_owned(), 2, 100.0).unwrap();
        for (g, w) in head.weight().iter().zip(want) {
            assert!((g - 100.0 * w).abs() < 1e-4, "{:?}", head.weight());
        }
        // One template: its embeddings untouched.
        assert!(matches!(class_embeddings(&[&a], 2), Cow::Borrowed(s) if s == a));
    }

    fn manifest() -> Manifest {
        use vl2v::cache::{Counts, DatasetInfo, EncoderInfo, EncoderRole, ViewSet};
        Manifest {
            format_version: vl2v::cache::FORMAT_VERSION,
            tool_version: "test".into(),
            dataset: DatasetInfo {
                name: "officehome".into(),
                root: "/data/office home".into(),
                domains: officehome(),
                classes: classes(),
            },
            encoder: EncoderInfo {
                model: "openai/clip-vit-base-patch16".into(),
                revision: Some("v1".into()),
                commit: None,
                weights_sha256: "00".repeat(32),
                role: EncoderRole::Teacher,
                architecture: "clip".into(),
                embedding_dim: 2,
                normalized: true,
            },
            preprocess: serde_json::json!({"mode": "vl2v", "size": 224}),
            views: ViewSet {
                count: 4,
                seed: 7,
                recipe: "test".into(),
            },
            embedding_dtype: EmbeddingDtype::F16,
            logit_scale: Some(100.0),
            templates: vec![],
            counts: Counts::default(),
            skipped: vec![],
            parts: vec![],
            shards: 1,
            computed_on: Vec::new(),
            created: String::new(),
            finished: String::new(),
        }
    }

    /// A cache with "a photo of a {}" and "an art of a {}" only.
    fn class_texts(with_photo: bool) -> ClassTexts {
        use crate::data::cache_tables::TextSet;
        let set = |template: &str, embeddings: Vec<f32>| TextSet {
            template: template.into(),
            domain: None,
            embeddings,
        };
        let mut sets = vec![set("an art of a {}", vec![0.0, 1.0, 0.6, -0.8])];
        if with_photo {
            sets.push(set(PHOTO, vec![1.0, 0.0, 0.8, 0.6]));
        }
        ClassTexts::new(2, 2, sets).unwrap()
    }

    #[test]
    fn missing_prompts_get_one_line_with_the_embed_command() {
        let (m, texts) = (manifest(), class_texts(true));
        let cache =
            Path::new("/caches/officehome/openai--clip-vit-base-patch16-vl2v-views4-seed7-f16");
        let err = super::texts(3, &texts, &m, cache, 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/caches/officehome/openai--clip-vit-base-patch16-vl2v-views4-seed7-f16: texts.parquet lacks \
             the prompts of --prompt-style 3 (templates \"a clipart of a {}\", \"a photo of a {} \
             product\"); add them, without embedding the images again, by rerunning the embed command \
             that wrote the cache with --templates distill/prompt_styles/style-3.txt: embed --dataset \
             officehome --root '/data/office home' --model openai/clip-vit-base-patch16 --revision v1 \
             --preprocess vl2v --views 4 --seed 7 --dtype f16 --cache-dir /caches --templates \
             distill/prompt_styles/style-3.txt"
        );
        // Style 5 with Clipart held out needs the art, product and photo prompts.
        let err = super::texts(5, &texts, &m, cache, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--prompt-style 5 (template \"a photo of a {} product\"); "),
            "{err}"
        );
        let err = super::texts(2, &class_texts(false), &m, cache, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(template \"a photo of a {}\"); add them")
                && err.ends_with("the cache: embed --dataset officehome --root '/data/office home' \
                                  --model openai/clip-vit-base-patch16 --revision v1 --preprocess vl2v \
                                  --views 4 --seed 7 --dtype f16 --cache-dir /caches"),
            "{err}"
        );
        // Style 2: the cached embeddings as they are.
        let photo = super::texts(2, &texts, &m, cache, 0).unwrap();
        assert!(matches!(photo, Cow::Borrowed(p) if p == [1.0, 0.0, 0.8, 0.6]));
    }

    #[test]
    fn hparam_is_the_template_or_the_list() {
        assert_eq!(hparam(&[PHOTO]), serde_json::json!("a photo of a {}"));
        assert_eq!(
            hparam(&["{}", PHOTO]),
            serde_json::json!(["{}", "a photo of a {}"])
        );
    }
}
