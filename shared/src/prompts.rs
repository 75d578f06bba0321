//! Prompt templates: class names × templates (× domains for `{domain}` templates).
//!
//! A template holds `{}` for the class's display name, or `{label}` for its label number (the official
//! code's prompt style 6, "a photo of a {class_label}"), and optionally `{domain}` for the domain's
//! display name.

use std::path::Path;

use crate::dataset::Dataset;

/// "a photo of a {}" is the paper's T_y; "a {domain} of a {}" feeds the E2 row of its robustness table.
pub const DEFAULT_TEMPLATES: &[&str] = &["a photo of a {}", "a {domain} of a {}"];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read templates file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} line {line}: template '{template}' has no '{{}}' for the class name (or '{{label}}' for \
         its label number)"
    )]
    NoPlaceholder {
        path: String,
        line: usize,
        template: String,
    },
}

/// One prompt to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub label: i32,
    pub class_name: String,
    pub template: String,
    /// Domain folder name for `{domain}` templates.
    pub domain: Option<String>,
    pub text: String,
}

/// Reads one template per line; blank lines and `#` comments are skipped.
pub fn read_templates(path: &Path) -> Result<Vec<String>, TemplateError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut templates = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.replace("{domain}", "").contains("{}") && !line.contains(LABEL) {
            return Err(TemplateError::NoPlaceholder {
                path: shown,
                line: i + 1,
                template: line.to_string(),
            });
        }
        templates.push(line.to_string());
    }
    Ok(templates)
}

/// The placeholder of a class's label number.
pub const LABEL: &str = "{label}";

/// The prompt of `template` for the class `class_name` with label `label` (and `domain`, the domain's
/// display name, for `{domain}` templates): `{domain}` first, then every `{label}`, then the first `{}`.
pub fn fill(template: &str, class_name: &str, label: usize, domain: Option<&str>) -> String {
    let with_domain = match domain {
        Some(d) => template.replace("{domain}", d),
        None => template.to_string(),
    };
    with_domain
        .replace(LABEL, &label.to_string())
        .replacen("{}", class_name, 1)
}

/// The defaults followed by `extra`, without duplicates, order kept.
pub fn template_set(extra: &[String]) -> Vec<String> {
    let mut all: Vec<String> = DEFAULT_TEMPLATES.iter().map(|t| t.to_string()).collect();
    for t in extra {
        if !all.contains(t) {
            all.push(t.clone());
        }
    }
    all
}

/// Every (class, template[, domain]) prompt, classes in label order.
pub fn expand(templates: &[String], dataset: &Dataset) -> Vec<Prompt> {
    let mut prompts = Vec::new();
    for (label, class) in dataset.classes.iter().enumerate() {
        for template in templates {
            if template.contains("{domain}") {
                for (d, domain) in dataset.domains.iter().enumerate() {
                    prompts.push(Prompt {
                        label: label as i32,
                        class_name: class.name.clone(),
                        template: template.clone(),
                        domain: Some(domain.clone()),
                        text: fill(
                            template,
                            &class.name,
                            label,
                            Some(&dataset.domain_display_name(d)),
                        ),
                    });
                }
            } else {
                prompts.push(Prompt {
                    label: label as i32,
                    class_name: class.name.clone(),
                    template: template.clone(),
                    domain: None,
                    text: fill(template, &class.name, label, None),
                });
            }
        }
    }
    prompts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ClassInfo;

    #[test]
    fn expands_classes_templates_and_domains() {
        let dataset = Dataset {
            name: "x".into(),
            root: "/x".into(),
            domains: vec!["Real World".into(), "art_painting".into()],
            classes: vec![ClassInfo {
                folder: "Alarm_Clock".into(),
                name: "Alarm Clock".into(),
            }],
            images: vec![],
        };
        let prompts = expand(&template_set(&[]), &dataset);
        let texts: Vec<_> = prompts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "a photo of a Alarm Clock",
                "a Real World of a Alarm Clock",
                "a art painting of a Alarm Clock"
            ]
        );
        assert_eq!(prompts[2].domain.as_deref(), Some("art_painting"));
        assert_eq!(prompts[0].domain, None);
    }

    #[test]
    fn label_templates_give_the_label_number() {
        let dataset = Dataset {
            name: "x".into(),
            root: "/x".into(),
            domains: vec!["Art".into()],
            classes: ["Alarm_Clock", "Bike"]
                .map(|folder| ClassInfo {
                    folder: folder.into(),
                    name: folder.replace('_', " "),
                })
                .to_vec(),
            images: vec![],
        };
        let prompts = expand(&["a photo of a {label}".to_string()], &dataset);
        let texts: Vec<_> = prompts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["a photo of a 0", "a photo of a 1"]);
        assert_eq!(prompts[1].class_name, "Bike");
        assert_eq!(fill("{}", "Alarm Clock", 3, None), "Alarm Clock");
    }

    #[test]
    fn templates_file_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        std::fs::write(
            &path,
            "# mine\nitap of a {}\n\na photo of a {}\na photo of a {label}\n",
        )
        .unwrap();
        let extra = read_templates(&path).unwrap();
        assert_eq!(
            template_set(&extra),
            [
                "a photo of a {}",
                "a {domain} of a {}",
                "itap of a {}",
                "a photo of a {label}"
            ]
        );
        std::fs::write(&path, "a photo\n").unwrap();
        let err = read_templates(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "line 1: template 'a photo' has no '{}' for the class name (or '{label}' for its \
                 label number)"
            ),
            "{err}"
        );
    }
}
