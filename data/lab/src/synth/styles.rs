//! The styles and the renderers that fill shapes (the outline-drawn ones are in outline_styles.rs): each style shifts low-level statistics (colour, texture, edges, background) the way the
//! domains of the real DG benchmarks differ, while the object's silhouette carries the class.
//!
//! Everything is drawn on a canvas twice the output size and averaged down, which anti-aliases edges.

use image::RgbImage;

use super::canvas::{Canvas, Fbm, Mask};
use super::outline_styles;
use super::palette::{self, hsv, mix, muted, scale, vivid, Rgb};
use super::rng::Rng;
use super::scene::{Frame, Scene};
use super::shapes::{Part, Role};

/// Supersampling factor.
const SS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Style {
    Clipart,
    Infograph,
    Neon,
    Painting,
    Photo,
    Quickdraw,
    Sketch,
}

impl Style {
    /// Every style, sorted by name (the order of folders on disk).
    pub const ALL: [Style; 7] = [
        Style::Clipart,
        Style::Infograph,
        Style::Neon,
        Style::Painting,
        Style::Photo,
        Style::Quickdraw,
        Style::Sketch,
    ];

    /// The benchmark's four domains, PACS/DomainNet-like, sorted by name.
    pub const BENCHMARK: [Style; 4] =
        [Style::Clipart, Style::Painting, Style::Photo, Style::Sketch];

    /// The folder name, also the name the CLI takes.
    pub fn name(self) -> &'static str {
        match self {
            Style::Clipart => "clipart",
            Style::Infograph => "infograph",
            Style::Neon => "neon",
            Style::Painting => "painting",
            Style::Photo => "photo",
            Style::Quickdraw => "quickdraw",
            Style::Sketch => "sketch",
        }
    }

    pub fn parse(name: &str) -> Option<Style> {
        Style::ALL.into_iter().find(|s| s.name() == name)
    }

    /// How captions call it ("a sketch of a star", "a clip art of a red cup").
    pub fn noun(self) -> &'static str {
        match self {
            Style::Clipart => "clip art",
            Style::Infograph => "infographic",
            Style::Neon => "neon sign",
            Style::Painting => "painting",
            Style::Photo => "photo",
            Style::Quickdraw => "doodle",
            Style::Sketch => "sketch",
        }
    }

    /// Whether the instance colour is visible (pencil and doodle styles are colourless).
    pub fn shows_colour(self) -> bool {
        !matches!(self, Style::Sketch | Style::Quickdraw)
    }
}

/// Renders an instance of `class` in `style` at `size`×`size`, with its colour name; `None` for an
/// unknown class.
pub fn render(
    style: Style,
    class: &str,
    rng: &mut Rng,
    size: usize,
) -> Option<(RgbImage, &'static str)> {
    let s = size * SS;
    // The unit of every length below: a pixel of a 64-pixel output.
    let u = s as f32 / 128.0;
    let frame = match style {
        Style::Infograph => infograph_panel(rng, s, u),
        _ => (0.0, 0.0, s as f32, s as f32),
    };
    let scene = Scene::new(class, frame, rng)?;
    // The style's own draws come from a separate stream, so the instance (pose, colours) a seed gives is
    // the same in every style that uses the whole canvas.
    let mut draw = rng.fork(style as u64);
    let canvas = match style {
        Style::Clipart => clipart(&scene, &mut draw, s, u),
        Style::Infograph => infograph(&scene, frame, &mut draw, s, u),
        Style::Neon => outline_styles::neon(&scene, &mut draw, s, u),
        Style::Painting => painting(&scene, &mut draw, s, u),
        Style::Photo => photo(&scene, &mut draw, s, u),
        Style::Quickdraw => outline_styles::quickdraw(&scene, &mut draw, s, u),
        Style::Sketch => outline_styles::sketch(&scene, &mut draw, s, u),
    };
    Some((canvas.downsample(SS), scene.colour_name))
}

/// The infographic's icon panel: a little over half the width, on the left or the right.
fn infograph_panel(rng: &mut Rng, s: usize, u: f32) -> Frame {
    let split = s as f32 * rng.range(0.64, 0.74);
    if rng.chance(0.5) {
        (2.0 * u, 2.0 * u, split, s as f32 - 2.0 * u)
    } else {
        (
            s as f32 - split,
            2.0 * u,
            s as f32 - 2.0 * u,
            s as f32 - 2.0 * u,
        )
    }
}

fn part_mask(part: &Part, s: usize) -> Mask {
    let mut m = Mask::new(s, s);
    match part {
        Part::Fill { rings, .. } => m.fill(rings),
        Part::Line { pts, width, .. } => m.stroke(pts, false, *width),
    }
    m
}

pub(super) fn object_mask(scene: &Scene, s: usize) -> Mask {
    let mut all = Mask::new(s, s);
    for part in scene.parts.iter().filter(|p| p.role() != Role::Distractor) {
        all.union(&part_mask(part, s));
    }
    all
}

/// Shaded fills on a textured, lit background with a soft cast shadow and sensor noise.
fn photo(scene: &Scene, rng: &mut Rng, s: usize, u: f32) -> Canvas {
    let (wall, wall_low, floor) = (
        muted(rng, 0.5, 0.9),
        muted(rng, 0.35, 0.7),
        muted(rng, 0.25, 0.6),
    );
    let horizon = s as f32 * rng.range(0.55, 0.9);
    let tex = Fbm::new(rng, s, s, 24.0 * u, 4);
    let mut c = Canvas::from_fn(s, s, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let base = if fy < horizon {
            mix(wall, wall_low, fy / horizon)
        } else {
            scale(
                floor,
                0.85 + 0.3 * (fy - horizon) / (s as f32 - horizon).max(1.0),
            )
        };
        scale(base, 0.8 + 0.4 * tex.at(fx, fy))
    });
    let light = rng.range(3.6, 4.4); // up-left, in radians
    let (lx, ly) = (light.cos(), light.sin());
    let mut shadow = object_mask(scene, s).shifted(
        (-lx * scene.radius * 0.15) as isize,
        (-ly * scene.radius * 0.2) as isize,
    );
    shadow.blur((3.0 * u) as usize, 3);
    c.paint(&shadow, 0.5, [0.05, 0.05, 0.05]);
    let grain = Fbm::new(rng, s, s, 6.0 * u, 2);
    let (cx, cy, r) = (scene.centre.0, scene.centre.1, scene.radius);
    let (hx, hy) = (cx + lx * r * 0.45, cy + ly * r * 0.45);
    for part in &scene.parts {
        let col = scene.colour(part.role());
        c.paint_with(&part_mask(part, s), 1.0, |x, y| {
            let (fx, fy) = (x as f32, y as f32);
            let lit = ((fx - cx) * lx + (fy - cy) * ly) / r;
            let shade = 0.75 + 0.35 * lit.clamp(-1.0, 1.0) + 0.15 * (grain.at(fx, fy) - 0.5);
            let d = ((fx - hx).powi(2) + (fy - hy).powi(2)).sqrt() / (0.5 * r);
            let spec = (1.0 - d).max(0.0).powi(2) * 0.35;
            mix(scale(col, shade), [1.0; 3], spec)
        });
    }
    c.blur((0.6 * u).round() as usize);
    for p in &mut c.px {
        let n = rng.sym(0.035);
        *p = p.map(|v| v + n);
    }
    c
}

/// Flat saturated fills with a thick dark outline on a plain light background.
fn clipart(scene: &Scene, rng: &mut Rng, s: usize, u: f32) -> Canvas {
    let bg = hsv(
        rng.range(0.0, 360.0),
        rng.range(0.0, 0.1),
        rng.range(0.95, 1.0),
    );
    let ink = hsv(
        rng.range(0.0, 360.0),
        rng.range(0.0, 0.4),
        rng.range(0.03, 0.12),
    );
    let width = rng.range(3.0, 4.5) * u;
    let mut c = Canvas::from_fn(s, s, |_, _| bg);
    for part in &scene.parts {
        let col = match part.role() {
            Role::Dark | Role::Light => scene.colour(part.role()),
            role => vivid(scene.colour(role), 0.8, 0.9),
        };
        match part {
            Part::Fill { rings, .. } => {
                c.paint(&part_mask(part, s), 1.0, col);
                let mut edge = Mask::new(s, s);
                for ring in rings {
                    edge.stroke(ring, true, width);
                }
                c.paint(&edge, 1.0, ink);
            }
            Part::Line { pts, width: w, .. } => {
                let mut under = Mask::new(s, s);
                under.stroke(pts, false, w + 2.0 * width);
                c.paint(&under, 1.0, ink);
                c.paint(&part_mask(part, s), 1.0, col);
            }
        }
    }
    c
}

/// Flat fills in shifted, duller colours on a woven canvas, then short directional brush dabs that pick up
/// the colour beneath them, colour noise and a blur.
fn painting(scene: &Scene, rng: &mut Rng, s: usize, u: f32) -> Canvas {
    // Painted grounds are coloured, not the greys of a photo's wall.
    let hue = rng.range(0.0, 360.0);
    let ground = hsv(hue, rng.range(0.15, 0.45), rng.range(0.5, 0.85));
    let blotch = hsv(
        hue + rng.sym(70.0),
        rng.range(0.15, 0.5),
        rng.range(0.4, 0.85),
    );
    let blotches = Fbm::new(rng, s, s, 32.0 * u, 3);
    let mut c = Canvas::from_fn(s, s, |x, y| {
        mix(ground, blotch, blotches.at(x as f32, y as f32))
    });
    let hue_shift = rng.sym(20.0);
    for part in &scene.parts {
        let (h, sat, v) = palette::to_hsv(scene.colour(part.role()));
        let col = hsv(h + hue_shift, sat * 0.85, v * 0.95);
        c.paint(&part_mask(part, s), 1.0, col);
    }
    let angle = rng.range(0.0, std::f32::consts::PI);
    for _ in 0..s * s / 16 {
        let (x, y) = (rng.range(0.0, s as f32), rng.range(0.0, s as f32));
        let a = angle + rng.sym(0.4);
        let len = rng.range(1.5, 4.0) * u;
        let (dx, dy) = (a.cos() * len, a.sin() * len);
        let src = c.get((x as usize).min(s - 1), (y as usize).min(s - 1));
        let col = src.map(|v| v + rng.sym(0.07));
        c.dab(
            (x - dx, y - dy),
            (x + dx, y + dy),
            rng.range(1.5, 3.0) * u,
            col,
            0.7,
        );
    }
    c.blur((0.8 * u).round() as usize);
    // The canvas weave and the pigment's colour noise come after the blur, which would erase them.
    let weave = 2.0 * u / std::f32::consts::PI;
    for (i, p) in c.px.iter_mut().enumerate() {
        let (x, y) = ((i % s) as f32, (i / s) as f32);
        let cloth = 1.0 + 0.05 * (x / weave).sin() * (y / weave).sin();
        *p = p.map(|v| v * cloth + rng.sym(0.03));
    }
    c
}

/// A flat icon on a coloured panel beside bar charts and text-like blocks.
fn infograph(scene: &Scene, panel: Frame, rng: &mut Rng, s: usize, u: f32) -> Canvas {
    let page = hsv(
        rng.range(0.0, 360.0),
        rng.range(0.0, 0.08),
        rng.range(0.94, 1.0),
    );
    let tint = hsv(
        rng.range(0.0, 360.0),
        rng.range(0.15, 0.35),
        rng.range(0.85, 1.0),
    );
    let ink = hsv(
        rng.range(200.0, 240.0),
        rng.range(0.1, 0.3),
        rng.range(0.2, 0.35),
    );
    let mut c = Canvas::from_fn(s, s, |_, _| page);
    let rect = |c: &mut Canvas, (x0, y0, x1, y1): Frame, col: Rgb| {
        let mut m = Mask::new(s, s);
        m.fill(&[vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]);
        c.paint(&m, 1.0, col);
    };
    rect(&mut c, panel, tint);
    // The side strip: a title line, text-like rows, then a bar chart.
    let (x0, x1) = if panel.0 < 3.0 * u {
        (panel.2 + 4.0 * u, s as f32 - 3.0 * u)
    } else {
        (3.0 * u, panel.0 - 4.0 * u)
    };
    let mut y = 5.0 * u;
    rect(&mut c, (x0, y, x1, y + 4.0 * u), ink);
    y += 9.0 * u;
    for _ in 0..2 + rng.below(3) {
        let end = x0 + (x1 - x0) * rng.range(0.5, 1.0);
        rect(&mut c, (x0, y, end, y + 2.0 * u), mix(ink, page, 0.45));
        y += 5.0 * u;
    }
    let bars = 3 + rng.below(3);
    let base = s as f32 - 6.0 * u;
    let top = y + 4.0 * u;
    let bw = (x1 - x0) / bars as f32;
    for k in 0..bars {
        let h = (base - top) * rng.range(0.25, 1.0);
        let (_, col) = palette::named(rng);
        let bx = x0 + bw * k as f32;
        rect(
            &mut c,
            (bx + 0.15 * bw, base - h, bx + 0.85 * bw, base),
            vivid(col, 0.6, 0.8),
        );
    }
    rect(&mut c, (x0, base, x1, base + 1.0 * u), ink);
    for part in &scene.parts {
        let col = match part.role() {
            Role::Light => tint,
            Role::Dark => ink,
            role => vivid(scene.colour(role), 0.7, 0.85),
        };
        c.paint(&part_mask(part, s), 1.0, col);
    }
    c
}
