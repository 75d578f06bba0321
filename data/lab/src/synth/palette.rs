//! Named colours and the colour arithmetic the renderers share. Instance colours are a named base hue
//! with jitter, so a caption's colour word is derived from the colour actually drawn.

use super::rng::Rng;

pub type Rgb = [f32; 3];

/// (name, hue in degrees, saturation, value): the words a caption may use and what they look like.
const NAMED: &[(&str, f32, f32, f32)] = &[
    ("red", 0.0, 0.85, 0.85),
    ("orange", 28.0, 0.9, 0.95),
    ("yellow", 52.0, 0.85, 0.95),
    ("green", 120.0, 0.7, 0.7),
    ("teal", 175.0, 0.75, 0.65),
    ("blue", 215.0, 0.8, 0.85),
    ("purple", 275.0, 0.65, 0.7),
    ("pink", 330.0, 0.5, 0.95),
    ("brown", 25.0, 0.7, 0.45),
];

/// A jittered instance of a random named colour, with its name.
pub fn named(rng: &mut Rng) -> (&'static str, Rgb) {
    let (name, h, s, v) = *rng.pick(NAMED);
    let hue = h + rng.sym(10.0);
    let sat = (s + rng.sym(0.12)).clamp(0.3, 1.0);
    let val = (v + rng.sym(0.1)).clamp(0.3, 1.0);
    (name, hsv(hue, sat, val))
}

/// A named colour other than `avoid`, for accents and distractors that must contrast with the body.
pub fn named_except(rng: &mut Rng, avoid: &str) -> Rgb {
    loop {
        let (name, c) = named(rng);
        if name != avoid {
            return c;
        }
    }
}

pub fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let h = h.rem_euclid(360.0) / 60.0;
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

/// (hue in degrees, saturation, value).
pub fn to_hsv([r, g, b]: Rgb) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    let s = if max == 0.0 { 0.0 } else { d / max };
    (h, s, max)
}

/// The same hue with saturation and value pushed towards at least the given floors.
pub fn vivid(c: Rgb, min_s: f32, min_v: f32) -> Rgb {
    let (h, s, v) = to_hsv(c);
    hsv(h, s.max(min_s), v.max(min_v))
}

pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

pub fn scale(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

/// A dull colour for backgrounds: any hue, low saturation, the given value range.
pub fn muted(rng: &mut Rng, v_lo: f32, v_hi: f32) -> Rgb {
    let h = rng.range(0.0, 360.0);
    let s = rng.range(0.05, 0.3);
    let v = rng.range(v_lo, v_hi);
    hsv(h, s, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_round_trips() {
        for &(_, h, s, v) in NAMED {
            let (h2, s2, v2) = to_hsv(hsv(h, s, v));
            assert!((h.rem_euclid(360.0) - h2).abs() < 0.01, "{h} {h2}");
            assert!((s - s2).abs() < 1e-4 && (v - v2).abs() < 1e-4);
        }
    }
}
