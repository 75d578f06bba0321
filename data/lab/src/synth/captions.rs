//! Captions for the corpus: a few templates per style, the colour word only where the style shows colour.

use super::rng::Rng;
use super::styles::Style;

/// A caption for an instance; `colour` is the name of its body colour.
pub fn caption(style: Style, class: &str, colour: &str, rng: &mut Rng) -> String {
    let noun = style.noun();
    let text = if style == Style::Photo {
        match rng.below(4) {
            0 => format!("a photo of a {colour} {class}"),
            1 => format!("a photo of a {class}"),
            2 => format!("a {colour} {class}, photo"),
            _ => format!("a close-up photo of the {class}"),
        }
    } else if style.shows_colour() {
        match rng.below(4) {
            0 => format!("a {noun} of a {colour} {class}"),
            1 => format!("a {colour} {class} drawn as a {noun}"),
            2 => format!("{noun} {class}"),
            _ => format!("a {colour} {class} in {noun} style"),
        }
    } else {
        match rng.below(3) {
            0 => format!("a {noun} of a {class}"),
            1 => format!("a {class} drawn as a {noun}"),
            _ => format!("{noun} {class}"),
        }
    };
    with_articles(&text)
}

/// "a" before a vowel becomes "an" ("an orange umbrella", "an infographic").
fn with_articles(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, &w) in words.iter().enumerate() {
        let vowel = words
            .get(i + 1)
            .and_then(|next| next.chars().next())
            .is_some_and(|c| "aeiou".contains(c));
        out.push(if w == "a" && vowel { "an" } else { w });
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn articles_agree_and_the_style_is_named() {
        assert_eq!(
            with_articles("a orange umbrella in a infographic"),
            "an orange umbrella in an infographic"
        );
        let mut rng = Rng::new(0);
        for style in Style::ALL {
            for _ in 0..20 {
                let text = caption(style, "arrow", "orange", &mut rng);
                assert!(text.contains(style.noun()), "{text}");
                assert!(!text.contains(" a a") && !text.starts_with("a a"), "{text}");
                assert_eq!(
                    text.contains("orange"),
                    style.shows_colour() && text.contains("orange")
                );
                if !style.shows_colour() {
                    assert!(!text.contains("orange"), "{text}");
                }
            }
        }
    }
}
