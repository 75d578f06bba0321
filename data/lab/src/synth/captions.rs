//! Captions for the corpus: a few templates per style, the colour word only where the style shows colour.

use super::rng::Rng;
use super::styles::Style;

/// A caption for an instance; `colour` is the name of its body colour. With `plain`, half the captions
/// (drawn first) are plain: they name the class (and the colour where the style shows it) but not the
/// style, as most web captions do not name the medium, so the class word is tied to the images of every
/// style and not only to its own style's. Without it no draw is spent on the choice, so the captions are
/// those of a corpus written before the option.
pub fn caption(style: Style, class: &str, colour: &str, plain: bool, rng: &mut Rng) -> String {
    if plain && rng.below(2) == 0 {
        return with_articles(&plain_caption(style, class, colour, rng));
    }
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

/// A caption that does not name the style.
fn plain_caption(style: Style, class: &str, colour: &str, rng: &mut Rng) -> String {
    let choices = if style.shows_colour() { 5 } else { 3 };
    match rng.below(choices) {
        0 => format!("a {class}"),
        1 => format!("an image of a {class}"),
        2 => format!("a picture of the {class}"),
        3 => format!("a {colour} {class}"),
        _ => format!("an image of a {colour} {class}"),
    }
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
    fn articles_agree_and_the_style_is_named_unless_plain() {
        assert_eq!(
            with_articles("a orange umbrella in a infographic"),
            "an orange umbrella in an infographic"
        );
        for plain in [false, true] {
            let mut rng = Rng::new(0);
            let mut named = 0;
            for style in Style::ALL {
                for _ in 0..20 {
                    let text = caption(style, "arrow", "orange", plain, &mut rng);
                    named += usize::from(text.contains(style.noun()));
                    assert!(text.contains("arrow"), "{text}");
                    assert!(!text.contains(" a a") && !text.starts_with("a a"), "{text}");
                    if !style.shows_colour() {
                        assert!(!text.contains("orange"), "{text}");
                    }
                }
            }
            if plain {
                // About half name the style (140 draws: 70 expected, sd 5.9).
                assert!((50..=90).contains(&named), "{named} of 140 name the style");
            } else {
                assert_eq!(named, 140);
            }
        }
    }
}
